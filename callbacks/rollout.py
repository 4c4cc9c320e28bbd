"""RolloutCallback: on-policy rollouts each step, before the module's training step."""

from __future__ import annotations

import time

import lightning as L
import torch

from nsr_lightning.rollout import SamplingConfig, stream_seed


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
        self._synced_step: int | None = None
        self._timeouts_seen = getattr(reward_fn, "timeouts", 0) or 0

    def score(self, texts: list[str], golds: list[str]) -> torch.Tensor:
        return torch.tensor(self.reward_fn(texts, golds), dtype=torch.float32)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, batch_idx: int
    ) -> None:
        step = trainer.global_step
        t0 = time.perf_counter()
        if self._synced_step != step:
            self.engine.sync_weights(pl_module.model)
            self._synced_step = step
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
        pl_module.log("perf/generate_s", t2 - t1, on_step=True)
        pl_module.log("perf/reward_s", t3 - t2, on_step=True)
        pl_module.log("perf/generate_tokens_per_s", tokens / max(t2 - t1, 1e-9), on_step=True)
        timeouts = getattr(self.reward_fn, "timeouts", None)  # rewards that run in bounded workers
        if timeouts is not None:
            pl_module.log("rollout/reward_timeouts", float(timeouts - self._timeouts_seen), on_step=True)
            self._timeouts_seen = timeouts
