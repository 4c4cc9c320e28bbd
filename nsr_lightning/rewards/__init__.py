"""Rewards: verifiers that score decoded responses against gold answers."""

from nsr_lightning.rewards.synthetic import SyntheticReward, extract_boxed

__all__ = ["SyntheticReward", "extract_boxed"]
