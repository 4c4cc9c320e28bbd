"""The update's checks and corrections, each a few lines at one point of a step: the sampler
vs trainer log-prob alarm, rollout correction's importance weights, the skip of a non-finite
update, and the note when a rank has nothing to learn from. `Update` (update.py) uses these."""

from __future__ import annotations

import sys

import torch
from torch import Tensor

from nsr_lightning.correction import importance_weights
from nsr_lightning.errors import RunStopped
from nsr_lightning.rollout import RolloutBatch
from nsr_lightning.update_passes import Passes


class Checks(Passes):
    LOGPROB_ALARM = 0.1  # rollout/logprob_diff_mean above this warns (healthy: ~1e-5 fp32, ~1e-2 bf16)
    QUIET_NOTES = 10  # "no sample to learn from" lines printed at most; later ones only counted

    def _importance_weights(self, old: Tensor, mini: RolloutBatch) -> Tensor | None:
        """Rollout correction's token weights for this micro-batch (None: off, or an engine without
        logprobs), pi_old / pi_sampler truncated and masked (correction.py); rollout/is_* metrics."""
        correction = self.settings.rollout_correction
        if not correction.enabled or mini.sampler_logprobs is None:
            return None
        weights, s = importance_weights(old, mini.sampler_logprobs, mini.response_mask, correction)
        add = self.stats.add
        add("rollout/is_weight_mean", s["weight_sum"], s["tokens"])
        add("rollout/is_truncated_ratio", s["truncated"], s["tokens"])
        add("rollout/is_masked_ratio", s["masked"], s["sequences"])
        # effective sample size over tokens, (sum w)^2 / (n sum w^2) per micro-batch, token-weighted
        ess = s["weight_sum"] ** 2 / s["weight_sq_sum"].clamp(min=1e-30)  # no host sync
        add("rollout/is_ess", ess, s["tokens"])
        for name, value, pick in (
            ("min", s["weight_min"], torch.minimum),
            ("max", s["weight_max"], torch.maximum),
        ):
            key = f"rollout/is_weight_{name}"  # this rank's (a rank without samples sets none:
            if key in self.stats.scalars:  # a reduce over ranks would then miss a collective)
                value = pick(value, torch.as_tensor(self.stats.scalars[key][0], device=value.device))
            self.stats.set(key, value)
        return weights

    def _skip_if_not_finite(self, loss: Tensor, norms: dict[str, Tensor]) -> bool:
        """Whether this update must be skipped: a non-finite loss or gradient norm on any rank
        (the flag is reduced over ranks, so every rank skips together and they stay in step).
        After `max_bad_updates_in_a_row` skips in a row the run stops with RunStopped."""
        values = {"loss": loss, **norms}
        values = {k: v.detach().float().reshape(()).to(loss.device) for k, v in values.items()}
        bad = self.ranks.max(int(not torch.isfinite(torch.stack(list(values.values()))).all()))
        if not bad:
            self.bad_updates_in_a_row = 0
            return False
        self.bad_updates_in_a_row += 1
        limit = self.settings.max_bad_updates_in_a_row
        shown = ", ".join(f"{name}={v.item():.4g}" for name, v in values.items())
        if self.ranks.rank == 0:
            print(
                f"WARNING step {self.step}: non-finite update skipped on rank 0 or another rank "
                f"(this rank: {shown}); {self.bad_updates_in_a_row} in a row of at most {limit} "
                "(algo.max_bad_updates_in_a_row)",
                file=sys.stderr,
                flush=True,
            )
        if self.bad_updates_in_a_row >= limit:
            raise RunStopped(
                f"step {self.step}: {self.bad_updates_in_a_row} updates in a row had a non-finite loss "
                f"or gradient norm (algo.max_bad_updates_in_a_row={limit}); the run stops. Lower algo.lr or "
                "check the reward and data; the last checkpoint holds the weights from before these updates"
            )
        return True

    def _note_nothing_kept(self, kept: int, total: int, n_updates: int) -> None:
        """A log line when this rank has no sample to learn from (PSR with no correct answer, NSR
        with no wrong one); at most QUIET_NOTES of them, later ones only in train/samples_kept."""
        if kept or self.quiet_notes >= self.QUIET_NOTES:
            return
        self.quiet_notes += 1
        if n_updates == 0:
            what = "no update this step" + ("" if self.ranks.world_size == 1 else " on any rank")
        else:
            what = f"this rank joins the other ranks' {n_updates} updates with a zero loss"
        more = (
            "; further ones are only counted (train/samples_kept)"
            if self.quiet_notes == self.QUIET_NOTES
            else ""
        )
        print(
            f"step {self.step} rank {self.ranks.rank}: objective {self.objective.name} keeps 0 of "
            f"{total} samples (nothing to learn from); {what}{more}",
            file=sys.stderr,
            flush=True,
        )

    @torch.no_grad()
    def _sampler_mismatch(self, rollout: RolloutBatch) -> None:
        """|sampler logprob - trainer logprob| on the same response tokens, before any update: a
        cheap, loud alarm for a broken weight sync, on `logprob_check_rows` rows (0 = off) when
        the engine returns its logprobs. rollout/logprob_diff_mean (mean over tokens, averaged
        over ranks) and _max (max over ranks). Healthy: about 1e-5 in float32, 1e-2 in bf16."""
        rows = self.settings.logprob_check_rows
        if rollout.sampler_logprobs is None or rows <= 0:
            return
        check = rollout.select(torch.arange(min(rows, len(rollout))))
        trainer_lp, _ = self._logprobs(self.model, check, with_entropy=False)
        diff = (check.sampler_logprobs.to(trainer_lp) - trainer_lp).abs()[check.response_mask.bool()]
        zero = torch.zeros((), device=self.device)
        mean, peak = (diff.mean(), diff.max()) if diff.numel() else (zero, zero)
        self.stats.set("rollout/logprob_diff_mean", mean, reduce="mean")
        self.stats.set("rollout/logprob_diff_max", peak, reduce="max")
        if mean.item() > self.LOGPROB_ALARM:
            print(
                f"WARNING step {self.step} rank {self.ranks.rank}: sampler and trainer logprobs differ by "
                f"{mean.item():.3f} on average (> {self.LOGPROB_ALARM}): is the engine's weight sync broken "
                "(stale or partial weights)?",
                file=sys.stderr,
                flush=True,
            )
