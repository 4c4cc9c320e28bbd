"""RolloutCallback: on-policy rollouts each step, before the module's training step."""

from __future__ import annotations

import time

import lightning as L
import torch

from nsr_lightning.rollout import SamplingConfig


def stream_seed(seed: int, rank: int, step: int, salt: int = 0) -> int:
    """A distinct, reproducible seed per (run seed, rank, step, purpose)."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729 + salt * 15_485_863) % (2**63 - 1)


class RolloutCallback(L.Callback):
    """Syncs the engine if the policy changed, samples n responses per prompt, scores them, and
    hands the scored `RolloutBatch` to the training step as `batch["rollout"]`."""

    def __init__(
        self, engine, reward_fn, *, n: int = 8, sampling: SamplingConfig | dict | None = None, seed: int = 0
    ):
        if n < 1:
            raise ValueError(f"rollout.n must be >= 1; got {n}")
        self.engine = engine
        self.reward_fn = reward_fn
        self.n = int(n)
        self.sampling = (
            sampling if isinstance(sampling, SamplingConfig) else SamplingConfig(**(sampling or {}))
        )
        self.seed = int(seed)
        self._synced_version: int | None = None  # the module's policy_version the engine holds

    def sync_if_changed(self, pl_module: L.LightningModule) -> bool:
        """Push the policy's weights to the engine if they changed since the last push.

        "Changed" is the module's `policy_version`, bumped by every optimizer step (never a
        step-count heuristic). The first call of a process always syncs (the engine starts
        from `model.path`, the policy may come from a checkpoint); so does an engine that says
        it lost its weights (vLLM sleep level 2). Under FSDP2 every rank calls this at the same
        point: the versions agree across ranks, and the sync is a collective. Returns whether
        it synced."""
        version = getattr(pl_module, "policy_version", None)
        lost = getattr(self.engine, "weights_lost", False)
        if version is not None and version == self._synced_version and not lost:
            return False
        self.engine.sync_weights(pl_module.model)
        self._synced_version = version
        return True

    def score(self, texts: list[str], golds: list[str]) -> torch.Tensor:
        return torch.tensor(self.reward_fn(texts, golds), dtype=torch.float32)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, batch_idx: int
    ) -> None:
        step = trainer.global_step
        t0 = time.perf_counter()
        synced = self.sync_if_changed(pl_module)
        t1 = time.perf_counter()
        rollout = self.engine.generate(
            pl_module.model,
            batch["prompt_ids"],
            n=self.n,
            sampling=self.sampling,
            seed=stream_seed(self.seed, trainer.global_rank, step),
        )
        t2 = time.perf_counter()
        golds = [a for a in batch["answer"] for _ in range(self.n)]
        rollout.rewards = self.score(rollout.texts, golds)
        t3 = time.perf_counter()
        batch["rollout"] = rollout
        tokens = float(rollout.response_lengths.sum())
        pl_module.log("perf/sync_s", t1 - t0, on_step=True)
        pl_module.log("perf/synced", float(synced), on_step=True)
        pl_module.log("perf/generate_s", t2 - t1, on_step=True)
        pl_module.log("perf/reward_s", t3 - t2, on_step=True)
        pl_module.log("perf/generate_tokens_per_s", tokens / max(t2 - t1, 1e-9), on_step=True)
