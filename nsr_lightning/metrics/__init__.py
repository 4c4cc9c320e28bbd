from nsr_lightning.metrics.bootstrap import (
    Crossover,
    Interval,
    crossover_k_ci,
    mean_diff_ci,
    pass_at_k_ci,
    pass_at_k_diff_ci,
)
from nsr_lightning.metrics.pass_at_k import ks_for, pass_at_k, pass_at_k_table
from nsr_lightning.metrics.rollout import RatioMetric

__all__ = [
    "Crossover",
    "Interval",
    "crossover_k_ci",
    "mean_diff_ci",
    "RatioMetric",
    "ks_for",
    "pass_at_k",
    "pass_at_k_ci",
    "pass_at_k_diff_ci",
    "pass_at_k_table",
]
