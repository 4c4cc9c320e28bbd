"""Rollout engines behind one interface: `sync_weights(model)` and `generate(model, prompts, n=, sampling=, seed=)`."""

from nsr_lightning.rollout.batch import RolloutBatch, SamplingConfig, cat_batches, stream_seed
from nsr_lightning.rollout.hf import HFEngine

__all__ = ["HFEngine", "RolloutBatch", "SamplingConfig", "cat_batches", "stream_seed"]
