"""RLVRModule: rollout batch -> log-probabilities -> objective -> optimizer updates.

Manual optimization: each RL step is one Lightning training step (one `global_step`), inside
which the kept samples are split into mini-batches and visited for `ppo_epochs` epochs, one
optimizer update per mini-batch (PPO, Schulman et al. 2017; the paper's setting: 4 updates per
step). Rollouts arrive in `batch["rollout"]`, filled by `RolloutCallback` just before this step.
"""

from __future__ import annotations

import math
import random
import sys
import time
import warnings

import lightning as L
import numpy as np
import torch
from torch import Tensor

from nsr_lightning.errors import RunStopped
from nsr_lightning.fsdp import is_sharded, shard_model, to_local_scalar
from nsr_lightning.logprobs import response_logprobs, response_values
from nsr_lightning.metrics import RatioMetric, group_outcomes
from nsr_lightning.models import load_critic, load_policy, load_reference
from nsr_lightning.objectives import Objective, group_stats, is_correct
from nsr_lightning.rollout import RolloutBatch
from nsr_lightning.rollout.decode import UnsupportedCache
from nsr_lightning.streams import Stream, stream_seed

RATIO_METRICS = (
    "rollout/correct_ratio",
    "rollout/fully_solved_ratio",
    "rollout/fully_unsolved_ratio",
    "rollout/response_length",
    "rollout/truncated_ratio",
    "rollout/entropy",
    "rollout/zero_variance_group_ratio",
    "train/samples_kept_ratio",
    "train/entropy",
    "train/clip_fraction",
    "train/clip_fraction_low",
    "train/clip_fraction_high",
    "train/approx_kl_old",
    "train/approx_kl_ref",
    "train/value_clip_fraction",
)


