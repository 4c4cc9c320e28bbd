"""The REINFORCE family of the paper: PSR, NSR, W-REINFORCE and REINFORCE as one class.

Paper (Zhu et al., 2025), eq. 2-4: L_RLVR = L_PSR + L_NSR, with
L_PSR = -E[sum over correct y of log pi(y)] and L_NSR = +E[sum over incorrect y of log pi(y)];
W-REINFORCE (eq. 5) weighs the positive term by lambda: L = lambda * L_PSR + L_NSR.
Each correct sample gets advantage +lambda_pos, each incorrect one -lambda_neg; no
normalisation (normalising a constant advantage zeroes it: paper, appendix D.3).
PSR (lambda_neg = 0) and NSR (lambda_pos = 0) drop the other sign's samples from the batch,
as the reference code does. The lambdas themselves live in the base class, so that any other
objective can be weighted the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nsr_lightning.objectives.base import Objective, is_correct


class Reinforce(Objective):
    """Weighted REINFORCE: raw advantage +1 on correct, -1 on incorrect, times the lambdas.

    psr: (1, 0); nsr: (0, 1); w_reinforce: (0.1, 1); reinforce: (1, 1).
    """

    name = "reinforce"

    def raw_advantages(self, rewards: Tensor, group_ids: Tensor) -> Tensor:
        return torch.where(is_correct(rewards), 1.0, -1.0).float()
