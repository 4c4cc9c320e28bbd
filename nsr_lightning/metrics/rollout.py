"""Training-time metrics as torchmetrics (they sum over data-parallel ranks on compute).

Every metric here is a ratio of two sums, so one class serves: correct ratio, fully solved /
unsolved prompt ratios, mean token entropy, clip fraction, response length, truncation share,
share of samples kept.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class RatioMetric(Metric):
    """sum(numerator) / sum(denominator) over all updates and ranks, element-wise for `size`
    ratios at once (one state, so one sync over ranks for all of them); NaN where empty. No host
    read: compute() returns a tensor on the metric's device."""

    full_state_update = False
    higher_is_better = None

    def __init__(self, size: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        shape = () if size is None else (size,)
        self.add_state("num", default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("den", default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, numerator: Tensor | float, denominator: Tensor | float) -> None:
        self.num += torch.as_tensor(numerator, dtype=torch.float64, device=self.num.device)
        self.den += torch.as_tensor(denominator, dtype=torch.float64, device=self.den.device)

    def compute(self) -> Tensor:
        ratio = self.num / torch.where(self.den == 0, 1.0, self.den)
        return torch.where(self.den == 0, float("nan"), ratio).float()
