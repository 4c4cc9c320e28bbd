"""HeldOutDynamicsCallback: greedy accuracy and policy entropy on held-out problems during training.

The paper's Figure 4 (a) and (b): greedy-decoding accuracy on the test set and the model's token
entropy on the test set, tracked across training steps (section 4.1). Off by default
(`every_n_steps: 0`); when on, measured before the first step and every N steps after it:

- `heldout/greedy_accuracy`: share of the first `num_problems` held-out problems whose greedy
  (temperature 0) response is correct;
- `heldout/entropy`: mean token entropy of pi(. | x, y_<t) over `entropy_samples` responses per
  problem sampled at `temperature` (the policy's own samples, as `rollout/entropy` on training
  prompts), nats per token; of the distribution sampled, softmax(logits / temperature) (the
  batch carries its temperature to `response_logprobs`).

It reuses the rollout callback's engine and reward and the trainer's log-prob code; problems are
sharded over data-parallel ranks and the sums reduced.
"""

from __future__ import annotations

import os

import lightning as L
import torch
from nsr_lightning.callbacks.common import rollout_callback, write_json

from nsr_lightning.logprobs import response_logprobs
from nsr_lightning.rollout import SamplingConfig
from nsr_lightning.streams import Stream, stream_seed


class HeldOutDynamicsCallback(L.Callback):
    def __init__(
        self,
        *,
        every_n_steps: int = 0,
        num_problems: int = 64,
        entropy_samples: int = 4,
        temperature: float = 1.0,
        max_new_tokens: int | None = None,
        seed: int = 0,
    ) -> None:
        if every_n_steps < 0:
            raise ValueError(f"callbacks.heldout.every_n_steps must be >= 0 (0 = off); got {every_n_steps}")
        if num_problems < 1:
            raise ValueError(f"callbacks.heldout.num_problems must be >= 1; got {num_problems}")
        if entropy_samples < 0:
            raise ValueError(f"callbacks.heldout.entropy_samples must be >= 0; got {entropy_samples}")
        self.every_n_steps, self.num_problems = int(every_n_steps), int(num_problems)
        self.entropy_samples, self.temperature = int(entropy_samples), float(temperature)
        self.max_new_tokens, self.seed = max_new_tokens, int(seed)
        self.history: list[dict] = []  # {"step", "greedy_accuracy", "entropy"}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_steps:
            self.measure(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.measure(trainer, pl_module)

    @torch.no_grad()
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        rollout = rollout_callback(trainer, "HeldOutDynamicsCallback")
        rollout.sync_if_changed(pl_module)
        max_new = self.max_new_tokens or rollout.sampling.max_new_tokens
        rows = next(iter(trainer.datamodule.heldout().values()), [])[: self.num_problems]  # first set
        mine = rows[trainer.global_rank :: trainer.world_size]
        prompts = [r["prompt_ids"] for r in mine]
        model, engine = pl_module.model, rollout.engine
        # sums over this rank: correct greedy answers, problems, entropy x tokens, tokens
        sums = torch.zeros(4, dtype=torch.float64)
        if prompts:
            step_seed = stream_seed(self.seed, Stream.HELDOUT, trainer.global_rank, trainer.global_step)
            greedy = engine.generate(
                model, prompts, n=1, sampling=SamplingConfig(temperature=0.0, max_new_tokens=max_new), seed=0
            )
            scores = rollout.reward_fn(greedy.texts, [r["answer"] for r in mine])
            sums[0], sums[1] = float(sum(s > 0 for s in scores)), float(len(mine))
            if self.entropy_samples:
                sampled = engine.generate(
                    model,
                    prompts,
                    n=self.entropy_samples,
                    sampling=SamplingConfig(temperature=self.temperature, max_new_tokens=max_new),
                    seed=step_seed,
                )
                was_training = model.training
                model.eval()
                _, entropy = response_logprobs(model, sampled.to(pl_module.device))  # (N, R)
                model.train(was_training)
                sums[2], sums[3] = float(entropy.sum()), float(sampled.response_mask.sum())
        if trainer.world_size > 1:
            sums = trainer.strategy.reduce(sums.to(pl_module.device), reduce_op="sum").cpu()
        record = {
            "step": trainer.global_step,
            "greedy_accuracy": float(sums[0] / max(sums[1], 1)),
            "entropy": float(sums[2] / sums[3]) if sums[3] > 0 else float("nan"),
        }
        self.history.append(record)
        self._log(trainer, record)
        return record

    def _log(self, trainer: L.Trainer, record: dict) -> None:
        log_dir = trainer.log_dir or trainer.default_root_dir  # a collective: every rank must ask
        if not trainer.is_global_zero:
            return
        metrics = {f"heldout/{k}": v for k, v in record.items() if k != "step"}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        write_json(os.path.join(log_dir, "heldout.json"), self.history)
