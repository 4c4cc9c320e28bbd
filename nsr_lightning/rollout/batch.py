"""RolloutBatch: what an engine returns, what the objective trains on.

Layout: every row is one sampled response; prompts are left-padded, responses right-padded,
so `cat(prompt_ids, response_ids)` is a contiguous sequence per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor

from nsr_lightning.config_rules import check_group


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions of left-padded rows: 0 at each row's first real token (padding gets 0 too)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings shared by every engine. temperature 0 means greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 80

    def __post_init__(self) -> None:
        check_group("rollout.sampling", {f.name: getattr(self, f.name) for f in fields(self)})


@dataclass
class RolloutBatch:
    prompt_ids: Tensor  # (N, P) left-padded
    prompt_mask: Tensor  # (N, P) 1 on real prompt tokens
    response_ids: Tensor  # (N, R) right-padded
    response_mask: Tensor  # (N, R) 1 on response tokens up to and including EOS
    group_ids: Tensor  # (N,) index of the prompt each response answers
    truncated: Tensor  # (N,) bool: no EOS within max_new_tokens
    texts: list[str] = field(default_factory=list)  # decoded responses, N
    rewards: Tensor | None = None  # (N,)
    sampler_logprobs: Tensor | None = None  # (N, R) the engine's logprobs of the sampled tokens
    # The sampling temperature of the responses: the trainer's log-probabilities, entropy, ratios
    # and KL are those of softmax(logits / T), the distribution sampled (`logprob_temperature`).
    temperature: float = 1.0

    @property
    def logprob_temperature(self) -> float:
        """T of the log-probabilities: the sampling temperature, and 1 for greedy responses
        (T = 0 samples no distribution; its tokens are scored under the model's own, T = 1)."""
        return float(self.temperature) if self.temperature > 0 else 1.0

    def __len__(self) -> int:
        return self.response_ids.shape[0]

    @property
    def input_ids(self) -> Tensor:  # (N, P + R)
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor:  # (N, P + R)
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    @property
    def response_lengths(self) -> Tensor:  # (N,)
        return self.response_mask.sum(-1)

    def select(self, index: Tensor) -> RolloutBatch:
        """Rows `index` (a 1-D long tensor) of every per-sample field."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                out[f.name] = value[index.to(value.device)]
            elif isinstance(value, list):  # texts; an empty list (not needed any more) stays empty
                out[f.name] = [value[i] for i in index.tolist()] if value else []
            else:
                out[f.name] = value
        return replace(self, **out)

    def trimmed(self) -> RolloutBatch:
        """The same rows without the columns that are padding in every row (leading prompt
        columns, trailing response columns): the forward passes then skip them. Nothing
        changes for the tokens kept (positions come from the attention mask)."""
        if len(self) == 0:
            return self
        # prompts are left-padded, responses right-padded: the longest of each sets the width
        # (one host read of two numbers per call: a few per step, never per token)
        width = self.prompt_ids.shape[1]
        longest = torch.stack([self.prompt_mask.sum(1).max(), self.response_mask.sum(1).max()]).tolist()
        start, end = min(width - longest[0], width - 1), max(longest[1], 1)
        out = {"prompt_ids": self.prompt_ids[:, start:], "prompt_mask": self.prompt_mask[:, start:]}
        for name in ("response_ids", "response_mask", "sampler_logprobs"):
            value = getattr(self, name)
            out[name] = None if value is None else value[:, :end]
        return replace(self, **out)

    def to(self, device: torch.device | str) -> RolloutBatch:
        return replace(
            self,
            **{
                f.name: getattr(self, f.name).to(device)
                for f in fields(self)
                if isinstance(getattr(self, f.name), Tensor)
            },
        )


def response_mask_from_ids(response_ids: Tensor, eos_token_id: int | list[int]) -> tuple[Tensor, Tensor]:
    """Mask (N, R) of tokens up to and including the first EOS, and a truncated flag (N,)."""
    eos_ids = torch.as_tensor(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id])
    is_eos = torch.isin(response_ids, eos_ids.to(response_ids.device))  # (N, R)
    seen_before = (is_eos.cumsum(-1) - is_eos.long()) > 0  # an EOS strictly earlier
    mask = (~seen_before).long()
    truncated = ~is_eos.any(-1)
    return mask, truncated


def pad_stack(rows: list[Tensor], pad: int, left: bool) -> Tensor:
    """Stack 1-D or 2-D (rows, L) tensors of different lengths along dim 0, padding the last dim."""
    rows = [r if r.dim() == 2 else r.unsqueeze(0) for r in rows]
    width = max(r.shape[1] for r in rows)
    padded = []
    for r in rows:
        extra = r.new_full((r.shape[0], width - r.shape[1]), pad)
        padded.append(torch.cat([extra, r] if left else [r, extra], dim=1))
    return torch.cat(padded, dim=0)


def build_batch(
    tokenizer,
    prompts: list[list[int]],
    responses: list[Tensor],
    n: int,
    *,
    eos_ids: list[int],
    pad_id: int,
    lengths: list[int] | None = None,
    sampler_logprobs: list[Tensor] | None = None,
    temperature: float = 1.0,
) -> RolloutBatch:
    """The RolloutBatch of an engine's samples: n responses per prompt, in prompt order.

    `responses`: the sampled ids, 1-D rows or 2-D blocks of rows of any width. A response counts
    up to and including its first token in `eos_ids`; with `lengths`, only its first
    `lengths[row]` tokens count at most (for an engine whose rows end where its samples end).
    Every other position holds `pad_id`. `sampler_logprobs`: the engine's logprob of each
    sampled token, rows like `responses`, zeroed outside the mask. Texts: the counted tokens,
    decoded without special tokens. `temperature`: the one the responses were sampled at.
    """
    prompt_rows = [torch.tensor(p, dtype=torch.long) for p in prompts]
    prompt_ids = pad_stack(prompt_rows, pad_id, left=True).repeat_interleave(n, dim=0)  # (N, P)
    prompt_mask = pad_stack([torch.ones_like(p) for p in prompt_rows], 0, left=True).repeat_interleave(
        n, dim=0
    )
    response_ids = pad_stack(responses, pad_id, left=False)  # (N, R)
    if lengths is None:
        response_mask, truncated = response_mask_from_ids(response_ids, list(eos_ids))
    else:  # padding past a row's end is no stop token, even where pad_id is one (SmolLM2: pad = eos)
        within = torch.arange(response_ids.shape[1]) < torch.tensor(lengths).unsqueeze(1)  # (N, R)
        response_mask, truncated = response_mask_from_ids(
            response_ids.masked_fill(~within, -1), list(eos_ids)
        )
        response_mask = response_mask * within.long()
    response_ids = response_ids.masked_fill(response_mask == 0, pad_id)
    if sampler_logprobs is not None:
        sampler_logprobs = pad_stack(sampler_logprobs, 0, left=False).to(torch.float32) * response_mask
    # the mask is a prefix of each row: one read of the ids and of the lengths, no per-row work
    counted = zip(response_ids.tolist(), response_mask.sum(1).tolist(), strict=True)
    texts = tokenizer.batch_decode([row[:length] for row, length in counted], skip_special_tokens=True)
    return RolloutBatch(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=response_ids,
        response_mask=response_mask,
        group_ids=torch.arange(len(prompts)).repeat_interleave(n),
        truncated=truncated,
        texts=texts,
        sampler_logprobs=sampler_logprobs,
        temperature=float(temperature),
    )


def cat_batches(batches: list[RolloutBatch], pad_id: int = 0) -> RolloutBatch:
    """Rows of several batches in one, e.g. rounds of dynamic sampling. Group ids are renumbered so
    groups of different batches stay apart; padded positions get `pad_id` (masked everywhere)."""
    if len(batches) == 1:
        return batches[0]
    temperatures = {b.temperature for b in batches}
    if len(temperatures) != 1:
        raise ValueError(f"cannot join batches sampled at different temperatures: {sorted(temperatures)}")
    offsets, total = [], 0
    for b in batches:
        offsets.append(total)
        total += int(b.group_ids.max()) + 1 if len(b) else 0

    def cat_optional(name: str, pad: float, left: bool) -> Tensor | None:
        values = [getattr(b, name) for b in batches]
        if any(v is None for v in values):
            return None
        return pad_stack(values, pad, left) if values[0].dim() == 2 else torch.cat(values)

    return RolloutBatch(
        prompt_ids=pad_stack([b.prompt_ids for b in batches], pad_id, left=True),
        prompt_mask=pad_stack([b.prompt_mask for b in batches], 0, left=True),
        response_ids=pad_stack([b.response_ids for b in batches], pad_id, left=False),
        response_mask=pad_stack([b.response_mask for b in batches], 0, left=False),
        group_ids=torch.cat([b.group_ids + off for b, off in zip(batches, offsets, strict=True)]),
        truncated=torch.cat([b.truncated for b in batches]),
        texts=[t for b in batches for t in b.texts],
        rewards=cat_optional("rewards", 0.0, left=False),
        sampler_logprobs=cat_optional("sampler_logprobs", 0.0, left=False),
        temperature=temperatures.pop(),
    )
