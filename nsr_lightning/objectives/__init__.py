"""Objectives: pure tensor code, one file per family (see objectives/base.py for the interface)."""

from nsr_lightning.objectives.base import LOSS_AGG_MODES, Objective, aggregate, is_correct
from nsr_lightning.objectives.reinforce import Reinforce

__all__ = ["LOSS_AGG_MODES", "Objective", "Reinforce", "aggregate", "is_correct"]
