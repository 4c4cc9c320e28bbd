"""NGRPO: GRPO with advantage calibration and asymmetric clipping (arXiv 2509.18851).

Advantage calibration: every group counts K virtual samples of maximum reward (K = 1,
r_max = 1) when its mean and unbiased std are computed; only the real samples are trained. A
group that is all wrong then gets a negative advantage instead of zero (G = 8, c = 0: -0.333),
so homogeneous errors still teach. Groups that are all correct are dropped (their calibrated
advantage is 0), and the batch is refilled with fresh prompts until it holds as many groups as
prompts (dynamic sampling, at most `max_sampling_rounds` rounds), as NGRPO's code regenerates. Asymmetric clipping: the ratio is clipped to [1 - 0.16, 1 + 0.24], looser for
positive advantages and tighter for negative ones. No KL term.
"""

from __future__ import annotations

from torch import Tensor

from nsr_lightning.config_rules import check_group
from nsr_lightning.objectives.grpo import GRPO


class NGRPO(GRPO):
    name = "ngrpo"
    lone_advantage = "zero"  # a group of one response gets 0, as in NGRPO's code (not -0.707)

    def __init__(
        self,
        *,
        virtual_samples: int = 1,  # K virtual samples per group (the paper: 1)
        virtual_reward: float = 1.0,  # their reward, the maximum (r_max = 1)
        clip_ratio_low: float = 0.16,  # tighter for negative advantages
        clip_ratio_high: float = 0.24,  # looser for positive advantages
        kl_coef: float = 0.0,
        drop_all_correct_groups: bool = True,
        dynamic_sampling: bool = True,
        max_sampling_rounds: int = 10,
        **shared,
    ) -> None:
        super().__init__(
            clip_ratio_low=clip_ratio_low,
            clip_ratio_high=clip_ratio_high,
            kl_coef=kl_coef,
            drop_all_correct_groups=drop_all_correct_groups,
            dynamic_sampling=dynamic_sampling,
            max_sampling_rounds=max_sampling_rounds,
            **shared,
        )
        check_group("objective", {"virtual_samples": virtual_samples, "virtual_reward": virtual_reward})
        self.virtual_samples = int(virtual_samples)
        self.virtual_reward = float(virtual_reward)

    def raw_advantages(self, rewards: Tensor, group_ids: Tensor) -> Tensor:
        return self._standardise(rewards, group_ids, self.virtual_reward, self.virtual_samples)
