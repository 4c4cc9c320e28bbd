"""The objective interface shared by every RLVR objective.

An objective decides which samples it learns from (`keep`), what each sample's advantage is
(`advantages`), and turns per-token log-probabilities into a loss (`loss`). The loss is the PPO
clipped surrogate (Schulman et al., 2017, eq. 7) on the ratio pi_theta / pi_old, plus an optional
KL penalty to a frozen reference policy (GRPO, Shao et al. 2024, eq. 3) and an entropy bonus.
Shared by every objective and set from its config:

- the paper's decomposition (Zhu et al. 2025, eq. 5): the final advantage of a correct sample is
  multiplied by `lambda_pos`, of an incorrect one by `lambda_neg`, and a weight of 0 drops those
  samples, so PSR (lambda_neg = 0), NSR (lambda_pos = 0) and W-REINFORCE combine with any
  advantage estimator;
- group filters (drop prompts whose responses are all correct or all wrong: NGRPO, DAPO) and
  DAPO's dynamic sampling (the rollout callback samples more prompts until the batch is full);
- clip range (symmetric or asymmetric), entropy bonus, KL coefficient and estimator, and the
  loss aggregation mode.

The defaults in the signatures here are the only ones: configs/objective/*.yaml take them from
these signatures (nsr_lightning/configs/__init__.py); nsr_lightning/config_rules.py checks them.

Pure tensor code: no Lightning, no engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from nsr_lightning.config_rules import check_group
from nsr_lightning.objectives.functional import aggregate, group_stats, kl_estimate


def is_correct(rewards: Tensor) -> Tensor:
    """A verifiable reward is correct when it is positive (rewards are 1 / 0 or 1 / -1)."""
    return rewards > 0


@dataclass(frozen=True)
class TrainedModel:
    """A model an objective trains beside the policy, with its own AdamW (PPO: the critic).

    kind "value": the policy's architecture with a scalar head per token (`response_values`).
    path None: start from the policy's weights.
    """

    lr: float
    path: str | None = None
    kind: str = "value"


@dataclass
class Prepared:
    """What the update measured on the kept samples before the policy changes (no gradients).

    rewards (K,), mask (K, T); old_logprobs / ref_logprobs (K, T) or None when not needed;
    outputs: each extra model's per-token outputs (K, T) by name (`Objective.extra_models`);
    K may be 0 on a rank while other ranks have samples.
    """

    rewards: Tensor
    mask: Tensor
    old_logprobs: Tensor | None = None
    ref_logprobs: Tensor | None = None
    outputs: dict[str, Tensor] = field(default_factory=dict)
    # sums a tensor over the data-parallel ranks (their kept samples make the batch); one process: itself
    all_sum: Callable[[Tensor], Tensor] = field(default=lambda t: t)


class Objective:
    """Base class: clipped surrogate with all samples kept and a zero advantage.

    Subclasses override `raw_advantages` (and PPO `token_advantages`); the rest is shared.
    """

    name = "base"
    ratio_metrics: tuple[str, ...] = ()  # step ratios of its own (StepStats), beyond the shared ones

    def __init_subclass__(cls, **kwargs) -> None:
        """Refuse a subclass that overrides `advantages`: it would silently skip the lambda_pos /
        lambda_neg weights (and the sample dropping of PSR / NSR built on them)."""
        super().__init_subclass__(**kwargs)
        if "advantages" in cls.__dict__:
            raise TypeError(
                f"{cls.__module__}.{cls.__qualname__} overrides advantages; override raw_advantages "
                "instead (advantages multiplies it by the lambda_pos / lambda_neg weights)"
            )

    def __init__(
        self,
        *,
        name: str | None = None,  # for logs (None: the class's name)
        lambda_pos: float = 1.0,  # weight of correct samples' advantages (0 drops them: NSR)
        lambda_neg: float = 1.0,  # weight of incorrect samples' advantages (0 drops them: PSR)
        clip_ratio_low: float = 0.2,  # PPO clip: ratio >= 1 - clip_ratio_low
        clip_ratio_high: float = 0.2,  # PPO clip: ratio <= 1 + clip_ratio_high (above low: clip-higher)
        entropy_coef: float = 0.0,  # entropy bonus (paper: 1e-4; reference code: 1e-3)
        kl_coef: float = 0.0,  # KL(pi || pi_ref) loss term; a reference model exists only when > 0
        kl_estimator: str = "k3",  # k1 | k2 | k3 (k3 = "low_var_kl", unbiased and >= 0)
        loss_agg_mode: str = "token-mean",  # token-mean | seq-mean-token-mean | seq-mean-token-sum-norm
        norm_length: int | None = None,  # seq-mean-token-sum-norm's constant length (None: padded length)
        drop_all_correct_groups: bool = False,  # drop prompts whose responses are all correct
        drop_all_wrong_groups: bool = False,  # drop prompts whose responses are all wrong
        dynamic_sampling: bool = False,  # sample more prompts until the batch holds enough kept groups
        max_sampling_rounds: int = 1,  # generation rounds per step at most, with dynamic sampling
    ) -> None:
        check_group("objective", locals())  # every knob, by the rule table
        if name:
            self.name = str(name)
        self.lambda_pos = float(lambda_pos)
        self.lambda_neg = float(lambda_neg)
        self.clip_ratio_low = float(clip_ratio_low)
        self.clip_ratio_high = float(clip_ratio_high)
        self.entropy_coef = float(entropy_coef)
        self.kl_coef = float(kl_coef)
        self.kl_estimator = kl_estimator
        self.loss_agg_mode = loss_agg_mode
        self.norm_length = norm_length
        self.drop_all_correct_groups = bool(drop_all_correct_groups)
        self.drop_all_wrong_groups = bool(drop_all_wrong_groups)
        self.dynamic_sampling = bool(dynamic_sampling)
        self.max_sampling_rounds = int(max_sampling_rounds)

    # ---- which samples, with what advantage ---------------------------------------------------
    @property
    def needs_old_logprobs(self) -> bool:
        """Whether advantages need pi_old's logprobs even for a single on-policy update."""
        return False

    @property
    def needs_reference(self) -> bool:
        """A frozen reference policy exists only when some KL coefficient is above 0."""
        return self.kl_coef > 0

    def group_filter(self, rewards: Tensor, group_ids: Tensor) -> Tensor:
        """Boolean (N,): True for samples whose group passes the group filters. A group of one
        response (`rollout.n=1`) always passes, as in verl's DAPO recipe (std > 0 or size 1)."""
        _, _, n_correct, size = group_stats(rewards, group_ids)
        ok = torch.ones_like(rewards, dtype=torch.bool)
        if self.drop_all_correct_groups:
            ok &= n_correct < size
        if self.drop_all_wrong_groups:
            ok &= n_correct > 0
        return ok | (size == 1)

    def sign_weights(self, rewards: Tensor) -> Tensor:
        """(N,) lambda_pos for correct samples, lambda_neg for incorrect ones."""
        pos = torch.full(rewards.shape, self.lambda_pos, dtype=torch.float32, device=rewards.device)
        return torch.where(is_correct(rewards), pos, self.lambda_neg)

    def keep(self, rewards: Tensor, group_ids: Tensor) -> Tensor:
        """Boolean mask (N,) of the samples this objective trains on."""
        return (self.sign_weights(rewards) > 0) & self.group_filter(rewards, group_ids)

    def raw_advantages(self, rewards: Tensor, group_ids: Tensor) -> Tensor:
        """Per-sequence advantage (N,) before the lambda weights."""
        return torch.zeros_like(rewards, dtype=torch.float32)

    def advantages(self, rewards: Tensor, group_ids: Tensor) -> Tensor:
        """Per-sequence advantage (N,), computed on the whole batch (groups intact)."""
        return self.raw_advantages(rewards, group_ids).float() * self.sign_weights(rewards)

    def extra_models(self) -> dict[str, TrainedModel]:
        """Models this objective trains beside the policy, by name; none by default."""
        return {}

    def step_advantages(
        self, rewards: Tensor, group_ids: Tensor, kept: Tensor, prep: Prepared
    ) -> tuple[Tensor, dict[str, Tensor], dict]:
        """The update's entry point: advantages of the kept samples `kept` (K,) of a batch with
        `rewards` and `group_ids` (N,), after the no-grad pass `prep` over those samples.

        Returns (advantages (K,) or (K, T), per-sample tensors the extra loss needs, statistics:
        name -> value, or name -> (numerator, denominator) for a ratio). By default the
        per-sequence `advantages`, computed on whole groups, then the kept rows."""
        return self.advantages(rewards, group_ids)[kept.to(rewards.device)], {}, {}

    def extra_loss(
        self, outputs: dict[str, Tensor], rows: dict[str, Tensor], mask: Tensor
    ) -> tuple[Tensor | None, dict]:
        """The loss of the extra models on one micro-batch: `outputs` are their per-token outputs
        with gradients, `rows` the micro-batch's rows of what `step_advantages` returned and of
        the extra models' old outputs (`old_<name>`). None: no extra model."""
        return None, {}

    def config(self) -> dict:
        """The knobs of this objective, for logs (so a chosen lambda is always visible)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def loss_units(self, mask: Tensor) -> Tensor:
        """What the aggregation mode averages over, counted in `mask` (b, T): response tokens
        (token-mean) or sequences (the seq-mean modes), a 0-dim tensor on the mask's device (no
        host read). The update weighs each micro-batch's loss by its units over the units of the
        global mini-batch (all ranks, all micro-batches), so the summed gradient is the whole
        mini-batch's on any number of ranks."""
        if self.loss_agg_mode == "token-mean":
            return mask.sum()
        return torch.tensor(mask.shape[0], device=mask.device)

    # ---- the loss -----------------------------------------------------------------------------
    def loss(
        self,
        logprobs: Tensor,
        old_logprobs: Tensor,
        advantages: Tensor,
        mask: Tensor,
        entropy: Tensor | None = None,
        ref_logprobs: Tensor | None = None,
        is_weights: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Clipped surrogate loss, minus the entropy bonus, plus the KL penalty.

        logprobs, old_logprobs, mask: (B, T); advantages: (B,) per sequence or (B, T) per token;
        entropy: (B, T) token entropy of pi_theta (needed only with an entropy bonus);
        ref_logprobs: (B, T) of the reference policy (needed only with kl_coef > 0);
        is_weights: (B, T) detached importance weights of the policy-gradient term per token (rollout
        correction, nsr_lightning/correction.py), None = 1; the KL and entropy terms are not weighted.
        Returns the scalar loss and detached per-mini-batch statistics (sums over tokens).
        """
        adv = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages  # (B, 1|T)
        adv = adv.to(logprobs.dtype)
        log_ratio = logprobs - old_logprobs  # (B, T)
        ratio = torch.exp(log_ratio)
        lo, hi = 1.0 - self.clip_ratio_low, 1.0 + self.clip_ratio_high
        surr = -adv * ratio
        surr_clipped = -adv * ratio.clamp(lo, hi)
        pg_tokens = torch.maximum(surr, surr_clipped)  # (B, T)
        if is_weights is not None:
            pg_tokens = pg_tokens * is_weights.detach().to(pg_tokens.dtype)
        pg_loss = aggregate(pg_tokens, mask, self.loss_agg_mode, self.norm_length)
        loss = pg_loss
        stats: dict[str, Tensor] = {"pg_loss": pg_loss.detach()}
        m = mask.to(logprobs.dtype)
        if self.entropy_coef > 0.0:
            if entropy is None:
                raise ValueError("entropy_coef > 0 needs the token entropy")
            ent = aggregate(entropy, mask, self.loss_agg_mode, self.norm_length)
            loss = loss - self.entropy_coef * ent
            stats["entropy_bonus"] = ent.detach()
        if self.kl_coef > 0.0:
            if ref_logprobs is None:
                raise ValueError("kl_coef > 0 needs the reference policy's logprobs")
            kl = kl_estimate(logprobs, ref_logprobs, self.kl_estimator)  # (B, T)
            kl_loss = aggregate(kl, mask, self.loss_agg_mode, self.norm_length)
            loss = loss + self.kl_coef * kl_loss
            stats["kl_loss"] = kl_loss.detach()
            stats["kl_ref_sum"] = (kl.detach() * m).sum()
        with torch.no_grad():
            clipped = (surr_clipped > surr).to(logprobs.dtype) * m
            low = clipped * (ratio < lo).to(m.dtype)
            stats["clipped_tokens"] = clipped.sum()
            stats["clipped_low_tokens"] = low.sum()
            stats["clipped_high_tokens"] = clipped.sum() - low.sum()
            stats["tokens"] = m.sum()
            # k3 estimate of KL(pi_old || pi_theta): the drift from the sampling policy
            stats["approx_kl_sum"] = (kl_estimate(old_logprobs, logprobs.detach(), "k3") * m).sum()
        return loss, stats
