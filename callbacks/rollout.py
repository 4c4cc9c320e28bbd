"""RolloutCallback: on-policy rollouts each step, before the module's training step."""

from __future__ import annotations

import time

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from nsr_lightning.config_rules import check
from nsr_lightning.rollout import RolloutBatch, SamplingConfig, cat_batches
from nsr_lightning.streams import Stream, stream_seed


def forget_last_step_metrics(trainer: L.Trainer) -> None:
    """Lightning keeps an on-step metric's last value for the whole epoch and logs it again at
    every later step that does not log it, so a metric logged only at some steps (diag/* every N
    steps, a pass that runs only sometimes, a ratio with nothing to count) would repeat a stale
    value. At the start of each step, mark every on-step-only metric as reset: a `self.log` of
    this step revives it (Lightning's own flag, `_ResultMetric.has_reset`)."""
    results = getattr(trainer, "_results", None)  # None outside a running fit loop
    for _, metric in results.items() if results is not None else ():
        if metric.meta.on_step and not metric.meta.on_epoch:
            metric.has_reset = True


class RolloutCallback(L.Callback):
    """Syncs the engine if the policy changed, samples n responses per prompt, scores them, and
    hands the scored `RolloutBatch` to the training step as `batch["rollout"]`.

    With an objective that asks for dynamic sampling (DAPO), it keeps drawing fresh training
    prompts until the batch holds as many groups that pass the objective's group filter as it
    has prompts, for at most `objective.max_sampling_rounds` rounds (all ranks run the same
    number of rounds). Surplus passing groups of the last round are discarded; the groups that
    fail the filter stay in the batch, so the rollout metrics describe everything sampled, and
    the objective drops them from the update.
    """

    def __init__(
        self, engine, reward_fn, *, n: int = 8, sampling: SamplingConfig | dict | None = None, seed: int = 0
    ):
        check("rollout.n", n)
        self.engine = engine
        self.reward_fn = reward_fn
        self.n = int(n)
        self.sampling = (
            sampling if isinstance(sampling, SamplingConfig) else SamplingConfig(**(sampling or {}))
        )
        self.seed = int(seed)
        self._synced_version: int | None = None  # the module's policy_version the engine holds
        self._timeouts_seen = getattr(reward_fn, "timeouts", 0) or 0

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

    def _rollout(self, model, prompts: dict, seed: int, times: dict) -> RolloutBatch:
        t0 = time.perf_counter()
        rollout = self.engine.generate(
            model, prompts["prompt_ids"], n=self.n, sampling=self.sampling, seed=seed
        )
        t1 = time.perf_counter()
        rollout.rewards = self.score(rollout.texts, [a for a in prompts["answer"] for _ in range(self.n)])
        times["generate"] += t1 - t0
        times["reward"] += time.perf_counter() - t1
        return rollout

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, batch_idx: int
    ) -> None:
        forget_last_step_metrics(trainer)
        step, rank = trainer.global_step, trainer.global_rank
        t0 = time.perf_counter()
        synced = self.sync_if_changed(pl_module)
        times = {"generate": 0.0, "reward": 0.0}
        rollout = self._rollout(
            pl_module.model, batch, stream_seed(self.seed, Stream.ROLLOUT, rank, step), times
        )
        objective = getattr(pl_module, "objective", None)
        if objective is not None and objective.dynamic_sampling:
            rollout = self._fill(trainer, pl_module, batch, rollout, times)
        batch["rollout"] = rollout
        tokens = float(rollout.response_lengths.sum())
        sync_s = time.perf_counter() - t0 - times["generate"] - times["reward"]
        pl_module.log("perf/sync_s", sync_s, on_step=True)
        pl_module.log("perf/synced", float(synced), on_step=True)
        pl_module.log("perf/generate_s", times["generate"], on_step=True)
        pl_module.log("perf/reward_s", times["reward"], on_step=True)
        pl_module.log("perf/generate_tokens_per_s", tokens / max(times["generate"], 1e-9), on_step=True)
        timeouts = getattr(self.reward_fn, "timeouts", None)  # rewards that run in bounded workers
        if timeouts is not None:
            pl_module.log("rollout/reward_timeouts", float(timeouts - self._timeouts_seen), on_step=True)
            self._timeouts_seen = timeouts

    # ---- dynamic sampling ---------------------------------------------------------------------
    def _fill(self, trainer, pl_module, batch: dict, rollout: RolloutBatch, times: dict) -> RolloutBatch:
        objective = pl_module.objective
        target = len(batch["prompt_ids"])
        parts = [rollout]
        n_pass = self._passing_groups(objective, rollout).numel()
        rounds = 1
        while rounds < objective.max_sampling_rounds and self._any_rank(trainer, n_pass < target):
            rank, step = trainer.global_rank, trainer.global_step
            prompts = self._draw_prompts(
                trainer, target, stream_seed(self.seed, Stream.PROMPTS, rank, step, rounds)
            )
            part = self._rollout(
                pl_module.model, prompts, stream_seed(self.seed, Stream.ROLLOUT, rank, step, rounds), times
            )
            parts.append(part)
            n_pass += self._passing_groups(objective, part).numel()
            rounds += 1
        merged = cat_batches(parts)
        surplus = self._passing_groups(objective, merged)[target:]  # latest groups first to go
        if len(surplus):
            merged = merged.select((~torch.isin(merged.group_ids, surplus)).nonzero().squeeze(-1))
        if n_pass < target:
            rank_zero_info(
                f"dynamic sampling: {n_pass} of {target} prompts had mixed rewards after {rounds} rounds "
                f"(objective.max_sampling_rounds); training on those"
            )
        pl_module.log("rollout/dynamic_sampling_rounds", float(rounds), on_step=True)
        pl_module.log("rollout/dynamic_sampling_filled", min(n_pass, target) / target, on_step=True)
        return merged

    @staticmethod
    def _passing_groups(objective, rollout: RolloutBatch) -> torch.Tensor:
        """Sorted ids of the groups that pass the objective's group filter."""
        ok = objective.group_filter(rollout.rewards, rollout.group_ids)
        return torch.unique(rollout.group_ids[ok])

    @staticmethod
    def _any_rank(trainer, flag: bool) -> bool:
        if trainer.world_size == 1:
            return flag
        t = torch.tensor(int(flag), device=trainer.strategy.root_device)
        return bool(trainer.strategy.reduce(t, reduce_op="max").item())

    @staticmethod
    def _draw_prompts(trainer, size: int, seed: int) -> dict:
        """`size` fresh training prompts, drawn at random (seeded) from the training set."""
        loader = trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if dataset is None or not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise ValueError("dynamic sampling needs a map-style training set (with __len__ and __getitem__)")
        gen = torch.Generator().manual_seed(seed)
        rows = [dataset[int(i)] for i in torch.randint(len(dataset), (size,), generator=gen)]
        return loader.collate_fn(rows)
