"""The forward passes of the update: log-probabilities at this run's settings, no-grad passes in
chunks (entropy of dropped samples, old / reference log-probs, extra models' outputs), and the
dummy forwards that keep FSDP2 ranks in step. `Update` (update.py) builds on these."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nsr_lightning.logprobs import response_logprobs, response_values
from nsr_lightning.objectives import Objective, Prepared
from nsr_lightning.rollout import RolloutBatch
from nsr_lightning.rollout.decode import UnsupportedCache


def clock(device: torch.device) -> float:
    """Wall time for the perf/* phase timings; waits for queued GPU work first (a few calls a
    step, at phase boundaries only: never inside the update loop)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@dataclass(frozen=True)
class Ranks:
    """The data-parallel group as the update sees it: one process unless told otherwise.

    `reduce(tensor, op)`: the tensor all-reduced over ranks with op "max" or "sum" (a
    collective: every rank calls it with the same shape, in the same order)."""

    world_size: int = 1
    rank: int = 0
    reduce: Callable[[Tensor, str], Tensor] | None = None
    sharded: bool = False  # FSDP2 over several ranks: every forward is a collective

    def _reduce(self, values: Tensor, op: str) -> Tensor:
        return values if self.world_size == 1 or self.reduce is None else self.reduce(values, op)

    def max(self, value: int) -> int:
        return int(self.maxes([value])[0])

    def maxes(self, values: list[int]) -> list[int]:
        """Element-wise max over ranks (one collective; none on one process)."""
        if self.world_size == 1 or self.reduce is None:
            return [int(v) for v in values]
        return [int(v) for v in self._reduce(torch.tensor(values, dtype=torch.float64), "max").tolist()]

    def sums(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (one collective; none, and no tensor, on one process)."""
        if self.world_size == 1 or self.reduce is None:
            return [float(v) for v in values]
        return self._reduce(torch.tensor(values, dtype=torch.float64), "sum").tolist()

    def all_sum(self, value: Tensor) -> Tensor:
        """A tensor summed over ranks, on its own device and dtype (one collective)."""
        return self._reduce(value, "sum")


class Passes:
    def __init__(self, model, objective: Objective, settings, ref_model, extras: dict[str, nn.Module]):
        self.model, self.objective, self.settings = model, objective, settings
        self.ref_model, self.extras = ref_model, extras
        self.rows_only = False  # set when the model's KV cache cannot be shared by a prompt's rows
        # filled by Update.run for the step at hand
        self.stats, self.ranks, self.step = None, Ranks(), 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _logprobs(
        self, model, batch: RolloutBatch, with_entropy: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """`response_logprobs` with this run's settings. With `share_prompts`, prompts are shared
        by their responses, except with gradient checkpointing (no KV cache in training forwards)
        and under multi-rank FSDP2 (where every rank must run as many forwards)."""
        hp = self.settings
        share = hp.share_prompts and not hp.gradient_checkpointing and not self.rows_only
        share = share and not self.ranks.sharded
        kwargs = {"chunk_size": hp.logprob_chunk_size, "with_entropy": with_entropy}
        kwargs["entropy_grad"] = self.objective.entropy_coef > 0  # else the entropy is only logged
        if share:
            try:
                return response_logprobs(model, batch, share_prompts=True, **kwargs)
            except UnsupportedCache as err:  # e.g. a recurrent model's cache: whole rows from now on
                print(f"algo.share_prompts: {err}; every row runs its prompt from now on", file=sys.stderr)
                self.rows_only = True
        return response_logprobs(model, batch, **kwargs)

    def _outputs(self, model: nn.Module, batch: RolloutBatch) -> Tensor:
        """An extra model's per-token outputs (a value head: V(s_t) at each response position)."""
        return response_values(model, batch)

    def _chunks(self, n: int, size: int) -> list[Tensor]:
        """Row indices 0..n-1 in chunks of `size`; under FSDP2 every rank gets as many chunks
        (empty ones last, for a dummy forward: each forward there is a collective)."""
        count = math.ceil(n / max(size, 1))
        if self.ranks.sharded:
            count = self.ranks.max(count)
        return [torch.arange(min(c * size, n), min((c + 1) * size, n)) for c in range(count)]

    @torch.no_grad()
    def _entropy_only(self, dropped: RolloutBatch) -> None:
        """rollout/entropy of the samples the objective does not train on."""
        hp = self.settings
        for rows in self._chunks(len(dropped), hp.micro_batch_size or hp.mini_batch_size or len(dropped)):
            if len(rows) == 0:
                self._dummy_forward(self.model)
                continue
            sub = dropped.select(rows)
            _, entropy = self._logprobs(self.model, sub)
            self.stats.add("rollout/entropy", entropy.sum(), sub.response_mask.sum())

    @torch.no_grad()
    def _prepare(self, batch: RolloutBatch, need_old: bool, mb: int) -> Prepared:
        """What the updates need from the models before the policy changes, in no-grad chunks of
        `micro_batch_size` rows (else `mb`): old log-probs (off-policy updates, or when the
        objective needs them), the reference policy's log-probs (a KL term), and every extra
        model's outputs."""
        prep = Prepared(rewards=batch.rewards, mask=batch.response_mask, all_sum=self.ranks.all_sum)
        models = [m for m in (self.model if need_old else None, self.ref_model) if m is not None]
        models += list(self.extras.values())
        chunks = self._chunks(len(batch), self.settings.micro_batch_size or mb)
        if not models:
            return prep
        parts: dict[str, list[Tensor]] = {}
        times = {"old_logprob": 0.0} if need_old else {}  # perf/<name>_s: the no-grad passes
        times.update({"ref": 0.0} if self.ref_model is not None else {})
        times.update({name: 0.0 for name in self.extras})

        def timed(name: str, fn) -> None:
            t = clock(self.device)
            parts.setdefault(name, []).append(fn())
            times[name] += clock(self.device) - t

        for rows in chunks:
            if len(rows) == 0:
                for model in models:
                    self._dummy_forward(model)
                continue
            sub = batch.select(rows)
            if need_old:
                t = clock(self.device)
                old, entropy = self._logprobs(self.model, sub)
                parts.setdefault("old_logprob", []).append(old)
                self.stats.add("rollout/entropy", entropy.sum(), sub.response_mask.sum())
                times["old_logprob"] += clock(self.device) - t
            if self.ref_model is not None:
                timed("ref", lambda sub=sub: self._logprobs(self.ref_model, sub, with_entropy=False)[0])
            for name, model in self.extras.items():
                timed(name, lambda model=model, sub=sub: self._outputs(model, sub))
        for name, seconds in times.items():
            self.stats.set(f"perf/{name}_s", seconds)
        empty = torch.zeros(batch.response_mask.shape, device=self.device)  # (0, T): no kept row here
        cat = {name: torch.cat(parts[name]) if name in parts else empty for name in times}
        prep.old_logprobs, prep.ref_logprobs = cat.get("old_logprob"), cat.get("ref")
        prep.outputs = {name: cat[name] for name in self.extras if name in cat}
        return prep

    def _dummy_forward(self, model) -> Tensor:
        dummy = torch.zeros((1, 2), dtype=torch.long, device=self.device)
        return model(input_ids=dummy, use_cache=False).logits.sum() * 0.0

    def _zero_loss(self) -> Tensor:
        """A zero loss through every trained model: a rank that ran out of samples still takes part
        in the data-parallel gradient reduction (and FSDP2's gathers), so ranks stay in step."""
        loss = self._dummy_forward(self.model)
        for model in self.extras.values():
            loss = loss + self._dummy_forward(model)
        return loss
