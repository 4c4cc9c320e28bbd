"""Log-probabilities of given tokens and the entropy of each position's distribution, from logits,
in one pass that forms as few vocabulary-sized float32 tensors as the arithmetic allows.

For logits z (rows, L, V), temperature T, s = z / T and target ids y:

    logprob_t = log_softmax(s_t)[y_t]
    entropy_t = -sum_v p_v log p_v = lse(s_t) - sum_v p_v s_v,   p = softmax(s_t), lse(s_t) = s_y - logprob_t

The backward is written out instead of recorded by autograd (d logprob_t / d s_t = onehot(y_t) - p;
d entropy_t / d s_t = -p (log p + entropy_t); both divided by T for z):

- forward: per chunk of rows, one float32 log-softmax (upcasting bf16 / fp16 logits inside the
  kernel; a float32 copy only for z / T or the entropy); `p = exp(log p)` is taken in place and
  `sum_v p_v s_v` is a batched matrix product, so the entropy forms no tensor of its own. Only the
  logits are kept for the backward.
- backward: per chunk, one float32 softmax that becomes the gradient in place.

Recorded by autograd, `log_softmax -> gather -> exp * log p -> sum` keeps the log-softmax for
its backward, forms exp(log p) and the product for the entropy, and the backward forms the
gather's zero-filled gradient, its scatter and the log-softmax's gradient: up to 8 such tensors
per chunk where this forms 2 to 4 (tests/test_budgets.py counts them). The forward's
log-probabilities are bit for bit those of the recorded version; the entropy and the gradients
equal it to float rounding (tests/test_token_logprobs.py).
"""

from __future__ import annotations

import torch
from torch import Tensor


def token_logprobs(
    logits: Tensor,
    targets: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 64,
    with_entropy: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """(logprobs (rows, L), entropy (rows, L) or None), float32, for logits (rows, L, V) and
    targets (rows, L). Targets (rows, L, K): K tokens scored under each position's distribution
    (responses that share a prompt share its last position), logprobs (rows, L, K).
    Differentiable in `logits` through both outputs."""
    several = targets.dim() == 3
    targets = targets if several else targets.unsqueeze(-1)
    logprobs, entropy = _TokenLogProbs.apply(
        logits, targets, float(temperature), int(chunk_size), with_entropy
    )
    return (logprobs if several else logprobs.squeeze(-1)), (entropy if with_entropy else None)


def _scaled(z: Tensor, temperature: float) -> Tensor:
    """z / T in float32, as a new tensor only where one is needed."""
    s = z.float()
    if temperature == 1.0:
        return s
    return s.div_(temperature) if s.data_ptr() != z.data_ptr() else s / temperature


class _TokenLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, logits: Tensor, targets: Tensor, temperature: float, chunk_size: int, with_entropy: bool
    ):
        rows, length, _ = targets.shape  # (rows, L, K)
        logprobs = torch.empty(targets.shape, dtype=torch.float32, device=logits.device)
        entropy = logprobs.new_empty((rows, length)) if with_entropy else logprobs.new_empty(0)
        for start in range(0, rows, chunk_size):
            z = logits[start : start + chunk_size]  # (c, L, V)
            y = targets[start : start + chunk_size]  # (c, L, K)
            # a float32 copy of bf16 logits only where z / T or the entropy's product needs it
            s = _scaled(z, temperature) if with_entropy or temperature != 1.0 else z
            logp = torch.log_softmax(s, dim=-1, dtype=torch.float32)  # (c, L, V)
            lp = logp.gather(-1, y)  # (c, L, K)
            logprobs[start : start + chunk_size] = lp
            if with_entropy:
                lse = s.gather(-1, y[..., :1]).squeeze(-1) - lp[..., 0]  # (c, L)
                p = logp.exp_()  # in place: log p is no longer needed
                dot = torch.matmul(p.unsqueeze(-2), s.unsqueeze(-1)).reshape(lse.shape)  # sum_v p_v s_v
                entropy[start : start + chunk_size] = lse - dot
        ctx.save_for_backward(logits, targets, entropy if with_entropy else None)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        ctx.set_materialize_grads(False)
        if not with_entropy:
            ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs: Tensor | None, grad_entropy: Tensor | None):
        logits, targets, entropy = ctx.saved_tensors
        if grad_logprobs is None and grad_entropy is None:
            return None, None, None, None, None
        temperature, chunk = ctx.temperature, ctx.chunk_size
        rows = targets.shape[0]
        whole = rows <= chunk
        grad = None if whole else torch.empty_like(logits)
        for start in range(0, rows, chunk):
            part = slice(start, start + chunk)
            plain = grad_entropy is None and temperature == 1.0  # then no float32 copy of the logits
            s = logits[part] if plain else _scaled(logits[part], temperature)
            p = torch.softmax(s, dim=-1, dtype=torch.float32)  # (c, L, V): becomes the gradient, in place
            y = targets[part]  # (c, L, K)
            g = p.new_zeros(y.shape) if grad_logprobs is None else grad_logprobs[part].float()  # (c, L, K)
            if grad_entropy is not None:  # -p (log p + H) g_H, with log p = s - lse
                lse = torch.logsumexp(s, dim=-1)  # (c, L)
                term = (s - lse.unsqueeze(-1)).add_(entropy[part].unsqueeze(-1)).mul_(p)  # p (log p + H)
                term.mul_(grad_entropy[part].float().unsqueeze(-1))
            p.mul_(-g.sum(-1, keepdim=True))  # -p sum_k g_k
            p.scatter_add_(-1, y, g)  # + sum_k onehot(y_k) g_k
            if grad_entropy is not None:
                p.sub_(term)
            if temperature != 1.0:
                p.div_(temperature)
            if whole:
                grad = p.to(logits.dtype)
            else:
                grad[part] = p
        return grad, None, None, None, None
