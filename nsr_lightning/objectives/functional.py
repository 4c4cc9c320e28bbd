"""Tensor functions shared by the objectives: loss aggregation, KL estimators, group statistics,
masked whitening. Pure tensor code; shapes in comments.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nsr_lightning.config_rules import KL_ESTIMATORS, LOSS_AGG_MODES

K3_CAP = 10.0  # |k3| per token at most (verl's low_var_kl clamp)


def aggregate(values: Tensor, mask: Tensor, mode: str, norm_length: int | None = None) -> Tensor:
    """Reduce per-token values (B, T) over the tokens where mask is 1.

    token-mean: every token of the mini-batch weighs the same (DAPO, the paper's setting).
    seq-mean-token-mean: mean over tokens within a sequence, then over sequences (GRPO paper).
    seq-mean-token-sum-norm: token sum per sequence divided by a constant length (Dr.GRPO).
    """
    mask = mask.to(values.dtype)
    if mode == "token-mean":
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    if mode == "seq-mean-token-mean":
        per_seq = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # (B,)
        return per_seq.mean()
    if mode == "seq-mean-token-sum-norm":
        length = float(norm_length or values.shape[-1])
        return ((values * mask).sum(-1) / length).mean()
    raise ValueError(f"loss_agg_mode must be one of {', '.join(LOSS_AGG_MODES)}; got {mode!r}")


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from tokens sampled from pi_theta.

    With log r = log pi_ref(y) - log pi_theta(y) (Schulman, "Approximating KL divergence", 2020):
    k1 = -log r (unbiased, high variance, can be negative); k2 = (log r)^2 / 2 (biased, low
    variance); k3 = r - 1 - log r (unbiased, always >= 0: GRPO's "low_var_kl"). The log-ratio is
    clamped to [-20, 20] so that exp() cannot overflow on a diverged policy, and k3 per token to
    [-10, 10], as verl's and the paper's code do (log r = 25 gives 10, not 4.85e8; no gradient
    flows through a capped token).
    """
    log_r = (ref_logprobs - logprobs).clamp(-20.0, 20.0)  # (B, T)
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r.square()
    if estimator == "k3":
        return (torch.exp(log_r) - 1.0 - log_r).clamp(-K3_CAP, K3_CAP)
    raise ValueError(f"kl_estimator must be one of {', '.join(KL_ESTIMATORS)}; got {estimator!r}")


def group_stats(rewards: Tensor, group_ids: Tensor, extra_value: float = 0.0, extra_count: int = 0):
    """Per-sample statistics of the sample's group (all responses to one prompt).

    Optionally counts `extra_count` virtual samples of reward `extra_value` in every group
    (NGRPO's advantage calibration). Returns (mean, unbiased std, n_correct, size) per sample,
    each (N,); the std is 0 for a group of one.
    """
    inverse = dense_group_ids(group_ids)
    r = rewards.to(torch.float64)
    zeros = torch.zeros(
        len(inverse), dtype=torch.float64, device=rewards.device
    )  # slots past the groups: unused
    size = zeros.index_add(0, inverse, torch.ones_like(r)) + extra_count  # (G,)
    total = zeros.index_add(0, inverse, r) + extra_count * extra_value
    mean = total / size
    sq = zeros.index_add(0, inverse, (r - mean[inverse]).square())
    sq = sq + extra_count * (extra_value - mean).square()
    std = (sq / (size - 1).clamp(min=1)).sqrt()
    n_correct = zeros.index_add(0, inverse, (rewards > 0).to(torch.float64))
    return mean[inverse], std[inverse], n_correct[inverse], (size - extra_count)[inverse]


def dense_group_ids(group_ids: Tensor) -> Tensor:
    """(N,) group ids -> (N,) ids 0, 1, ... in the order of the values (what `torch.unique(...,
    return_inverse=True)` gives), without reading anything on the host: no wait for the device.
    There are at most N groups, so tensors of N slots hold every group's sums."""
    if len(group_ids) == 0:
        return group_ids.long()
    sorted_ids, order = torch.sort(group_ids, stable=True)
    starts = torch.zeros(len(group_ids), dtype=torch.long, device=group_ids.device)
    starts[1:] = (sorted_ids[1:] != sorted_ids[:-1]).long()  # 1 where a new group begins
    dense = torch.empty_like(starts)
    dense[order] = starts.cumsum(0)
    return dense


def group_outcomes(correct: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-group (prompt) counts, the paper's Figure 4: (groups, fully solved groups, fully
    unsolved groups), 0-dim tensors on the device (no host read)."""
    inverse = dense_group_ids(group_ids)
    zeros = torch.zeros(len(inverse), device=correct.device)  # N slots: at most N groups
    n_correct = zeros.index_add(0, inverse, correct.float())
    n_total = zeros.index_add(0, inverse, torch.ones_like(correct, dtype=torch.float))
    present = n_total > 0
    return present.sum(), ((n_correct == n_total) & present).sum(), ((n_correct == 0) & present).sum()


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def masked_var(values: Tensor, mask: Tensor) -> Tensor:
    """Unbiased variance of the masked values."""
    mask = mask.to(values.dtype)
    n = mask.sum()
    mean = (values * mask).sum() / n.clamp(min=1.0)
    return ((values - mean).square() * mask).sum() / (n - 1).clamp(min=1.0)


def masked_whiten(values: Tensor, mask: Tensor, eps: float = 1e-8, all_sum=None) -> Tensor:
    """(values - mean) / std over the masked entries (unbiased std); zero outside the mask.
    all_sum: sums a tensor over the ranks that hold the rest of the batch (the mean and std
    are then the whole batch's, as when one process holds it); None: these values only."""
    all_sum = all_sum or (lambda t: t)
    m = mask.to(values.dtype)
    total, n = all_sum(torch.stack([(values * m).sum(), m.sum()])).unbind()
    mean = total / n.clamp(min=1.0)
    var = all_sum(((values - mean).square() * m).sum()) / (n - 1).clamp(min=1.0)
    return (values - mean) / (var.sqrt() + eps) * m
