"""The REINFORCE family of the paper: PSR, NSR, W-REINFORCE and REINFORCE as one class.

Paper (Zhu et al., 2025), eq. 2-4: L_RLVR = L_PSR + L_NSR, with
L_PSR = -E[sum over correct y of log pi(y)] and L_NSR = +E[sum over incorrect y of log pi(y)];
W-REINFORCE (eq. 5) weighs the positive term by lambda: L = lambda * L_PSR + L_NSR.
Each correct sample gets advantage +lambda_pos, each incorrect one -lambda_neg; no
normalisation (normalising a constant advantage zeroes it: paper, appendix D.3).
PSR (lambda_neg = 0) and NSR (lambda_pos = 0) drop the other sign's samples from the batch,
as the reference code does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nsr_lightning.objectives.base import Objective, is_correct


class Reinforce(Objective):
    """Weighted REINFORCE with a positive weight lambda_pos and a negative weight lambda_neg.

    psr: (1, 0); nsr: (0, 1); w_reinforce: (0.1, 1); reinforce: (1, 1).
    """

    name = "reinforce"

    def __init__(self, *, lambda_pos: float = 1.0, lambda_neg: float = 1.0, **shared) -> None:
        super().__init__(**shared)
        if lambda_pos < 0 or lambda_neg < 0:
            raise ValueError(
                f"objective.lambda_pos and objective.lambda_neg must be >= 0; got {lambda_pos}, {lambda_neg}"
            )
        if lambda_pos == 0 and lambda_neg == 0:
            raise ValueError(
                "objective.lambda_pos and objective.lambda_neg cannot both be 0: nothing to learn"
            )
        self.lambda_pos = float(lambda_pos)
        self.lambda_neg = float(lambda_neg)

    def keep(self, rewards: Tensor, group_ids: Tensor) -> Tensor:
        correct = is_correct(rewards)
        keep_pos = torch.full_like(correct, self.lambda_pos > 0)
        keep_neg = torch.full_like(correct, self.lambda_neg > 0)
        return torch.where(correct, keep_pos, keep_neg)

    def advantages(self, rewards: Tensor, group_ids: Tensor) -> Tensor:
        correct = is_correct(rewards)
        pos = torch.full(correct.shape, self.lambda_pos, dtype=torch.float32, device=rewards.device)
        return torch.where(correct, pos, -self.lambda_neg)
