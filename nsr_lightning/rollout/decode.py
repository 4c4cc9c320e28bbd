"""A lean sampling loop for the HF engine: the work `generate` must do, and no more.

Three savings over `transformers.generate(num_return_sequences=n)` for RL rollouts:
- the prompt is prefilled once per prompt, not once per sample: its KV cache is copied n times;
- rows that have emitted EOS leave the batch (their cache rows are dropped once they are at
  least `COMPACT_SHARE` of it), so the decode work follows the tokens actually sampled rather
  than (rows x the longest response);
- no logits processors, stopping criteria or generation-config machinery per token.

Sampling matches `generate`: logits / temperature, then top-k, then top-p (nucleus, at least one
token kept), then one multinomial draw from the global torch generator; temperature 0 is greedy.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import Tensor, nn

from nsr_lightning.rollout.batch import SamplingConfig, position_ids

try:
    from transformers import __version__ as _transformers_version

    _TRANSFORMERS_MAJOR = int(_transformers_version.split(".")[0])
except (ImportError, ValueError):  # pragma: no cover
    _TRANSFORMERS_MAJOR = 0

COMPACT_SHARE = 0.125  # drop finished rows once they are this share of the rows still decoded


class UnsupportedCache(NotImplementedError):
    """The model's KV cache cannot repeat or drop batch rows: sample with `generate` instead."""


def require_row_ops(cache) -> None:
    """UnsupportedCache unless `cache` can repeat and select batch rows (what the lean loop and
    the prompt-shared forward do with it)."""
    if not all(hasattr(cache, name) for name in ("batch_repeat_interleave", "batch_select_indices")):
        raise UnsupportedCache(f"{type(cache).__name__} cannot repeat or select batch rows")


def filter_logits(logits: Tensor, sampling: SamplingConfig) -> Tensor:
    """(b, V) float logits -> the logits `generate` samples from: temperature, top-k, top-p."""
    logits = logits / sampling.temperature
    if 0 < sampling.top_k < logits.shape[-1]:
        kth = torch.topk(logits, sampling.top_k, dim=-1).values[:, -1:]  # (b, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1)  # ascending
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cum <= 1 - sampling.top_p
        drop_sorted[:, -1] = False  # always keep the most likely token
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_tokens(logits: Tensor, sampling: SamplingConfig) -> Tensor:
    """(b, V) -> (b,) sampled token ids (greedy when temperature is 0)."""
    logits = logits.float()
    if sampling.temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits, sampling).softmax(-1)
    return torch.multinomial(probs, 1).squeeze(-1)


def keeps_last_logits(model: nn.Module) -> dict:
    """`logits_to_keep=1` where the model accepts it: the prefill's logits for the last position only."""
    return {"logits_to_keep": 1} if _accepts_logits_to_keep(type(model)) else {}


@functools.cache
def _accepts_logits_to_keep(cls: type) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):
        return False


def _step_mask(model: nn.Module):
    """attn (b, kv) -> the attention mask of one decode step (a query of one token).

    transformers builds the 4-D mask of a 2-D one itself, and for one query it first asks whether
    any position is padding (`padding_mask.all()`): a host read per decoded token, on top of the
    loop's own. Given the 4-D mask it would build, (b, 1, 1, kv) (bool for SDPA, additive float for
    eager attention), it uses it as it is (transformers >= 5; older versions and other attention
    kernels get the 2-D mask)."""
    config = getattr(model, "config", None)
    kind = getattr(config, "_attn_implementation", None)
    if _TRANSFORMERS_MAJOR < 5 or kind not in ("sdpa", "eager"):
        return lambda attn: attn
    if kind == "sdpa":
        return lambda attn: attn.bool()[:, None, None, :]
    dtype = next(model.parameters()).dtype

    def additive(attn: Tensor) -> Tensor:
        return (1.0 - attn[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    return additive


@torch.no_grad()
def sample_responses(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    n: int,
    sampling: SamplingConfig,
    stop_ids: list[int],
    pad_id: int,
) -> Tensor:
    """n sampled responses for each left-padded prompt row.

    input_ids, attention_mask: (B, P) on the model's device. Returns (B * n, R) response ids,
    rows in prompt order (row i * n + j is prompt i's sample j), each ending at its first stop token
    (any of `stop_ids`: `stops.stop_token_ids`) and
    right-padded with `pad_id`; R <= max_new_tokens is the longest response. Raises
    UnsupportedCache (before drawing any random number) for a cache without batch reordering.
    """
    extra = keeps_last_logits(model)
    step_mask = _step_mask(model)
    stops = torch.as_tensor(list(stop_ids), dtype=torch.long, device=input_ids.device)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids(attention_mask),
        use_cache=True,
        **extra,
    )
    cache = out.past_key_values
    require_row_ops(cache)
    logits = out.logits[:, -1].repeat_interleave(n, dim=0)  # (B * n, V)
    if n > 1:
        cache.batch_repeat_interleave(n)
    attn = attention_mask.repeat_interleave(n, dim=0)  # (b, P + t) for the rows still decoded
    next_pos = attn.sum(-1)  # (b,) position of the token fed next
    rows = torch.arange(len(attn), device=attn.device)  # each decoded row's index in the output
    alive = torch.ones(len(attn), dtype=torch.bool, device=attn.device)
    result = torch.full((len(attn), sampling.max_new_tokens), pad_id, dtype=torch.long, device=attn.device)
    width = 0
    for t in range(sampling.max_new_tokens):
        tok = next_tokens(logits, sampling)  # (b,)
        result[rows, t] = torch.where(alive, tok, pad_id)  # finished rows still held: padding
        width = t + 1
        alive = alive & ~torch.isin(tok, stops)
        n_alive = int(alive.sum())  # the loop's one host sync a token (generate makes it too)
        if n_alive == 0 or t + 1 == sampling.max_new_tokens:
            break
        if len(alive) - n_alive >= max(1, COMPACT_SHARE * len(alive)):  # drop finished rows
            keep = torch.argsort((~alive).to(torch.uint8), stable=True)[
                :n_alive
            ]  # no host read: n_alive is known
            cache.batch_select_indices(keep)
            rows, tok, attn, next_pos = rows[keep], tok[keep], attn[keep], next_pos[keep]
            alive = alive[keep]
        attn = torch.cat([attn, attn.new_ones(len(attn), 1)], dim=-1)
        out = model(
            input_ids=tok.unsqueeze(-1),
            attention_mask=step_mask(attn),
            position_ids=next_pos.unsqueeze(-1),
            past_key_values=cache,
            use_cache=True,
        )
        cache = out.past_key_values
        logits = out.logits[:, -1]
        next_pos = next_pos + 1
    return result[:, :width]
