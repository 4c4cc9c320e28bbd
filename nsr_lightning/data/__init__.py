"""Data: the synthetic task, named math data sets, prompt templates, the LightningDataModules."""

from nsr_lightning.data.datamodule import MathDataModule, SyntheticDataModule
from nsr_lightning.data.math_datasets import DATASETS, load_problems
from nsr_lightning.data.synthetic import Problem, SyntheticTask
from nsr_lightning.data.templates import TEMPLATES, build_prompt, render_prompt

__all__ = [
    "DATASETS",
    "TEMPLATES",
    "MathDataModule",
    "Problem",
    "SyntheticDataModule",
    "SyntheticTask",
    "build_prompt",
    "load_problems",
    "render_prompt",
]
