"""An objective for fault tests: REINFORCE whose loss is NaN on chosen calls of `loss()`
(1-based, counted per process) on one rank (-1: every rank)."""

import os

from nsr_lightning.objectives import Reinforce


class NaNLoss(Reinforce):
    def __init__(self, *, nan_calls: list[int] = (), nan_rank: int = -1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_calls, self.nan_rank, self.calls = set(nan_calls), nan_rank, 0

    def loss(self, *args, **kwargs):
        loss, stats = super().loss(*args, **kwargs)
        self.calls += 1
        rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.calls in self.nan_calls and self.nan_rank in (-1, rank):
            loss = loss * float("nan")
        return loss, stats
