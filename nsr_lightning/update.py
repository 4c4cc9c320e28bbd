"""The RL update of one step, without a Trainer: a scored rollout batch in, `StepStats` out.

    keep (the objective's samples) -> no-grad pass (old / reference log-probs, extra models'
    outputs) -> advantages (`Objective.step_advantages`) -> ppo_epochs x mini-batches, one
    optimizer update each, of micro-batches (gradient accumulation) -> step statistics

One update per global mini-batch of `mini_batch_size` x world_size kept samples (counted over
all ranks; each rank splits its own kept rows evenly over the updates), `ppo_epochs` passes
(PPO, Schulman et al. 2017; the paper: 4 updates per step). Each micro-batch's loss is weighted
so that the gradient is the global mini-batch's: token-mean divides by the tokens of every rank
and micro-batch, the seq-mean modes by their sequences (`_micro_plan`), the same on 1 process or
many. A non-finite loss or gradient norm skips that update on every rank. Every rank runs as
many chunks, micro-batches and updates (a rank with fewer backs zero losses), so data-parallel
ranks and FSDP2's collectives stay in step.
The Lightning wiring (logging, optimizers, checkpoints) is `module.py`'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from nsr_lightning import diagnostics
from nsr_lightning.config_rules import check_group, sharded_diagnostics
from nsr_lightning.correction import RolloutCorrection
from nsr_lightning.fsdp import to_local_scalar
from nsr_lightning.objectives import Objective, Prepared, group_outcomes, group_stats, is_correct
from nsr_lightning.rollout import RolloutBatch
from nsr_lightning.step_stats import StepStats
from nsr_lightning.streams import Stream, stream_seed
from nsr_lightning.update_checks import Checks
from nsr_lightning.update_passes import Ranks, clock

__all__ = ["Ranks", "Update", "UpdateSettings"]


@dataclass(frozen=True)
class UpdateSettings:
    """The update's knobs (config: `algo.*`; meanings in configs/fit.yaml)."""

    mini_batch_size: int = 0
    micro_batch_size: int = 0
    ppo_epochs: int = 1
    max_grad_norm: float = 1.0
    logprob_chunk_size: int = 64
    share_prompts: bool = True
    gradient_checkpointing: bool = False
    entropy_of_all_responses: bool = True
    logprob_check_rows: int = 16
    max_bad_updates_in_a_row: int = 3
    diagnostics_every_n_steps: int = 0  # diag/* every this many steps (nsr_lightning/diagnostics.py)
    seed: int = 0
    rollout_correction: RolloutCorrection = RolloutCorrection()  # config: rollout.correction.*

    def __post_init__(self) -> None:
        if isinstance(self.rollout_correction, dict):  # from the config
            object.__setattr__(self, "rollout_correction", RolloutCorrection(**self.rollout_correction))
        check_group("algo", {k: v for k, v in vars(self).items() if k not in ("seed", "rollout_correction")})


def _raw(optimizer):
    """The torch optimizer inside a LightningOptimizer (the optimizer itself otherwise)."""
    return getattr(optimizer, "optimizer", optimizer)


