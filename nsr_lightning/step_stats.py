"""What one RL step measured, gathered by the update and logged once by the module.

Two kinds of entries:
- ratios: a (numerator, denominator) pair summed over every micro-batch and update of the step
  (and, by the module's torchmetrics, over ranks); logged as numerator / denominator. The
  step-level losses are ratios too: `loss/*` is the token-weighted mean of the micro-batch
  losses over all the step's micro-batches and updates (each micro-batch's loss, as its
  aggregation mode computes it, weighted by its response tokens).
- scalars: one value per step (a count, a time, the last finite gradient norm); `reduce`
  names how the module syncs it over ranks (None: this rank's value).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

# Ratios every step reports (the objective may add its own: Objective.ratio_metrics).
RATIO_METRICS = (
    "rollout/correct_ratio",
    "rollout/fully_solved_ratio",
    "rollout/fully_unsolved_ratio",
    "rollout/response_length",
    "rollout/truncated_ratio",
    "rollout/entropy",
    "rollout/zero_variance_group_ratio",
    "train/samples_kept_ratio",
    "rollout/is_weight_mean",
    "rollout/is_truncated_ratio",
    "rollout/is_masked_ratio",
    "rollout/is_ess",
    "train/entropy",
    "train/clip_fraction",
    "train/clip_fraction_low",
    "train/clip_fraction_high",
    "train/approx_kl_old",
    "train/approx_kl_ref",
    "loss/policy",
    "loss/kl",
    "loss/total",
    "diag/logp_change_correct",
    "diag/logp_change_incorrect",
    "diag/unsampled_mass_change",
)


def _value(x: Tensor | float) -> Tensor:
    """A float64 0-dim tensor, on the value's device (no host sync per micro-batch on a GPU)."""
    return torch.as_tensor(x, dtype=torch.float64).detach().reshape(())


@dataclass
class StepStats:
    ratios: dict[str, list[Tensor]] = field(default_factory=dict)  # name -> [numerator, denominator]
    scalars: dict[str, tuple[Tensor | float, str | None]] = field(
        default_factory=dict
    )  # name -> (value, reduce)

    def add(self, name: str, numerator: Tensor | float, denominator: Tensor | float) -> None:
        """Add to a ratio (created at 0 / 0)."""
        num, den = _value(numerator), _value(denominator)
        old_num, old_den = self.ratios.get(name, (0.0, 0.0))
        self.ratios[name] = [old_num + num, old_den + den]

    def set(self, name: str, value: Tensor | float, reduce: str | None = None) -> None:
        """A per-step value (replaces an earlier one of the same name)."""
        self.scalars[name] = (value.detach() if isinstance(value, Tensor) else float(value), reduce)

    def ratio(self, name: str) -> float:
        """numerator / denominator (NaN when empty): for tests and scripts, unsynced."""
        num, den = self.ratios.get(name, (0.0, 0.0))
        return float(num) / float(den) if float(den) else float("nan")

    def scalar(self, name: str) -> float:
        return float(self.scalars[name][0])
