"""Rollout correction: importance weights for samples drawn by an engine that is not the trainer.

vLLM samples with its own kernels (and in bf16), so its pi_sampler differs from the trainer's
pi_old; training as if the samples came from pi_old biases the gradient. The correction weights
each token's policy-gradient term by

    w_t = min(pi_old(y_t) / pi_sampler(y_t), token_cap)          (truncated importance sampling)

detached (a weight, not a path for gradients), and optionally masks whole sequences whose
geometric-mean ratio exp(mean_t log(pi_old / pi_sampler)) lies outside [1 / sequence_cap,
sequence_cap] (weight 0: sequences sampled far off the trainer's policy). pi_old is the trainer
before this step's updates (the old log-probs, or the first forward's detached log-probs when
there is one on-policy update). As TRL's `vllm_importance_sampling_correction` (token_truncate)
and verl's rollout correction (truncated IS weights on the policy loss, sequence rejection);
Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL training".

Masked tokens keep their place in the loss's normaliser (the weight is 0, the mask unchanged), so
the aggregation and micro-batch shares are those of the uncorrected loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from nsr_lightning.config_rules import check_group

MAX_LOG_RATIO = 20.0  # exp() stays finite; any weight this large is truncated anyway


@dataclass(frozen=True)
class RolloutCorrection:
    """The knobs (config: `rollout.correction.*`, configs/rollout/shared/correction.yaml)."""

    enabled: bool = False
    token_cap: float = 2.0  # C: the largest token weight
    sequence_cap: float | None = None  # mask a sequence whose geometric-mean ratio is outside [1/C, C]

    def __post_init__(self) -> None:
        check_group("rollout.correction", vars(self))


@torch.no_grad()
def importance_weights(
    old_logprobs: Tensor, sampler_logprobs: Tensor, mask: Tensor, correction: RolloutCorrection
) -> tuple[Tensor, dict[str, Tensor]]:
    """(B, T) detached weights (0 outside `mask`) and their statistics, sums over this micro-batch:
    tokens, sequences, weight_sum, weight_sq_sum, truncated (tokens at the cap), masked
    (sequences), weight_min, weight_max (over response tokens)."""
    m = mask.to(torch.float32)
    log_ratio = (old_logprobs.float() - sampler_logprobs.to(old_logprobs.device).float()) * m
    ratio = torch.exp(log_ratio.clamp(max=MAX_LOG_RATIO))
    weights = ratio.clamp(max=correction.token_cap) * m
    truncated = (ratio > correction.token_cap) & mask.bool()
    masked = torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device)
    if correction.sequence_cap is not None:
        geo = log_ratio.sum(-1) / m.sum(-1).clamp(min=1)  # log of the geometric-mean ratio
        bound = math.log(correction.sequence_cap)
        masked = ((geo > bound) | (geo < -bound)) & (m.sum(-1) > 0)
        weights = weights * (~masked).unsqueeze(-1).to(weights.dtype)
    on = mask.bool()
    picked = weights[on]
    empty = picked.numel() == 0
    stats = {
        "tokens": m.sum(),
        "sequences": (m.sum(-1) > 0).sum().to(torch.float32),
        "weight_sum": weights.sum(),
        "weight_sq_sum": (weights * weights).sum(),
        "truncated": truncated.sum().to(torch.float32),
        "masked": masked.sum().to(torch.float32),
        "weight_min": weights.new_ones(()) if empty else picked.min(),
        "weight_max": weights.new_ones(()) if empty else picked.max(),
    }
    return weights, stats
