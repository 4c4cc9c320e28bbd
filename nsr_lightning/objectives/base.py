"""The objective interface shared by every RLVR objective.

An objective decides which samples it learns from (`keep`), what each sample's advantage is
(`advantages`), and turns per-token log-probabilities into a loss (`loss`). The loss is the PPO
clipped surrogate (Schulman et al., 2017, eq. 7) on the ratio pi_theta / pi_old, with the
clipping range, entropy bonus and loss aggregation mode as options shared by all objectives.
Pure tensor code: no Lightning, no engine.
"""

from __future__ import annotations

import torch
from torch import Tensor

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def aggregate(values: Tensor, mask: Tensor, mode: str, norm_length: int | None = None) -> Tensor:
    """Reduce per-token values (B, T) over the tokens where mask is 1.

    token-mean: every token of the mini-batch weighs the same (DAPO, the paper's setting).
    seq-mean-token-mean: mean over tokens within a sequence, then over sequences (GRPO paper).
    seq-mean-token-sum-norm: token sum per sequence divided by a constant length (Dr.GRPO).
    """
    mask = mask.to(values.dtype)
    if mode == "token-mean":
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    if mode == "seq-mean-token-mean":
        per_seq = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # (B,)
        return per_seq.mean()
    if mode == "seq-mean-token-sum-norm":
        length = float(norm_length or values.shape[-1])
        return ((values * mask).sum(-1) / length).mean()
    raise ValueError(f"loss_agg_mode must be one of {', '.join(LOSS_AGG_MODES)}; got {mode!r}")


def is_correct(rewards: Tensor) -> Tensor:
    """A verifiable reward is correct when it is positive (rewards are 1 / 0 or 1 / -1)."""
    return rewards > 0


class Objective:
    """Base class: clipped surrogate with all samples kept and a zero advantage.

    Subclasses override `keep` and `advantages`; `loss` is shared.
    """

    name = "base"

    def __init__(
        self,
        *,
        name: str | None = None,
        clip_ratio_low: float = 0.2,
        clip_ratio_high: float = 0.2,
        entropy_coef: float = 0.0,
        loss_agg_mode: str = "token-mean",
        norm_length: int | None = None,
    ) -> None:
        if not 0.0 <= clip_ratio_low < 1.0:
            raise ValueError(f"objective.clip_ratio_low must be in [0, 1); got {clip_ratio_low}")
        if clip_ratio_high < 0.0:
            raise ValueError(f"objective.clip_ratio_high must be >= 0; got {clip_ratio_high}")
        if entropy_coef < 0.0:
            raise ValueError(f"objective.entropy_coef must be >= 0; got {entropy_coef}")
        if loss_agg_mode not in LOSS_AGG_MODES:
            raise ValueError(
                f"objective.loss_agg_mode must be one of {', '.join(LOSS_AGG_MODES)}; got {loss_agg_mode!r}"
            )
        if name:
            self.name = str(name)
        self.clip_ratio_low = float(clip_ratio_low)
        self.clip_ratio_high = float(clip_ratio_high)
        self.entropy_coef = float(entropy_coef)
        self.loss_agg_mode = loss_agg_mode
        self.norm_length = norm_length

    def keep(self, rewards: Tensor, group_ids: Tensor) -> Tensor:
        """Boolean mask (N,) of the samples this objective trains on."""
        return torch.ones_like(rewards, dtype=torch.bool)

    def advantages(self, rewards: Tensor, group_ids: Tensor) -> Tensor:
        """Per-sequence advantage (N,)."""
        return torch.zeros_like(rewards, dtype=torch.float32)

    def config(self) -> dict:
        """The knobs of this objective, for logs (so a chosen lambda is always visible)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def loss(
        self,
        logprobs: Tensor,
        old_logprobs: Tensor,
        advantages: Tensor,
        mask: Tensor,
        entropy: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Clipped surrogate loss.

        logprobs, old_logprobs, mask: (B, T); advantages: (B,) per sequence or (B, T) per token;
        entropy: (B, T) token entropy of pi_theta (needed only with an entropy bonus).
        Returns the scalar loss and detached per-mini-batch statistics.
        """
        adv = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages  # (B, 1|T)
        adv = adv.to(logprobs.dtype)
        log_ratio = logprobs - old_logprobs  # (B, T)
        ratio = torch.exp(log_ratio)
        lo, hi = 1.0 - self.clip_ratio_low, 1.0 + self.clip_ratio_high
        surr = -adv * ratio
        surr_clipped = -adv * ratio.clamp(lo, hi)
        pg_tokens = torch.maximum(surr, surr_clipped)  # (B, T)
        pg_loss = aggregate(pg_tokens, mask, self.loss_agg_mode, self.norm_length)
        loss = pg_loss
        stats: dict[str, Tensor] = {"pg_loss": pg_loss.detach()}
        if self.entropy_coef > 0.0:
            if entropy is None:
                raise ValueError("entropy_coef > 0 needs the token entropy")
            ent = aggregate(entropy, mask, self.loss_agg_mode, self.norm_length)
            loss = loss - self.entropy_coef * ent
            stats["entropy_bonus"] = ent.detach()
        with torch.no_grad():
            m = mask.to(logprobs.dtype)
            clipped = (surr_clipped > surr).to(logprobs.dtype) * m
            low = clipped * (ratio < lo).to(m.dtype)
            stats["clipped_tokens"] = clipped.sum()
            stats["clipped_low_tokens"] = low.sum()
            stats["clipped_high_tokens"] = clipped.sum() - low.sum()
            stats["tokens"] = m.sum()
            # k3 estimator of KL(pi_old || pi_theta), Schulman's "approximating KL divergence"
            k3 = torch.exp(-log_ratio) - 1.0 + log_ratio
            stats["approx_kl_sum"] = (k3 * m).sum()
        return loss, stats