class Update(Checks):
    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        settings: UpdateSettings | None = None,
        *,
        ref_model: nn.Module | None = None,
        extras: dict[str, nn.Module] | None = None,
        backward: Callable[[Tensor], None] | None = None,
    ) -> None:
        """extras: the objective's extra trained models by name (`Objective.extra_models`);
        backward: how a loss is back-propagated (Lightning's `manual_backward`; default plain)."""
        super().__init__(model, objective, settings or UpdateSettings(), ref_model, dict(extras or {}))
        self.backward = backward or (lambda loss: loss.backward())
        self.policy_version = 0  # bumped by every optimizer step (the engine re-syncs on a change)
        self.bad_updates_in_a_row = 0  # non-finite updates skipped since the last good one
        self.quiet_notes = 0

    def run(self, rollout: RolloutBatch, optimizers: list, *, step: int = 0, ranks: Ranks | None = None):
        """One RL step on `rollout` (scored, on the models' device). `optimizers`: the policy's,
        then one per extra model in `extras` order; the policy's last update of the step calls
        `optimizers[0].step()` (Lightning counts steps there), the others the raw optimizer."""
        self.stats, self.step, self.ranks = StepStats(), step, ranks or Ranks()
        t0 = clock(self.device)
        rollout = replace(rollout, texts=[])  # the reward has read them; selecting rows then reads no index
        rewards, group_ids = rollout.rewards, rollout.group_ids
        correct = is_correct(rewards)
        n_groups, solved, unsolved = group_outcomes(correct, group_ids)
        _, std, _, size = group_stats(rewards, group_ids)
        add = self.stats.add  # every statistic stays on the device: the module reads them once a step
        add("rollout/correct_ratio", correct.sum(), len(correct))
        add("rollout/fully_solved_ratio", solved, n_groups)
        add("rollout/fully_unsolved_ratio", unsolved, n_groups)
        # share of prompts whose responses all got the same reward (no GRPO signal): 1 / size per sample
        add(
            "rollout/zero_variance_group_ratio",
            ((std == 0).double() / size.clamp(min=1)).sum().round(),
            n_groups,
        )
        add("rollout/response_length", rollout.response_lengths.sum(), len(correct))
        add("rollout/truncated_ratio", rollout.truncated.sum(), len(correct))
        self._sampler_mismatch(rollout)

        keep = self.objective.keep(rewards, group_ids)
        # kept rows first, then the dropped ones, each in batch order: one host read (their count)
        order = torch.argsort((~keep).to(torch.uint8), stable=True)
        n_kept = int(keep.sum())
        kept, dropped = order[:n_kept], order[n_kept:]
        add("train/samples_kept_ratio", len(kept), len(correct))
        if self.settings.entropy_of_all_responses:  # dropped responses still count in rollout/entropy
            t = clock(self.device)
            self._entropy_only(rollout.select(dropped))
            self.stats.set("perf/entropy_s", clock(self.device) - t)
        n_updates, skipped, grad_norm = self._updates(rollout, kept, optimizers)
        self._note_nothing_kept(len(kept), len(correct), n_updates)
        self.stats.set("train/updates", n_updates)
        self.stats.set("train/skipped_updates", skipped)
        self.stats.set("train/samples_kept", len(kept))
        if grad_norm is not None:
            self.stats.set("train/grad_norm", grad_norm)
        self.stats.set("perf/train_s", clock(self.device) - t0)
        return self.stats

    # ---- the updates ----------------------------------------------------------------------------
    def _updates(
        self, rollout: RolloutBatch, kept: Tensor, optimizers: list
    ) -> tuple[int, int, Tensor | None]:
        """PPO epochs x mini-batches of updates on the kept rows; returns (updates run, updates
        skipped as non-finite, last finite gradient norm).

        Counted globally: a step makes ceil(K / (mini_batch_size x world_size)) updates per epoch
        for K samples kept on all ranks (mini_batch_size is per rank), and each rank splits its
        own kept rows evenly over them; no sample moves between ranks."""
        hp, batch = self.settings, rollout.select(kept)
        n = len(batch)
        total = int(self.ranks.sums([n])[0])  # no tensor on one process
        per_update = hp.mini_batch_size * self.ranks.world_size if hp.mini_batch_size else max(total, 1)
        n_mb = math.ceil(total / per_update)
        n_updates = hp.ppo_epochs * n_mb
        if n_updates == 0:  # nothing to learn from on any rank: advance the step, touch nothing
            optimizers[0].zero_grad(set_to_none=True)
            optimizers[0].step()
            return 0, 0, None
        prep = self._prepare(
            batch, n_updates > 1 or self.objective.needs_old_logprobs, hp.mini_batch_size or n
        )
        rows = self._rows(rollout, kept, prep)
        every = hp.diagnostics_every_n_steps
        if every and self.ranks.sharded:
            raise ValueError(sharded_diagnostics(every))
        before = diagnostics.before_step(self, batch, rows) if every and self.step % every == 0 else None
        t0 = clock(self.device)
        pre_update = prep.old_logprobs is None  # then the first forward pass gives rollout/entropy
        plan = self._micro_plan(batch, n_mb)
        grad_norm, done, skipped = None, 0, 0
        for parts in plan:
            loss = self._accumulate(batch, rows, parts, pre_update=pre_update and n_updates == 1)
            norms = {"grad_norm": self._clip(self.model)}
            norms.update({f"{name}_grad_norm": self._clip(m) for name, m in self.extras.items()})
            done += 1
            if self._skip_if_not_finite(loss, norms):
                skipped += 1
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                if done == n_updates:  # no gradients: the optimizer changes nothing, the step counts
                    optimizers[0].step()
                continue
            grad_norm = norms.pop("grad_norm")
            for (name, norm), opt in zip(norms.items(), optimizers[1:], strict=True):
                self.stats.set(f"train/{name}", norm)
                _raw(opt).step()
            # Only the last policy update goes through the trainer, so its step counts RL steps.
            (optimizers[0].step() if done == n_updates else _raw(optimizers[0]).step())
            self.policy_version += 1
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
        self.stats.set("perf/update_s", clock(self.device) - t0)  # forward + backward + optimizer
        if before is not None:
            diagnostics.after_step(self, batch, before)
        return n_updates, skipped, grad_norm

    def _micro_plan(self, batch: RolloutBatch, n_mb: int) -> list[list[tuple[Tensor, Tensor]]]:
        """Per update (`ppo_epochs` x `n_mb` mini-batches), its micro-batches of
        `micro_batch_size` rows (gradient accumulation) as (rows, weight).

        Rows: each epoch orders the prompts (groups) at random (seeded by step: a resumed run draws
        the same) and splits that order evenly into the mini-batches; within a mini-batch the
        groups go by length (each micro-batch's forward drops its own padding), a prompt's
        responses next to each other, so a micro-batch's prompt-shared forward runs few prompts.
        Weight: the micro-batch's `loss_units` x world_size over the units of the global mini-batch
        (DDP and FSDP2 average gradients over ranks, so the gradient is sum over all ranks' tokens
        (or sequences) / their global count), a tensor on the device: no host read per micro-batch.
        Every rank gets as many micro-batches per update (empty ones back a zero loss). One host
        read of lengths and groups, and two collectives, per step."""
        hp, mask = self.settings, batch.response_mask
        micro = hp.micro_batch_size
        lengths, groups = torch.stack([batch.attention_mask.sum(1), batch.group_ids.long()]).tolist()
        gen = torch.Generator().manual_seed(stream_seed(hp.seed, Stream.MINIBATCH_ORDER, 0, self.step))
        members: dict[int, list[int]] = {}
        for row, group in enumerate(groups):
            members.setdefault(group, []).append(row)
        local, groups_in_order = [], list(members.values())
        for _ in range(hp.ppo_epochs):
            shuffled = [
                groups_in_order[g] for g in torch.randperm(len(groups_in_order), generator=gen).tolist()
            ]
            rows = [row for group in shuffled for row in group]
            for idx in torch.tensor_split(torch.tensor(rows, dtype=torch.long), n_mb):
                if micro and len(idx):
                    by_group: dict[int, list[int]] = {}
                    for row in idx.tolist():
                        by_group.setdefault(groups[row], []).append(row)
                    ordered = sorted(by_group.values(), key=lambda g: max(lengths[r] for r in g))
                    idx = torch.tensor([row for group in ordered for row in group], dtype=torch.long)
                local.append(list(torch.split(idx, micro)) if micro and len(idx) else [idx])
        counts = self.ranks.maxes([len(parts) for parts in local])
        empty = torch.zeros(0, dtype=torch.long)
        local = [parts + [empty] * (count - len(parts)) for parts, count in zip(local, counts, strict=True)]
        units = torch.stack(
            [self.objective.loss_units(mask[p.to(mask.device)]) for parts in local for p in parts]
        ).double()  # (micro-batches,) on the device
        sizes = [len(parts) for parts in local]
        whole = self.ranks.all_sum(torch.stack([u.sum() for u in units.split(sizes)]))  # (updates,)
        world = self.ranks.world_size
        plan = []
        for parts, u, w in zip(local, units.split(sizes), whole, strict=True):
            weights = torch.where(w > 0, u * world / w.clamp(min=1e-300), 0.0).float()
            plan.append(list(zip(parts, weights, strict=True)))
        return plan

    def _rows(self, rollout: RolloutBatch, kept: Tensor, prep: Prepared) -> dict[str, Tensor]:
        """Per-kept-sample tensors the mini-batches pick from: advantages, old / reference
        log-probs, the extra models' old outputs (`old_<name>`) and the objective's extras."""
        rows = {"old_logprobs": prep.old_logprobs, "ref_logprobs": prep.ref_logprobs}
        rows.update({f"old_{name}": v for name, v in prep.outputs.items()})
        # on every rank, also one with no kept row: an objective may reduce over ranks here
        adv, extra, stats = self.objective.step_advantages(rollout.rewards, rollout.group_ids, kept, prep)
        rows.update(extra)
        for name, value in stats.items() if len(kept) else ():
            (self.stats.add(name, *value) if isinstance(value, tuple) else self.stats.set(name, value))
        return {"advantages": adv, **{k: v for k, v in rows.items() if v is not None}}

    def _clip(self, model: nn.Module) -> Tensor:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), self.settings.max_grad_norm)
        return to_local_scalar(norm)  # a DTensor under FSDP2

    def _accumulate(self, batch: RolloutBatch, rows: dict, parts: list, pre_update: bool) -> Tensor:
        """Backward of one mini-batch's loss, one weighted micro-batch at a time (`_micro_plan`:
        the memory of one micro-batch, the gradient of the global mini-batch)."""
        total = torch.zeros((), device=self.device)
        for idx, weight in parts:
            loss = self._minibatch_loss(batch, rows, idx, pre_update) * weight
            self.backward(loss)
            total = total + loss.detach()
        return total  # the mini-batch's loss, for the non-finite check

    def _minibatch_loss(self, batch: RolloutBatch, rows: dict, idx: Tensor, pre_update: bool) -> Tensor:
        if len(idx) == 0:
            return self._zero_loss()
        mini = batch.select(idx)
        pick = {k: v[idx.to(v.device)] for k, v in rows.items()}
        logprobs, entropy = self._logprobs(self.model, mini)  # entropy: logged, and the bonus if any
        old = pick.get("old_logprobs", logprobs.detach())
        mask = mini.response_mask
        weights = self._importance_weights(old, mini)
        loss, s = self.objective.loss(
            logprobs,
            old,
            pick["advantages"],
            mask,
            entropy=entropy,
            ref_logprobs=pick.get("ref_logprobs"),
            is_weights=weights,
        )
        tokens, add = s["tokens"], self.stats.add
        add("train/entropy", entropy.detach().sum(), tokens)
        if pre_update:
            add("rollout/entropy", entropy.detach().sum(), tokens)
        add("train/clip_fraction", s["clipped_tokens"], tokens)
        add("train/clip_fraction_low", s["clipped_low_tokens"], tokens)
        add("train/clip_fraction_high", s["clipped_high_tokens"], tokens)
        add("train/approx_kl_old", s["approx_kl_sum"], tokens)
        add("loss/policy", s["pg_loss"] * tokens, tokens)
        if "kl_ref_sum" in s:
            add("train/approx_kl_ref", s["kl_ref_sum"], tokens)
            add("loss/kl", s["kl_loss"] * tokens, tokens)
        if self.extras:
            outputs = {name: self._outputs(m, mini) for name, m in self.extras.items()}
            extra_loss, extra_stats = self.objective.extra_loss(outputs, pick, mask)
            for name, (num, den) in extra_stats.items():
                add(name, num, den)
            loss = loss + extra_loss  # the extra models' own parameters and optimizers: no weight
        add("loss/total", loss.detach() * tokens, tokens)
        return loss