class RLVRModule(L.LightningModule):
    # Bumped by every optimizer step; the rollout engine re-syncs its weights only when it changed.
    policy_version: int = 0
    # Models that `configure_model` shards under FSDP2 (attribute names; missing ones are skipped).
    SHARDED_MODELS = ("model", "ref_model", "critic")
    # rollout/logprob_diff_mean above this prints a warning (healthy: ~1e-5 fp32, ~1e-2 bf16)
    LOGPROB_ALARM = 0.1
    QUIET_NOTES = 10  # "no sample to learn from" lines printed at most; later ones only counted

    def __init__(
        self,
        *,
        model_path: str,
        objective: Objective,
        dtype: str = "float32",
        lr: float = 1e-6,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        mini_batch_size: int = 0,
        micro_batch_size: int = 0,
        ppo_epochs: int = 1,
        max_grad_norm: float = 1.0,
        logprob_chunk_size: int = 64,
        share_prompts: bool = True,
        gradient_checkpointing: bool = False,
        entropy_of_all_responses: bool = True,
        logprob_check_rows: int = 16,
        max_bad_updates_in_a_row: int = 3,
        fsdp: dict | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if lr <= 0 or not math.isfinite(lr):
            raise ValueError(f"algo.lr must be a positive number; got {lr}")
        if weight_decay < 0:
            raise ValueError(f"algo.weight_decay must be >= 0; got {weight_decay}")
        if mini_batch_size < 0:
            raise ValueError(
                f"algo.mini_batch_size must be >= 0 (0 = the whole batch); got {mini_batch_size}"
            )
        if micro_batch_size < 0:
            raise ValueError(
                f"algo.micro_batch_size must be >= 0 (0 = the whole mini-batch); got {micro_batch_size}"
            )
        if ppo_epochs < 1:
            raise ValueError(f"algo.ppo_epochs must be >= 1; got {ppo_epochs}")
        if max_grad_norm <= 0:
            raise ValueError(f"algo.max_grad_norm must be > 0; got {max_grad_norm}")
        if max_bad_updates_in_a_row < 1:
            raise ValueError(f"algo.max_bad_updates_in_a_row must be >= 1; got {max_bad_updates_in_a_row}")
        self.save_hyperparameters(ignore=["objective"])
        self.automatic_optimization = False
        self.objective = objective
        self.model = load_policy(model_path, dtype)
        # a frozen reference policy only when a KL coefficient is above 0 (not saved in checkpoints)
        self.ref_model = load_reference(model_path, dtype) if objective.needs_reference else None
        if self.ref_model is not None:  # eval mode on purpose (no dropout in a KL anchor)
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        # a learned value model only for objectives with a critic (PPO)
        self.critic = (
            load_critic(objective.critic_model_path or model_path, dtype) if objective.needs_critic else None
        )
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
            if self.critic is not None:
                self.critic.gradient_checkpointing_enable()
        self.bad_updates_in_a_row = 0  # non-finite updates skipped since the last good one
        self.rows_only = False  # set when the model's KV cache cannot be shared by a prompt's rows
        self.quiet_notes = 0  # "no sample to learn from" lines printed so far (at most QUIET_NOTES)
        self.step_metrics = torch.nn.ModuleDict(
            {name.replace("/", "__"): RatioMetric() for name in RATIO_METRICS}
        )

    # ---- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        policy = torch.optim.AdamW(
            self.model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas)
        )
        if self.critic is None:
            return policy
        critic = torch.optim.AdamW(
            self.critic.parameters(),
            lr=self.objective.critic_lr,
            weight_decay=hp.weight_decay,
            betas=tuple(hp.betas),
        )
        return [policy, critic]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The reference policy is the initial weights: rebuilt from model_path, never saved."""
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("ref_model.")]:
            del state[key]
        checkpoint["policy_version"] = self.policy_version
        checkpoint["bad_updates_in_a_row"] = self.bad_updates_in_a_row

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.policy_version = int(checkpoint.get("policy_version", 0))
        self.bad_updates_in_a_row = int(checkpoint.get("bad_updates_in_a_row", 0))
        if self.ref_model is not None and "state_dict" in checkpoint:
            for key, value in self.ref_model.state_dict().items():
                checkpoint["state_dict"].setdefault(f"ref_model.{key}", value)

    def _metric(self, name: str) -> RatioMetric:
        return self.step_metrics[name.replace("/", "__")]

    def _sync_max(self, value: int) -> int:
        """Max of an int over data-parallel ranks, so every rank runs the same number of updates."""
        if self.trainer.world_size == 1:
            return value
        t = torch.tensor(value, device=self.device, dtype=torch.long)
        return int(self.trainer.strategy.reduce(t, reduce_op="max").item())

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        """Every global random stream (torch, Python, NumPy) restarts from (seed, rank, step) at
        each step, so a run resumed at step s draws what an uninterrupted run draws there (the
        rollout engines and mini-batch orders seed their own streams the same way)."""
        seed = stream_seed(self.hparams.seed, Stream.GLOBAL, self.global_rank, self.global_step)
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        t0 = self._clock()
        rollout: RolloutBatch = batch["rollout"].to(self.device)
        rewards, group_ids = rollout.rewards, rollout.group_ids
        correct = is_correct(rewards)
        n_groups, solved, unsolved = group_outcomes(correct, group_ids)
        _, std, _, _ = group_stats(rewards, group_ids)
        self._metric("rollout/correct_ratio").update(correct.sum(), len(correct))
        self._metric("rollout/fully_solved_ratio").update(solved, n_groups)
        self._metric("rollout/fully_unsolved_ratio").update(unsolved, n_groups)
        # share of prompts whose responses all got the same reward (no GRPO signal)
        self._metric("rollout/zero_variance_group_ratio").update(
            torch.unique(group_ids[std == 0]).numel(), n_groups
        )
        self._metric("rollout/response_length").update(rollout.response_lengths.sum(), len(correct))
        self._metric("rollout/truncated_ratio").update(rollout.truncated.sum(), len(correct))
        self._log_sampler_mismatch(rollout)

        keep = self.objective.keep(rewards, group_ids)
        advantages = self.objective.advantages(rewards, group_ids)  # (N,) over whole groups
        kept = keep.nonzero().squeeze(-1)
        self._metric("train/samples_kept_ratio").update(len(kept), len(correct))
        dropped = (~keep).nonzero().squeeze(-1)
        if self.hparams.entropy_of_all_responses:  # dropped responses still count in rollout/entropy
            t = self._clock()
            self._dropped_entropy(rollout.select(dropped))
            self.log("perf/entropy_s", self._clock() - t, on_step=True)
        n_updates, skipped, grad_norm = self._update(rollout.select(kept), advantages[kept])
        self._note_nothing_kept(len(kept), len(correct), n_updates)

        self.log("train/updates", float(n_updates), on_step=True, prog_bar=False)
        self.log("train/skipped_updates", float(skipped), on_step=True)
        self.log("train/samples_kept", float(len(kept)), on_step=True)
        if grad_norm is not None:
            self.log("train/grad_norm", grad_norm, on_step=True)
        self._log_step_metrics()
        self.log("perf/train_s", self._clock() - t0, on_step=True)

    def _logprobs(
        self, model, batch: RolloutBatch, with_entropy: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """`response_logprobs` with this run's settings. With `algo.share_prompts`, prompts are
        shared by their responses, except with gradient checkpointing (no KV cache in training
        forwards) and under multi-rank FSDP2 (where every rank must run as many forwards)."""
        hp = self.hparams
        share = hp.share_prompts and not hp.gradient_checkpointing and not self.rows_only
        share = share and not (is_sharded(self.model) and self.trainer.world_size > 1)
        kwargs = {"chunk_size": hp.logprob_chunk_size, "with_entropy": with_entropy}
        kwargs["entropy_grad"] = self.objective.entropy_coef > 0  # else the entropy is only logged
        if share:
            try:
                return response_logprobs(model, batch, share_prompts=True, **kwargs)
            except UnsupportedCache as err:  # e.g. a recurrent model's cache: whole rows from now on
                print(f"algo.share_prompts: {err}; every row runs its prompt from now on", file=sys.stderr)
                self.rows_only = True
        return response_logprobs(model, batch, **kwargs)

    def _clock(self) -> float:
        """Wall time for the perf/* phase timings; waits for queued GPU work first (a few calls
        a step, at phase boundaries only: never inside the update loop)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _chunks(self, n: int, size: int) -> list[Tensor]:
        """Row indices 0..n-1 in chunks of `size`; under FSDP2 every rank gets as many chunks
        (empty ones last, for a dummy forward: each forward there is a collective)."""
        count = math.ceil(n / max(size, 1))
        if is_sharded(self.model) and self.trainer.world_size > 1:
            count = self._sync_max(count)
        return [torch.arange(min(c * size, n), min((c + 1) * size, n)) for c in range(count)]

    @torch.no_grad()
    def _dropped_entropy(self, dropped: RolloutBatch) -> None:
        hp = self.hparams
        for rows in self._chunks(len(dropped), hp.micro_batch_size or hp.mini_batch_size or len(dropped)):
            if len(rows) == 0:
                self._dummy_forward(self.model)
                continue
            sub = dropped.select(rows)
            _, entropy = self._logprobs(self.model, sub)
            self._metric("rollout/entropy").update(entropy.sum(), sub.response_mask.sum())

    def _optimizers(self) -> list:
        opts = self.optimizers()
        return list(opts) if isinstance(opts, (list, tuple)) else [opts]

    @torch.no_grad()
    def _prepare(self, batch: RolloutBatch, advantages: Tensor, n_updates: int, mb: int) -> dict:
        """What the updates need from the policy before it changes, in no-grad chunks of
        `algo.micro_batch_size` rows (else `mb`):
        old logprobs (off-policy updates, PPO's KL penalty), the reference policy's logprobs
        (a KL term), old values and per-token advantages and returns (a critic)."""
        hp, obj = self.hparams, self.objective
        need_old = n_updates > 1 or obj.needs_old_logprobs
        out = {"advantages": advantages, "old_logprobs": None, "ref_logprobs": None}
        models = [m for m in (self.model if need_old else None, self.ref_model, self.critic) if m is not None]
        chunks = self._chunks(len(batch), hp.micro_batch_size or mb)
        if not models or not chunks:
            return out
        parts: dict[str, list[Tensor]] = {"old_logprobs": [], "ref_logprobs": [], "old_values": []}
        ran = {"old_logprob": need_old, "ref": self.ref_model is not None, "value": self.critic is not None}
        times = {name: 0.0 for name, on in ran.items() if on}  # perf/<name>_s: the no-grad passes
        for rows in chunks:
            if len(rows) == 0:
                for model in models:
                    self._dummy_forward(model)
                continue
            sub = batch.select(rows)
            if need_old:
                t = self._clock()
                old, entropy = self._logprobs(self.model, sub)
                parts["old_logprobs"].append(old)
                self._metric("rollout/entropy").update(entropy.sum(), sub.response_mask.sum())
                times["old_logprob"] += self._clock() - t
            if self.ref_model is not None:
                t = self._clock()
                ref, _ = self._logprobs(self.ref_model, sub, with_entropy=False)
                parts["ref_logprobs"].append(ref)
                times["ref"] += self._clock() - t
            if self.critic is not None:
                t = self._clock()
                parts["old_values"].append(response_values(self.critic, sub))
                times["value"] += self._clock() - t
        for name, seconds in times.items():
            self.log(f"perf/{name}_s", seconds, on_step=True)
        out.update({k: torch.cat(v) for k, v in parts.items() if v})
        if self.critic is not None and len(batch):
            adv, returns, stats = obj.token_advantages(
                batch.rewards,
                batch.response_mask,
                out["old_values"],
                out["old_logprobs"],
                out["ref_logprobs"],
            )
            out.update(advantages=adv, returns=returns)
            self.log("train/explained_variance", stats["explained_variance"], on_step=True)
            if "kl_ref_sum" in stats:
                self._metric("train/approx_kl_ref").update(stats["kl_ref_sum"], batch.response_mask.sum())
        return out

    def _update(self, batch: RolloutBatch, advantages: Tensor) -> tuple[int, int, Tensor | None]:
        """PPO epochs x mini-batches of updates; returns (updates run, updates skipped as
        non-finite, last finite gradient norm)."""
        hp = self.hparams
        opts = self._optimizers()  # [policy] or [policy, critic]
        n = len(batch)
        mb = hp.mini_batch_size or max(n, 1)
        n_mb = self._sync_max(math.ceil(n / mb))
        n_updates = hp.ppo_epochs * n_mb
        if n_updates == 0:  # nothing to learn from on any rank: advance the step, touch nothing
            opts[0].zero_grad(set_to_none=True)
            opts[0].step()
            return 0, 0, None
        prep = self._prepare(batch, advantages, n_updates, mb)
        t0 = self._clock()
        pre_update = prep["old_logprobs"] is None  # then the first forward pass gives rollout/entropy
        gen = torch.Generator().manual_seed(stream_seed(hp.seed, Stream.MINIBATCH_ORDER, 0, self.global_step))
        grad_norm, done, skipped = None, 0, 0
        for _ in range(hp.ppo_epochs):
            order = torch.randperm(n, generator=gen) if n else torch.zeros(0, dtype=torch.long)
            for i in range(n_mb):
                idx = order[i * mb : (i + 1) * mb]
                loss = self._accumulate(batch, prep, idx, pre_update=pre_update and n_updates == 1)
                norm = to_local_scalar(  # a DTensor under FSDP2
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), hp.max_grad_norm)
                )
                critic_norm = None
                if self.critic is not None:
                    critic_norm = torch.nn.utils.clip_grad_norm_(self.critic.parameters(), hp.max_grad_norm)
                    critic_norm = to_local_scalar(critic_norm)
                done += 1
                if self._skip_if_not_finite(loss, norm, critic_norm):
                    skipped += 1
                    for opt in opts:
                        opt.zero_grad(set_to_none=True)
                    if done == n_updates:  # no gradients: the optimizer changes nothing, the step counts
                        opts[0].step()
                    continue
                grad_norm = norm
                if critic_norm is not None:
                    self.log("train/critic_grad_norm", critic_norm, on_step=True)
                    opts[1].optimizer.step()
                # Only the last policy update goes through Lightning, so global_step counts RL steps.
                (opts[0].step() if done == n_updates else opts[0].optimizer.step())
                self.policy_version += 1
                for opt in opts:
                    opt.zero_grad(set_to_none=True)
        self.log("perf/update_s", self._clock() - t0, on_step=True)  # forward + backward + optimizer
        return n_updates, skipped, grad_norm

    def _skip_if_not_finite(self, loss: Tensor, norm: Tensor, critic_norm: Tensor | None) -> bool:
        """Whether this update must be skipped: a non-finite loss or gradient norm on any rank
        (the flag is reduced over ranks, so every rank skips together and they stay in step).
        After `algo.max_bad_updates_in_a_row` skips in a row the run stops with RunStopped."""
        values = [loss.detach().float().reshape(()), norm.detach().float().reshape(())]
        if critic_norm is not None:
            values.append(critic_norm.detach().float().reshape(()))
        bad = self._sync_max(int(not torch.isfinite(torch.stack([v.to(loss.device) for v in values])).all()))
        if not bad:
            self.bad_updates_in_a_row = 0
            return False
        self.bad_updates_in_a_row += 1
        limit = self.hparams.max_bad_updates_in_a_row
        shown = ", ".join(
            f"{name}={v.item():.4g}"
            for name, v in zip(("loss", "grad_norm", "critic_grad_norm"), values, strict=False)
        )
        if self.global_rank == 0:
            print(
                f"WARNING step {self.global_step}: non-finite update skipped on rank 0 or another rank "
                f"(this rank: {shown}); {self.bad_updates_in_a_row} in a row of at most {limit} "
                "(algo.max_bad_updates_in_a_row)",
                file=sys.stderr,
                flush=True,
            )
        if self.bad_updates_in_a_row >= limit:
            raise RunStopped(
                f"step {self.global_step}: {self.bad_updates_in_a_row} updates in a row had a non-finite loss "
                f"or gradient norm (algo.max_bad_updates_in_a_row={limit}); the run stops. Lower algo.lr or "
                "check the reward and data; the last checkpoint holds the weights from before these updates"
            )
        return True

    def _note_nothing_kept(self, kept: int, total: int, n_updates: int) -> None:
        """A log line when this rank has no sample to learn from (PSR with no correct answer, NSR
        with no wrong one, an empty batch); at most QUIET_NOTES of them, later ones only counted
        in train/samples_kept."""
        if kept or self.quiet_notes >= self.QUIET_NOTES:
            return
        self.quiet_notes += 1
        if n_updates == 0:
            what = "no update this step" + ("" if self.trainer.world_size == 1 else " on any rank")
        else:
            what = f"this rank joins the other ranks' {n_updates} updates with a zero loss"
        more = (
            "; further ones are only counted (train/samples_kept)"
            if self.quiet_notes == self.QUIET_NOTES
            else ""
        )
        print(
            f"step {self.global_step} rank {self.global_rank}: objective {self.objective.name} keeps 0 of "
            f"{total} samples (nothing to learn from); {what}{more}",
            file=sys.stderr,
            flush=True,
        )

    def _accumulate(self, batch: RolloutBatch, prep: dict, idx: Tensor, pre_update: bool) -> Tensor:
        """Backward of one mini-batch's loss, in micro-batches of `algo.micro_batch_size` rows
        (gradient accumulation: the memory of one micro-batch, the gradient of the mini-batch).
        Each micro-batch's loss is weighted by its share of the mini-batch, as the aggregation
        mode counts it, so the summed gradient equals the whole mini-batch's. Every rank runs as
        many micro-batches (a rank with fewer backs a zero loss), so data-parallel ranks stay in step."""
        micro = self.hparams.micro_batch_size
        count = self._sync_max(math.ceil(len(idx) / micro)) if micro else 1
        size = micro or len(idx)
        if micro:  # rows of similar length together: each micro-batch's forward drops its own padding
            lengths = batch.attention_mask.sum(1)[idx.to(batch.response_mask.device)].cpu()
            idx = idx[torch.argsort(lengths, stable=True)]
        full_mask = batch.response_mask[idx.to(batch.response_mask.device)]
        total = torch.zeros((), device=self.device)
        for j in range(max(count, 1)):
            part = slice(j * size, (j + 1) * size)
            share = self.objective.batch_share(full_mask[part], full_mask) if micro else 1.0
            loss = self._minibatch_loss(batch, prep, idx[part], pre_update) * share
            self.manual_backward(loss)
            total = total + loss.detach()
        return total  # the mini-batch's loss, for the non-finite check

    def _dummy_forward(self, model) -> Tensor:
        dummy = torch.zeros((1, 2), dtype=torch.long, device=self.device)
        return model(input_ids=dummy, use_cache=False).logits.sum() * 0.0

    def _zero_loss(self) -> Tensor:
        """A zero loss through every trained model: a rank that ran out of samples still takes part
        in the data-parallel gradient reduction (and FSDP2's gathers), so ranks stay in step."""
        loss = self._dummy_forward(self.model)
        if self.critic is not None:
            loss = loss + self._dummy_forward(self.critic)
        return loss

    def _minibatch_loss(self, batch: RolloutBatch, prep: dict, idx: Tensor, pre_update: bool) -> Tensor:
        if len(idx) == 0:
            return self._zero_loss()
        mini = batch.select(idx)
        pick = {k: v[idx.to(v.device)] for k, v in prep.items() if isinstance(v, Tensor)}
        # entropy is logged every step; it is also the bonus when entropy_coef > 0
        logprobs, entropy = self._logprobs(self.model, mini)
        old = pick.get("old_logprobs", logprobs.detach())
        mask = mini.response_mask
        loss, stats = self.objective.loss(
            logprobs, old, pick["advantages"], mask, entropy=entropy, ref_logprobs=pick.get("ref_logprobs")
        )
        tokens = stats["tokens"]
        self._metric("train/entropy").update(entropy.detach().sum(), tokens)
        if pre_update:
            self._metric("rollout/entropy").update(entropy.detach().sum(), tokens)
        self._metric("train/clip_fraction").update(stats["clipped_tokens"], tokens)
        self._metric("train/clip_fraction_low").update(stats["clipped_low_tokens"], tokens)
        self._metric("train/clip_fraction_high").update(stats["clipped_high_tokens"], tokens)
        self._metric("train/approx_kl_old").update(stats["approx_kl_sum"], tokens)
        if "kl_ref_sum" in stats:
            self._metric("train/approx_kl_ref").update(stats["kl_ref_sum"], tokens)
            self.log("loss/kl", stats["kl_loss"], on_step=True)
        self.log("loss/policy", stats["pg_loss"], on_step=True)
        if self.critic is not None:
            values = response_values(self.critic, mini)
            value_loss, vstats = self.objective.value_loss(values, pick["old_values"], pick["returns"], mask)
            self._metric("train/value_clip_fraction").update(vstats["value_clipped_tokens"], tokens)
            self.log("loss/value", vstats["value_loss"], on_step=True)
            loss = loss + value_loss  # the critic's own parameters and optimizer: no weight needed
        self.log("loss/total", loss.detach(), on_step=True)
        return loss

    def _log_step_metrics(self) -> None:
        """Compute (summed over ranks) and reset every step metric; skip the empty ones."""
        values = {}
        for name in RATIO_METRICS:
            metric = self._metric(name)
            metric.update(0.0, 0.0)  # marks it updated on every rank, so compute() syncs everywhere
            value = metric.compute()
            metric.reset()
            if not torch.isnan(value):
                values[name] = value
        prog = {"rollout/correct_ratio", "rollout/entropy"}
        for name, value in values.items():
            self.log(name, value, on_step=True, prog_bar=name in prog)

    # ---- FSDP2 and the sampler check (issue 5) ----------------------------------------------
    def configure_model(self) -> None:
        """Under ModelParallelStrategy (`trainer=fsdp8`): FSDP2 `fully_shard` per decoder layer and
        on the root, with the `fsdp.*` mixed-precision policy and activation checkpointing
        (`algo.gradient_checkpointing`). Lightning calls this before `configure_optimizers`, so
        the optimizer sees the sharded parameters. Other strategies: nothing to do."""
        mesh = self.device_mesh
        if mesh is None:
            return
        mesh = mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh
        options = dict(self.hparams.fsdp or {})
        for name in self.SHARDED_MODELS:
            model = getattr(self, name, None)
            if model is not None:
                checkpointing = self.hparams.gradient_checkpointing and name == "model"
                shard_model(model, mesh, activation_checkpointing=checkpointing, **options)

    @torch.no_grad()
    def _log_sampler_mismatch(self, rollout: RolloutBatch) -> None:
        """|sampler logprob - trainer logprob| on the same response tokens, before any update.

        A cheap, loud alarm for a broken weight sync (stale or partial weights in the engine):
        on `algo.logprob_check_rows` rows (0 = off) when the engine returns its logprobs.
        Logged as `rollout/logprob_diff_mean` (mean over tokens, averaged over ranks) and
        `rollout/logprob_diff_max` (max over ranks). Healthy: about 1e-5 in float32, 1e-2 in bf16.
        """
        rows = self.hparams.logprob_check_rows
        if rollout.sampler_logprobs is None or rows <= 0:
            return
        check = rollout.select(torch.arange(min(rows, len(rollout))))
        trainer_lp, _ = self._logprobs(self.model, check, with_entropy=False)
        mask = check.response_mask.bool()
        diff = (check.sampler_logprobs.to(trainer_lp) - trainer_lp).abs()[mask]  # (tokens,)
        mean = diff.mean() if diff.numel() else torch.zeros((), device=self.device)
        peak = diff.max() if diff.numel() else torch.zeros((), device=self.device)
        self.log("rollout/logprob_diff_mean", mean, on_step=True, sync_dist=True)
        self.log("rollout/logprob_diff_max", peak, on_step=True, sync_dist=True, reduce_fx="max")
        if mean.item() > self.LOGPROB_ALARM:
            print(
                f"WARNING step {self.global_step} rank {self.global_rank}: sampler and trainer logprobs "
                f"differ by {mean.item():.3f} on average (> {self.LOGPROB_ALARM}): is the engine's weight "
                "sync broken (stale or partial weights)?",
                file=sys.stderr,
                flush=True,
            )
