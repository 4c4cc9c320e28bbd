"""Objectives: pure tensor code, one file per family (see objectives/base.py for the interface)."""

from nsr_lightning.objectives.base import Objective, Prepared, TrainedModel, is_correct
from nsr_lightning.objectives.dapo import DAPO
from nsr_lightning.objectives.dr_grpo import DrGRPO
from nsr_lightning.objectives.functional import (
    KL_ESTIMATORS,
    LOSS_AGG_MODES,
    aggregate,
    group_outcomes,
    group_stats,
    kl_estimate,
    masked_whiten,
)
from nsr_lightning.objectives.grpo import GRPO
from nsr_lightning.objectives.ngrpo import NGRPO
from nsr_lightning.objectives.ppo import PPO, gae
from nsr_lightning.objectives.reinforce import Reinforce

__all__ = [
    "DAPO",
    "GRPO",
    "KL_ESTIMATORS",
    "LOSS_AGG_MODES",
    "NGRPO",
    "PPO",
    "DrGRPO",
    "Objective",
    "Prepared",
    "Reinforce",
    "TrainedModel",
    "aggregate",
    "gae",
    "group_outcomes",
    "group_stats",
    "is_correct",
    "kl_estimate",
    "masked_whiten",
]
