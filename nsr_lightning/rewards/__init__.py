"""Rewards: verifiers that score decoded responses against gold answers.

Every reward is called as ``reward(responses: list[str], golds: list[str]) -> list[float]``.
"""

from nsr_lightning.rewards.extract import extract_boxed, normalize_answer
from nsr_lightning.rewards.math import MathVerifyReward
from nsr_lightning.rewards.synthetic import SyntheticReward

__all__ = ["MathVerifyReward", "SyntheticReward", "extract_boxed", "normalize_answer"]
