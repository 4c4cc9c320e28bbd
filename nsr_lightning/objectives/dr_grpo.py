"""Dr.GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training"): GRPO done right.

Two biases of GRPO removed: no division by the group's reward std (A_i = r_i - mean(r)), and
no division by each response's own length: token losses are summed per response and divided by
a constant (`norm_length`, set to the generation budget in the config), then averaged over
responses (seq-mean-token-sum-norm). No KL term, as in the paper's experiments.
"""

from __future__ import annotations

from nsr_lightning.objectives.grpo import GRPO


class DrGRPO(GRPO):
    name = "dr_grpo"

    def __init__(
        self,
        *,
        std_normalize: bool = False,
        loss_agg_mode: str = "seq-mean-token-sum-norm",
        kl_coef: float = 0.0,
        **shared,
    ) -> None:
        super().__init__(std_normalize=std_normalize, loss_agg_mode=loss_agg_mode, kl_coef=kl_coef, **shared)
