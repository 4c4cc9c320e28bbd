"""Per-sign diagnostics of one RL step (`algo.diagnostics_every_n_steps`; 0 = off).

Measured on the step's kept samples, with the policy before the step's updates:

- `diag/grad_norm_pos`, `diag/grad_norm_neg`: the L2 norm over the policy's parameters of the
  gradient of the loss's positive part (the objective's loss, clip / KL / entropy terms included,
  on the correct samples' tokens only) and of its negative part (the incorrect samples' tokens).
  Each part is normalised by the denominator of the loss of the whole kept batch (its
  `loss_units`: tokens for token-mean, sequences for the seq-mean modes), so that
  pos + neg = the gradient of the objective's loss on the whole kept batch as one mini-batch.
  The extra models' losses (a critic) are not part of it.
- `diag/grad_cos`: the cosine of the two gradients; not logged when either is zero (undefined).
- `diag/logp_change_correct`, `diag/logp_change_incorrect`: mean over the response tokens of the
  kept correct / incorrect samples of log pi_after(y_t | y_<t) - log pi_before(y_t | y_<t), after
  all of the step's updates (one extra no-grad forward).
- `diag/unsampled_mass_change`: the paper's section 4.2 (NSR raises the logits of the tokens that
  were not sampled, in proportion to their probability): at each response position t of a kept
  sample, the mass on the tokens other than the sampled y_t is 1 - pi(y_t | y_<t), so the mass the
  step moved onto them is (1 - pi_after(y_t)) - (1 - pi_before(y_t)) = pi_before(y_t) - pi_after(y_t),
  averaged over all kept response positions (correct and incorrect samples); > 0: mass moved
  off the sampled tokens onto the others.

The logp and mass changes are step ratios (summed over ranks by the module, as every ratio).
The gradient norms and cosine are rank-local: each rank differentiates its own kept samples with
`torch.autograd.grad` on the bare model (no DDP wrapper: no collective, no `.grad` written, the
optimizer untouched), and its own value is logged (rank 0's in the logs). Under multi-rank FSDP2
every forward is a collective, so diagnostics are refused there (config_rules and `Update.run`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nsr_lightning.objectives import is_correct
from nsr_lightning.rollout import RolloutBatch
from nsr_lightning.step_stats import StepStats


def _pick(value: Tensor | None, idx: Tensor) -> Tensor | None:
    return None if value is None else value[idx.to(value.device)]


def sign_gradients(update, batch: RolloutBatch, rows: dict) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """(positive part's gradient, negative part's gradient, per parameter of the policy; the
    log-probs (K, T) of the kept samples before the step, detached) for the kept `batch` with
    the update's `rows` (advantages, old / reference log-probs). Chunks of the update's
    micro-batch size; no `.grad` is touched."""
    model, objective, hp = update.model, update.objective, update.settings
    params = [p for p in model.parameters() if p.requires_grad]
    pos = [torch.zeros_like(p) for p in params]
    neg = [torch.zeros_like(p) for p in params]
    n = len(batch)
    mask = batch.response_mask
    total = objective.loss_units(mask)
    correct = is_correct(batch.rewards).to(mask.device)
    before = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    size = hp.micro_batch_size or hp.mini_batch_size or max(n, 1)
    stats, update.stats = update.stats, StepStats()  # rollout correction's rollout/is_* counted once
    try:
        _sign_gradients(update, batch, rows, params, (pos, neg, before), correct, total, size)
    finally:
        update.stats = stats
    return pos, neg, before


def _sign_gradients(update, batch, rows, params, out, correct, total, size) -> None:
    model, objective, mask = update.model, update.objective, batch.response_mask
    pos, neg, before = out
    n = len(batch)
    for start in range(0, n, size):
        idx = torch.arange(start, min(start + size, n))
        sub = batch.select(idx)
        logprobs, entropy = update._logprobs(model, sub)
        before[idx.to(mask.device)] = logprobs.detach().float()
        old = rows["old_logprobs"][idx.to(logprobs.device)] if "old_logprobs" in rows else logprobs.detach()
        weights = update._importance_weights(old, sub)
        sign = correct[idx.to(mask.device)]
        parts = [(pos, sign.nonzero().squeeze(-1)), (neg, (~sign).nonzero().squeeze(-1))]
        parts = [(acc, sel) for acc, sel in parts if len(sel)]
        for j, (acc, sel) in enumerate(parts):
            loss, _ = objective.loss(
                logprobs[sel],
                old[sel],
                _pick(rows["advantages"], idx)[sel.to(rows["advantages"].device)],
                sub.response_mask[sel],
                entropy=_pick(entropy, sel),
                ref_logprobs=None if "ref_logprobs" not in rows else _pick(rows["ref_logprobs"], idx)[sel],
                is_weights=_pick(weights, sel),
            )
            loss = loss * (objective.loss_units(sub.response_mask[sel]) / total)
            grads = torch.autograd.grad(loss, params, retain_graph=j + 1 < len(parts), allow_unused=True)
            for a, g in zip(acc, grads, strict=True):
                if g is not None:
                    a.add_(g)


def before_step(update, batch: RolloutBatch, rows: dict) -> Tensor:
    """Sets diag/grad_norm_pos, _neg and diag/grad_cos; returns the log-probs before the step."""
    pos, neg, before = sign_gradients(update, batch, rows)
    sq_pos = sum((g.double() ** 2).sum() for g in pos) if pos else torch.zeros((), dtype=torch.float64)
    sq_neg = sum((g.double() ** 2).sum() for g in neg) if neg else torch.zeros((), dtype=torch.float64)
    dot = sum((a.double() * b.double()).sum() for a, b in zip(pos, neg, strict=True)) if pos else 0.0
    norm_pos, norm_neg = math.sqrt(float(sq_pos)), math.sqrt(float(sq_neg))
    update.stats.set("diag/grad_norm_pos", norm_pos)
    update.stats.set("diag/grad_norm_neg", norm_neg)
    if norm_pos > 0 and norm_neg > 0:
        update.stats.set("diag/grad_cos", float(dot) / (norm_pos * norm_neg))
    return before


@torch.no_grad()
def after_step(update, batch: RolloutBatch, before: Tensor) -> None:
    """diag/logp_change_correct, _incorrect and diag/unsampled_mass_change, from one no-grad
    forward of the updated policy over the kept samples."""
    n, mask = len(batch), batch.response_mask
    hp = update.settings
    size = hp.micro_batch_size or hp.mini_batch_size or max(n, 1)
    correct = is_correct(batch.rewards).to(mask.device)
    add = update.stats.add
    for start in range(0, n, size):
        idx = torch.arange(start, min(start + size, n)).to(mask.device)
        after, _ = update._logprobs(update.model, batch.select(idx), with_entropy=False)
        after, old, m = after.float(), before[idx], mask[idx].float()
        change = (after - old) * m
        sign = correct[idx]
        add("diag/logp_change_correct", change[sign].sum(), m[sign].sum())
        add("diag/logp_change_incorrect", change[~sign].sum(), m[~sign].sum())
        add("diag/unsampled_mass_change", ((old.exp() - after.exp()) * m).sum(), m.sum())
