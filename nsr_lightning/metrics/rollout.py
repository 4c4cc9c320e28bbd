"""Training-time metrics as torchmetrics (they sum over data-parallel ranks on compute).

Every metric here is a ratio of two sums, so one class serves: correct ratio, fully solved /
unsolved prompt ratios, mean token entropy, clip fraction, response length, truncation share,
share of samples kept. `group_outcomes` gives the per-prompt counts the paper's Figure 4 plots.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class RatioMetric(Metric):
    """sum(numerator) / sum(denominator) over all updates and ranks; NaN when empty."""

    full_state_update = False
    higher_is_better = None

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("num", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("den", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, numerator: Tensor | float, denominator: Tensor | float) -> None:
        self.num += torch.as_tensor(numerator, dtype=torch.float64, device=self.num.device)
        self.den += torch.as_tensor(denominator, dtype=torch.float64, device=self.den.device)

    def compute(self) -> Tensor:
        if self.den == 0:
            return torch.tensor(float("nan"), device=self.num.device)
        return (self.num / self.den).float()


def group_outcomes(correct: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-group (prompt) counts: (number of groups, fully solved groups, fully unsolved groups)."""
    groups, inverse = torch.unique(group_ids, return_inverse=True)
    n_correct = torch.zeros(len(groups), device=correct.device).index_add_(0, inverse, correct.float())
    n_total = torch.zeros(len(groups), device=correct.device).index_add_(
        0, inverse, torch.ones_like(correct, dtype=torch.float)
    )
    solved = (n_correct == n_total).sum()
    unsolved = (n_correct == 0).sum()
    return torch.tensor(len(groups)), solved, unsolved
