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

It reuses the rollout callback's engine and reward and the trainer's log-prob code, in chunks of
`algo.logprob_chunk_size` rows; problems are sharded over data-parallel ranks and the sums
reduced (a rank without a problem runs a stand-in one and drops it: under FSDP2 every generate
and forward is a collective). Its history is saved in checkpoints, so a resumed run keeps it.
"""

from __future__ import annotations

import math
import os

import lightning as L
import torch
from nsr_lightning.callbacks.common import rank_rows, rollout_callback, write_json

from nsr_lightning.config_rules import check_group
from nsr_lightning.fsdp import is_sharded
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
        check_group("callbacks.heldout", locals())
        self.every_n_steps, self.num_problems = int(every_n_steps), int(num_problems)
        self.entropy_samples, self.temperature = int(entropy_samples), float(temperature)
        self.max_new_tokens, self.seed = max_new_tokens, int(seed)
        self.history: list[dict] = []  # {"step", "greedy_accuracy", "entropy"}

    def state_dict(self) -> dict:  # saved in checkpoints: a resumed run keeps its history
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # before training; a resumed run measured its step already when it has it in its history
        if self.every_n_steps and not any(h["step"] == trainer.global_step for h in self.history):
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
        mine, real = rank_rows(trainer, rows)
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
                sums[2], sums[3] = self._entropy(trainer, pl_module, sampled.to(pl_module.device))
            sums = sums if real else torch.zeros_like(sums)  # a stand-in problem counts nothing
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

    @torch.no_grad()
    def _entropy(self, trainer, pl_module, sampled) -> tuple[float, float]:
        """(sum of token entropies, tokens) of `sampled`, in forwards of `algo.logprob_chunk_size`
        rows, as the module's no-grad passes; under FSDP2 every rank runs as many forwards."""
        model, was_training = pl_module.model, pl_module.model.training
        update = getattr(pl_module, "update", None)
        size = update.settings.logprob_chunk_size if update is not None else 64
        count = math.ceil(len(sampled) / size)
        if trainer.world_size > 1 and is_sharded(model):
            t = torch.tensor(count, device=pl_module.device)
            count = int(trainer.strategy.reduce(t, reduce_op="max"))
        model.eval()
        total, tokens = 0.0, 0.0
        for c in range(count):
            rows = torch.arange(min(c * size, len(sampled)), min((c + 1) * size, len(sampled)))
            if len(rows) == 0:  # FSDP2: this rank's share of a collective forward
                model(
                    input_ids=torch.zeros((1, 2), dtype=torch.long, device=pl_module.device), use_cache=False
                )
                continue
            sub = sampled.select(rows)
            _, entropy = response_logprobs(model, sub, chunk_size=size)  # (c, R)
            total, tokens = total + float(entropy.sum()), tokens + float(sub.response_mask.sum())
        model.train(was_training)
        return total, tokens

    def _log(self, trainer: L.Trainer, record: dict) -> None:
        log_dir = trainer.log_dir or trainer.default_root_dir  # a collective: every rank must ask
        if not trainer.is_global_zero:
            return
        metrics = {f"heldout/{k}": v for k, v in record.items() if k != "step"}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        write_json(os.path.join(log_dir, "heldout.json"), self.history)
