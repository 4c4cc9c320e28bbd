"""Data: the synthetic task, prompt templates, the LightningDataModule."""

from nsr_lightning.data.datamodule import SyntheticDataModule
from nsr_lightning.data.synthetic import Problem, SyntheticTask

__all__ = ["Problem", "SyntheticDataModule", "SyntheticTask"]
