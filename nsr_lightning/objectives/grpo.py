"""GRPO: group-relative advantages and a KL penalty to a frozen reference policy.

Shao et al. 2024 (DeepSeekMath), eq. 3: each response's advantage is its reward standardised
within its group (the n responses to one prompt): A_i = (r_i - mean(r)) / (std(r) + eps), with
the unbiased std; every token of the response gets A_i. The loss adds beta * KL(pi_theta ||
pi_ref), estimated per token (k3, "low_var_kl", by default; beta 1e-3 as in the paper's setup).

A group of one response (`rollout.n=1`) has no group to compare with: verl treats it as mean 0,
std 1, so A = r (r / (1 + eps) with std_normalize); subclasses may choose otherwise
(`lone_advantage`).
"""

from __future__ import annotations

from torch import Tensor

from nsr_lightning.config_rules import check_group
from nsr_lightning.objectives.base import Objective
from nsr_lightning.objectives.functional import group_stats


class GRPO(Objective):
    name = "grpo"
    lone_advantage = "reward"  # a group of one: "reward" (A = r, verl's mean 0 / std 1) or "zero"

    def __init__(
        self,
        *,
        std_normalize: bool = True,  # divide by the group's reward std (False: Dr.GRPO's advantage)
        adv_eps: float = 1e-6,  # (r - mean) / (std + adv_eps)
        kl_coef: float = 1e-3,  # the paper's setup
        loss_agg_mode: str = "token-mean",
        **shared,
    ) -> None:
        super().__init__(kl_coef=kl_coef, loss_agg_mode=loss_agg_mode, **shared)
        check_group("objective", {"std_normalize": std_normalize, "adv_eps": adv_eps})
        self.std_normalize = bool(std_normalize)
        self.adv_eps = float(adv_eps)

    def _standardise(
        self, rewards: Tensor, group_ids: Tensor, extra_value: float, extra_count: int
    ) -> Tensor:
        mean, std, _, size = group_stats(rewards, group_ids, extra_value, extra_count)  # (N,) each
        lone = size == 1  # a group of one response
        if self.lone_advantage == "reward":
            mean, std = mean.masked_fill(lone, 0.0), std.masked_fill(lone, 1.0)
        centred = rewards.double() - mean
        if self.std_normalize:
            centred = centred / (std + self.adv_eps)
        return centred.masked_fill(lone & (self.lone_advantage == "zero"), 0.0).float()

    def raw_advantages(self, rewards: Tensor, group_ids: Tensor) -> Tensor:
        return self._standardise(rewards, group_ids, 0.0, 0)
