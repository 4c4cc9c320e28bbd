"""Rollout engines behind one interface: `sync_weights(model)` and `generate(model, prompts, n=, sampling=, seed=)`."""

from nsr_lightning.rollout.batch import RolloutBatch, SamplingConfig, cat_batches
from nsr_lightning.rollout.hf import HFEngine
from nsr_lightning.rollout.vllm import VLLMEngine  # imports vllm only when an engine is used

__all__ = ["HFEngine", "RolloutBatch", "SamplingConfig", "VLLMEngine", "cat_batches"]
