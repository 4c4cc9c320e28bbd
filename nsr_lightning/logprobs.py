"""Per-token log-probabilities and entropy of response tokens, computed cheaply.

Only the response positions get logits (`logits_to_keep`), and the log-probabilities and entropy
come from them in one pass that runs its float32 log-softmax in chunks of rows and writes its own
backward (`token_logprobs.py`), so no logits-sized tensor is formed beyond what that needs. With
`share_prompts`, the n responses to one prompt share one forward pass of that prompt. Columns
that are padding in every row are cut off first (`RolloutBatch.trimmed`): the outputs keep the
batch's full response width, with zeros there.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nsr_lightning.rollout.batch import RolloutBatch, position_ids
from nsr_lightning.rollout.decode import keeps_last_logits, require_row_ops
from nsr_lightning.token_logprobs import token_logprobs


def response_logprobs(
    model: nn.Module,
    batch: RolloutBatch,
    *,
    chunk_size: int = 64,
    with_entropy: bool = True,
    share_prompts: bool = False,
    entropy_grad: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """log pi(y_t | x, y_<t) and the entropy of pi(. | x, y_<t) at every response position.

    share_prompts: run each distinct prompt once and let all its responses attend to its KV
    cache (`_shared_prompt_logits`), instead of running the prompt again in every row. The same
    values up to float rounding, with or without gradients; two forward calls instead of one.

    entropy_grad: False computes the entropy without gradients (the update needs them only for
    an entropy bonus); then the autograd graph keeps no (rows x length x vocabulary) tensors for
    it: with a 152k vocabulary they are a large part of a micro-batch's memory.

    Both are those of softmax(logits / T) with T = `batch.logprob_temperature` (the sampling
    temperature; 1 for greedy batches), the distribution the responses were drawn from, as TRL
    and verl compute them. top-k / top-p are not applied: see docs/real-model.md, "Temperature".

    Returns (logprobs (N, R), entropy (N, R) or None), float32, zero where response_mask is 0.
    """
    temperature = batch.logprob_temperature
    width = batch.response_ids.shape[1]
    batch = batch.trimmed()
    targets = batch.response_ids  # (N, R)
    kwargs = {"temperature": temperature, "chunk_size": chunk_size, "with_entropy": with_entropy}
    entropy_grad = entropy_grad and torch.is_grad_enabled()
    # (logits, the response columns they predict): no slice or cat of a logits-sized tensor
    logps, ents = [], []
    if share_prompts:
        first, rest, (repeats, slots, row_of) = _shared_prompt_logits(model, batch)  # (u, 1, V), (N, R, V)
        # response token 0 of every row, scored under its prompt's last position: (u, 1, repeats)
        # targets, so no (N, V) copy of the prompts' logits is formed
        spread = targets.new_zeros(first.shape[0] * repeats)
        spread[slots] = targets[:, 0]
        lp, ent = token_logprobs(first, spread.view(-1, 1, repeats), **kwargs)
        logps.append(lp.reshape(-1)[slots].unsqueeze(-1))  # (N, 1)
        if with_entropy:
            ent = ent.repeat_interleave(repeats, dim=0)[slots]  # (N, 1): each row its prompt's
            ents.append(ent if entropy_grad else ent.detach())
        pieces = [(rest, slice(1, None))]
    else:
        pieces = [(_row_logits(model, batch), slice(0, None))]  # (N, R + 1, V)
    for logits, cols in pieces:
        # position t of `logits` predicts column cols.start + t; the positions past the last
        # column (the final one of each piece) get target 0 and are dropped from the (N, L) outputs
        want = targets[:, cols]
        tgt = torch.nn.functional.pad(want, (0, logits.shape[1] - want.shape[1]))
        lp, ent = token_logprobs(logits, tgt, **kwargs)
        logps.append(lp[:, : want.shape[1]])
        if with_entropy:
            ent = ent[:, : want.shape[1]]
            ents.append(ent if entropy_grad else ent.detach())
    mask = batch.response_mask.to(torch.float32)
    logprobs = _widen(torch.cat(logps, dim=1) * mask, width)
    entropy = _widen(torch.cat(ents, dim=1) * mask, width) if with_entropy else None
    return logprobs, entropy


def _row_logits(model: nn.Module, batch: RolloutBatch) -> Tensor:
    """(N, R + 1, V) logits: position t predicts response token t (the last predicts nothing),
    from one forward over prompt + response rows."""
    attn = batch.attention_mask  # (N, P + R)
    resp_len = batch.response_ids.shape[1]
    out = model(
        input_ids=batch.input_ids,
        attention_mask=attn,
        position_ids=position_ids(attn),
        use_cache=False,
        logits_to_keep=resp_len + 1,
    )
    return out.logits


def _shared_prompt_logits(model: nn.Module, batch: RolloutBatch) -> tuple[Tensor, Tensor, tuple]:
    """Logits predicting each response token, each distinct prompt run once: (u, 1, V) of the u
    distinct prompts' last positions (response token 0), (N, R, V) whose position t predicts token
    t + 1 (the last predicts nothing), and (repeats, slots, row_of) of `_spread`.

    Forward 1: the u distinct (left-padded) prompts, keeping their KV cache and the last
    position's logits. The cache's rows are then gathered to the N rows (an index, so gradients
    flow back into the shared prompt). Forward 2: the responses alone, attending to their
    prompt's cache.
    """
    keys = torch.cat([batch.prompt_ids, batch.prompt_mask], dim=1)  # equal rows: the same prompt
    unique, row_of = torch.unique(keys, dim=0, return_inverse=True)  # (u, 2P), (N,)
    prompt_ids, prompt_mask = unique.split(batch.prompt_ids.shape[1], dim=1)
    prompt_len = prompt_mask.sum(-1)  # (u,)
    first = model(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=position_ids(prompt_mask),
        use_cache=True,
        **keeps_last_logits(model),
    )
    cache = first.past_key_values
    require_row_ops(cache)
    repeats, slots = _spread(row_of, len(unique))
    if repeats > 1 and torch.is_grad_enabled():
        cache.batch_repeat_interleave(repeats)  # (u, ...) -> (u * repeats, ...)
        cache.batch_select_indices(slots)  # -> (N, ...)
    else:  # without gradients the plain index (nothing to add up in a backward)
        cache.batch_select_indices(row_of)  # -> (N, ...)
    resp_len = batch.response_ids.shape[1]
    positions = prompt_len[row_of].unsqueeze(-1) + torch.arange(resp_len, device=prompt_len.device)  # (N, R)
    second = model(
        input_ids=batch.response_ids,
        attention_mask=torch.cat([prompt_mask[row_of], batch.response_mask.to(prompt_mask.dtype)], dim=1),
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
    )
    last = first.logits if first.logits.shape[1] == 1 else first.logits[:, -1:]  # (u, 1, V)
    return last, second.logits, (repeats, slots, row_of)


def _spread(row_of: Tensor, u: int) -> tuple[int, Tensor]:
    """(repeats, slots) with x.repeat_interleave(repeats, 0)[slots] == x[row_of] for any x of u rows,
    every slot used once.

    Why not x[row_of]: its backward adds the gradients of rows that share a prompt with atomic
    adds on CPU (2+ threads), in an order that changes from run to run, so two runs of one seed
    drift apart by ~1e-7 a step. Here the backward is a scatter without collisions plus a sum over
    the repeats in a fixed order: bit for bit reproducible. The layout also gives each prompt's
    responses a place (u, repeats): their first tokens are scored under the prompt's last position
    in one pass (`response_logprobs`).
    """
    counts = torch.bincount(row_of, minlength=u)  # responses per distinct prompt
    repeats = int(counts.max())
    order = torch.argsort(row_of, stable=True)
    first_of = torch.cumsum(counts, 0) - counts  # where each prompt's rows start in `order`
    rank = torch.empty_like(row_of)  # the row's place among its prompt's rows
    rank[order] = torch.arange(len(row_of), device=row_of.device) - first_of[row_of[order]]
    return repeats, row_of * repeats + rank


def _widen(values: Tensor, width: int) -> Tensor:
    """(N, r) -> (N, width): zeros on the right, where trimmed() cut padding columns off."""
    return torch.nn.functional.pad(values, (0, width - values.shape[1]))


def response_values(critic: nn.Module, batch: RolloutBatch) -> Tensor:
    """V(s_t) for every response position t: the value head's output at the token before y_t.

    Returns (N, R) float32, zero where response_mask is 0.
    """
    width = batch.response_ids.shape[1]
    batch = batch.trimmed()
    attn = batch.attention_mask  # (N, P + R)
    prompt_len, resp_len = batch.prompt_ids.shape[1], batch.response_ids.shape[1]
    out = critic(
        input_ids=batch.input_ids, attention_mask=attn, position_ids=position_ids(attn), use_cache=False
    )
    values = out.logits[:, prompt_len - 1 : prompt_len - 1 + resp_len, 0].float()  # (N, R)
    return _widen(values * batch.response_mask.to(torch.float32), width)
