"""Per-token log-probabilities and entropy of response tokens, computed cheaply.

Only the response positions get logits (`logits_to_keep`), and the float32 log-softmax runs in
chunks of rows, so no full (batch x length x vocabulary) float32 tensor is ever formed. Columns
that are padding in every row are cut off first (`RolloutBatch.trimmed`): the outputs keep the
batch's full response width, with zeros there.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nsr_lightning.rollout.batch import RolloutBatch


def response_logprobs(
    model: nn.Module, batch: RolloutBatch, *, chunk_size: int = 64, with_entropy: bool = True
) -> tuple[Tensor, Tensor | None]:
    """log pi(y_t | x, y_<t) and the entropy of pi(. | x, y_<t) at every response position.

    Returns (logprobs (N, R), entropy (N, R) or None), float32, zero where response_mask is 0.
    """
    width = batch.response_ids.shape[1]
    batch = batch.trimmed()
    attn = batch.attention_mask  # (N, P + R)
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    resp_len = batch.response_ids.shape[1]
    out = model(
        input_ids=batch.input_ids,
        attention_mask=attn,
        position_ids=position_ids,
        use_cache=False,
        logits_to_keep=resp_len + 1,
    )
    logits = out.logits[:, :-1]  # (N, R, V): position t predicts response token t
    logps, ents = [], []
    for start in range(0, logits.shape[0], chunk_size):
        lg = logits[start : start + chunk_size].float()  # (c, R, V)
        logp_all = torch.log_softmax(lg, dim=-1)
        targets = batch.response_ids[start : start + chunk_size].unsqueeze(-1)  # (c, R, 1)
        logps.append(logp_all.gather(-1, targets).squeeze(-1))
        if with_entropy:
            ents.append(-(logp_all.exp() * logp_all).sum(-1))
    mask = batch.response_mask.to(torch.float32)
    logprobs = _widen(torch.cat(logps) * mask, width)
    entropy = _widen(torch.cat(ents) * mask, width) if with_entropy else None
    return logprobs, entropy


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
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    prompt_len, resp_len = batch.prompt_ids.shape[1], batch.response_ids.shape[1]
    out = critic(input_ids=batch.input_ids, attention_mask=attn, position_ids=position_ids, use_cache=False)
    values = out.logits[:, prompt_len - 1 : prompt_len - 1 + resp_len, 0].float()  # (N, R)
    return _widen(values * batch.response_mask.to(torch.float32), width)
