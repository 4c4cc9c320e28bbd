"""95 % bootstrap confidence intervals for pass@k over problems and training seeds (pure numpy).

The data of a method: `correct[s][p]`, the number of correct samples out of `n` on problem p
in the evaluation of training seed s (S seeds x P problems; one row for an untrained base model).
Its pass@k is the mean over seeds and problems of the unbiased estimator `pass_at_k(n, c, k)`.

Each bootstrap replicate resamples the P problems with replacement and, independently, the S
seeds with replacement (a two-way bootstrap: problems and seeds are the two sources of
variation), and recomputes the mean over the resampled (seed, problem) cells. The interval is
the percentile interval of the replicates: the (1 - level) / 2 and (1 + level) / 2 quantiles.

A method-minus-base difference is paired over problems: the base is evaluated on the same
problems, so a replicate uses the same resampled problems for both, and resamples the method's
seeds and the base's own rows (its seeds, if it has several) independently. A difference that
is the same on every problem then has an interval of width 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nsr_lightning.metrics.pass_at_k import pass_at_k


@dataclass(frozen=True)
class Interval:
    """The estimate on the data as given, and its bootstrap interval [lo, hi]."""

    estimate: float
    lo: float
    hi: float


def _table(correct, n: int, k: int) -> np.ndarray:
    """(S, P) pass@k of each (seed, problem) cell."""
    c = np.asarray(correct)
    if c.ndim == 1:
        c = c[None, :]
    if c.ndim != 2 or c.size == 0:
        raise ValueError(f"correct must be seeds x problems (or one row of problems); got shape {c.shape}")
    return np.array([[pass_at_k(n, int(x), k) for x in row] for row in c], dtype=np.float64)


def _weights(rng: np.random.Generator, size: int, n_boot: int) -> np.ndarray:
    """(n_boot, size) resampling weights: how often each item is drawn, over size draws."""
    draws = rng.integers(0, size, size=(n_boot, size))
    return np.stack([np.bincount(row, minlength=size) for row in draws]).astype(np.float64) / size


def _interval(estimate: float, replicates: np.ndarray, level: float) -> Interval:
    lo, hi = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(estimate), float(lo), float(hi))


def _mean(table: np.ndarray, seeds: np.ndarray, problems: np.ndarray) -> np.ndarray:
    """Replicates of the mean: sum over s, p of u_bs V_sp w_bp (weights sum to 1 each)."""
    return np.einsum("bs,sp,bp->b", seeds, table, problems)


def pass_at_k_ci(
    correct, n: int, ks: list[int], *, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> dict[int, Interval]:
    """pass@k of each k in `ks` with its bootstrap interval over problems and seeds."""
    rng = np.random.default_rng(seed)
    tables = {k: _table(correct, n, k) for k in ks}
    s, p = next(iter(tables.values())).shape
    seeds, problems = _weights(rng, s, n_boot), _weights(rng, p, n_boot)
    return {k: _interval(t.mean(), _mean(t, seeds, problems), level) for k, t in tables.items()}


def _paired_replicates(tables: list[tuple[np.ndarray, np.ndarray]], n_boot: int, seed: int):
    """(estimates (K,), replicates (n_boot, K)) of mean(method) - mean(base) for K pairs of
    (S, P) and (B, P) tables, one resampling of problems and of each side's rows shared by all."""
    rng = np.random.default_rng(seed)
    method, reference = tables[0]
    if method.shape[1] != reference.shape[1]:
        raise ValueError(
            f"method and base need the same problems; got {method.shape[1]} and {reference.shape[1]}"
        )
    problems = _weights(rng, method.shape[1], n_boot)
    seeds, base_rows = _weights(rng, method.shape[0], n_boot), _weights(rng, reference.shape[0], n_boot)
    estimates = np.array([m.mean() - b.mean() for m, b in tables])
    reps = np.stack([_mean(m, seeds, problems) - _mean(b, base_rows, problems) for m, b in tables], axis=1)
    return estimates, reps


def _diff_replicates(correct, n: int, base, base_n: int, ks: list[int], n_boot: int, seed: int):
    """`_paired_replicates` of method minus base pass@k, for each k of `ks`."""
    return _paired_replicates([(_table(correct, n, k), _table(base, base_n, k)) for k in ks], n_boot, seed)


def mean_diff_ci(values, base, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> Interval:
    """Mean of any per-(seed, problem) value (e.g. distinct correct responses) minus the base's,
    on the same problems, with the paired bootstrap interval of `pass_at_k_diff_ci`."""

    def rows(x) -> np.ndarray:
        a = np.asarray(x, dtype=np.float64)
        return a[None, :] if a.ndim == 1 else a

    estimates, reps = _paired_replicates([(rows(values), rows(base))], n_boot, seed)
    return _interval(estimates[0], reps[:, 0], level)


def pass_at_k_diff_ci(
    correct,
    n: int,
    base,
    base_n: int,
    ks: list[int],
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[int, Interval]:
    """pass@k of the method minus pass@k of the base (same problems, same order), each k in
    `ks`, with its paired bootstrap interval (module docstring)."""
    estimates, reps = _diff_replicates(correct, n, base, base_n, ks, n_boot, seed)
    return {k: _interval(estimates[i], reps[:, i], level) for i, k in enumerate(ks)}


@dataclass(frozen=True)
class Crossover:
    """The smallest k at which the method's pass@k falls below the base's (None: at no k of the
    list), and the bootstrap interval of that k (None as a bound: beyond the largest k)."""

    k: int | None
    lo: int | None
    hi: int | None


def crossover_k_ci(
    correct,
    n: int,
    base,
    base_n: int,
    ks: list[int],
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Crossover:
    """Crossover k of a method against the base, with the percentile interval of the crossover
    over the paired replicates of `pass_at_k_diff_ci` (the same resampling)."""
    ks = sorted(ks)
    estimates, reps = _diff_replicates(correct, n, base, base_n, ks, n_boot, seed)

    def first_below(diffs: np.ndarray) -> np.ndarray:  # index of the first k below 0; len(ks) = none
        below = diffs < 0
        return np.where(below.any(-1), below.argmax(-1), len(ks))

    lo, hi = np.quantile(first_below(reps), [(1 - level) / 2, (1 + level) / 2], method="nearest")
    pick = [*ks, None]
    return Crossover(pick[int(first_below(estimates[None])[0])], pick[int(lo)], pick[int(hi)])
