"""PassAtKCallback: unbiased pass@k on held-out problems, before, during and after training.

n samples per problem; pass@k for k = 1, 2, 4, ..., n with the unbiased estimator (paper,
section 3; nsr_lightning.metrics.pass_at_k). Problems are sharded over data-parallel ranks and
their correct counts gathered. Logged as `val/<dataset>/pass@k` (and on W&B a table and a
curve); written to `<log dir>/pass_at_k.json`; printed as a before / after table at the end.
"""

from __future__ import annotations

import math
import os

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from nsr_lightning.callbacks.common import rank_rows, rollout_callback, write_json
from nsr_lightning.callbacks.rollout import RolloutCallback

from nsr_lightning.config_rules import check_group
from nsr_lightning.evaluation import sample_and_score
from nsr_lightning.metrics import pass_at_k_table
from nsr_lightning.metrics.report import format_table, log_wandb_curve
from nsr_lightning.rollout import SamplingConfig
from nsr_lightning.streams import Stream, stream_seed


class PassAtKCallback(L.Callback):
    def __init__(
        self,
        *,
        n: int = 64,
        every_n_steps: int = 0,
        before: bool = True,
        after: bool = True,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        max_new_tokens: int | None = None,
        seed: int = 0,
    ) -> None:
        check_group("callbacks.pass_at_k", locals())
        self.n, self.every_n_steps, self.before, self.after = int(n), int(every_n_steps), before, after
        self.sampling_args = {"temperature": temperature, "top_p": top_p, "top_k": top_k}
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self.history: list[dict] = []  # {"step", "dataset", "pass@k": {k: value}}

    # ---- hooks ------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.before and trainer.global_step == 0:  # a resumed run has its "before" in history
            self.evaluate(trainer, pl_module, tag="before")

    def state_dict(self) -> dict:  # saved in checkpoints: a resumed run keeps its pass@k history
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.evaluate(trainer, pl_module, tag=f"step {trainer.global_step}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = any(h["tag"] == "after" and h["step"] == trainer.global_step for h in self.history)
        if self.after and not done:  # done: a resumed run whose checkpoint holds it
            self.evaluate(trainer, pl_module, tag="after")
        if trainer.is_global_zero and self.history:
            rank_zero_info(format_table(self.history))

    # ---- evaluation -------------------------------------------------------------------------
    def evaluate(
        self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str
    ) -> dict[str, dict[int, float]]:
        rollout = rollout_callback(trainer, "PassAtKCallback")
        sampling = SamplingConfig(
            **self.sampling_args, max_new_tokens=self.max_new_tokens or rollout.sampling.max_new_tokens
        )
        rollout.sync_if_changed(pl_module)
        results = {}
        for name, rows in trainer.datamodule.heldout().items():
            if not rows:
                rank_zero_info(f"pass@k: held-out set {name!r} is empty, skipped")
                continue
            counts = self._counts(trainer, pl_module, rollout, rows, sampling)
            table = pass_at_k_table([(self.n, c) for c in counts])
            results[name] = table
            self.history.append({"tag": tag, "step": trainer.global_step, "dataset": name, "pass@k": table})
        self._log(trainer, results)
        return results

    def _counts(self, trainer, pl_module, rollout: RolloutCallback, rows: list[dict], sampling) -> list[int]:
        """Correct counts per problem, in problem order, gathered from every rank."""
        world, rank = trainer.world_size, trainer.global_rank
        mine, real = rank_rows(trainer, rows)  # a rank without a problem samples a stand-in one
        per_rank = math.ceil(len(rows) / world)
        local = torch.full((per_rank,), -1, dtype=torch.long)
        if mine:
            _, scores = sample_and_score(
                rollout.engine,
                pl_module.model,
                rollout.reward_fn,
                mine,
                n=self.n,
                sampling=sampling,
                seed=stream_seed(self.seed, Stream.EVAL, rank),  # the same draws before and after
            )
            correct = torch.tensor(scores) > 0
            if real:  # a stand-in's counts are dropped (its rank holds no problem)
                local[: len(mine)] = correct.view(len(mine), self.n).sum(-1)
        if world > 1:
            gathered = trainer.strategy.all_gather(local.to(pl_module.device)).cpu()  # (world, per_rank)
            # row r of `rows` sits on rank r % world at position r // world
            return [int(gathered[i % world, i // world]) for i in range(len(rows))]
        return local[: len(rows)].tolist()

    def _log(self, trainer: L.Trainer, results: dict[str, dict[int, float]]) -> None:
        log_dir = trainer.log_dir or trainer.default_root_dir  # a collective: every rank must ask
        if not trainer.is_global_zero:
            return
        metrics = {f"val/{name}/pass@{k}": v for name, table in results.items() for k, v in table.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            if type(logger).__name__ == "WandbLogger":
                log_wandb_curve(logger, results, trainer.global_step)
        write_json(os.path.join(log_dir, "pass_at_k.json"), self.history)
