"""Bootstrap intervals of pass@k (nsr_lightning/metrics/bootstrap.py) on known cases."""

import math

import numpy as np
import pytest

from nsr_lightning.metrics import pass_at_k
from nsr_lightning.metrics.bootstrap import crossover_k_ci, mean_diff_ci, pass_at_k_ci, pass_at_k_diff_ci


def test_no_variation_gives_a_zero_width_interval():
    ci = pass_at_k_ci([[2] * 10, [2] * 10], n=8, ks=[1, 4])
    for k, want in ((1, 0.25), (4, pass_at_k(8, 2, 4))):
        assert ci[k].estimate == pytest.approx(want)
        assert ci[k].lo == pytest.approx(want) and ci[k].hi == pytest.approx(want)


def test_problems_only_match_the_binomial_normal_interval():
    """One seed, 400 problems, n = k = 1, half solved: the mean of a Bernoulli(1/2) sample,
    standard error sqrt(1/4 / 400) = 0.025, so about 0.5 +- 1.96 x 0.025."""
    ci = pass_at_k_ci([1, 0] * 200, n=1, ks=[1], n_boot=4000)[1]
    assert ci.estimate == 0.5
    assert ci.lo == pytest.approx(0.5 - 1.96 * 0.025, abs=0.006)
    assert ci.hi == pytest.approx(0.5 + 1.96 * 0.025, abs=0.006)


def test_seeds_are_resampled():
    """Two seeds, one solving everything and one nothing: a replicate's mean is 0, 1/2 or 1
    (chances 1/4, 1/2, 1/4), so the 95 % interval is [0, 1] whatever the problems."""
    ci = pass_at_k_ci([[1] * 20, [0] * 20], n=1, ks=[1])[1]
    assert (ci.estimate, ci.lo, ci.hi) == pytest.approx((0.5, 0.0, 1.0), abs=1e-12)


def test_difference_is_paired_over_problems():
    """The method solves one more of n = 4 samples than the base on every problem: pass@1
    differs by exactly 1/4 everywhere, so the paired interval has width 0 although the
    problems' pass@1 varies a lot."""
    base = np.random.default_rng(1).integers(0, 4, size=50)
    diff = pass_at_k_diff_ci(base + 1, 4, base, 4, ks=[1])[1]
    assert diff.estimate == pytest.approx(0.25)
    assert diff.hi - diff.lo == pytest.approx(0.0, abs=1e-12)
    unpaired = pass_at_k_ci(base + 1, 4, ks=[1])[1]
    assert unpaired.hi - unpaired.lo > 0.1


def test_same_seed_same_interval_and_bad_shapes():
    data = np.random.default_rng(2).integers(0, 9, size=(3, 30))
    assert pass_at_k_ci(data, 8, [1, 8]) == pass_at_k_ci(data, 8, [1, 8])
    assert pass_at_k_ci(data, 8, [1], seed=1) != pass_at_k_ci(data, 8, [1], seed=2)
    assert not math.isnan(pass_at_k_diff_ci(data, 8, data[0], 8, [8])[8].lo)
    with pytest.raises(ValueError, match="same problems"):
        pass_at_k_diff_ci(data, 8, data[0][:5], 8, [1])
    with pytest.raises(ValueError, match="seeds x problems"):
        pass_at_k_ci(np.zeros((2, 2, 2), dtype=int), 8, [1])


def test_crossover_k_of_a_method_that_trades_coverage_for_pass_at_1():
    """Base: 1 correct of 8 on each of 200 problems, so pass@k = k / 8 (0.125, 0.25, 0.5, 1).
    Method: all 8 correct on 40 % of the problems and none on the rest, pass@k = 0.4 at every k.
    Differences +0.275, +0.15, -0.1, -0.6: the crossover is k = 4, and the problem share (0.4 +-
    about 0.035) never moves it past 0.25 or 0.5 in a replicate, so its interval is [4, 4]."""
    method = [8] * 80 + [0] * 120
    cross = crossover_k_ci(method, 8, [1] * 200, 8, ks=[1, 2, 4, 8])
    assert (cross.k, cross.lo, cross.hi) == (4, 4, 4)
    diff = pass_at_k_diff_ci(method, 8, [1] * 200, 8, ks=[1, 2, 4, 8])
    assert [round(diff[k].estimate, 6) for k in (1, 2, 4, 8)] == [0.275, 0.15, -0.1, -0.6]


def test_no_crossover_when_never_below_the_base():
    same = [[3, 5, 0, 8]] * 2
    cross = crossover_k_ci(same, 8, [3, 5, 0, 8], 8, ks=[1, 2, 4, 8])
    assert (cross.k, cross.lo, cross.hi) == (None, None, None)


def test_crossover_interval_spans_an_undecided_case():
    """A method equal to the base at k = 1 on average but below on half the problems: whether
    a replicate crosses at k = 1 depends on which problems it draws, so the interval reaches
    from k = 1 to a later k or none."""
    base = [4] * 100  # pass@1 = 0.5 everywhere
    method = [8] * 50 + [0] * 50  # pass@1 = 0.5 on average, pass@k = 0.5 at every k
    cross = crossover_k_ci(method, 8, base, 8, ks=[1, 2, 4, 8])
    assert cross.k == 2  # the estimate: k = 1 ties (not below), k = 2 is below
    assert cross.lo == 1 and cross.hi == 2


def test_mean_difference_of_any_value_is_paired_over_problems():
    """Distinct counts 3 above the base's on every problem: the difference is 3 with an interval
    of width 0 whatever the problems drawn; one seed of a method 6 above, one 0: [0, 6]."""
    base = [[1, 4, 7, 2]]
    same_shift = mean_diff_ci([[4, 7, 10, 5], [4, 7, 10, 5]], base)
    assert (same_shift.estimate, same_shift.lo, same_shift.hi) == (3.0, 3.0, 3.0)
    seeds = mean_diff_ci([[7, 10, 13, 8], [1, 4, 7, 2]], base)
    assert seeds.estimate == 3.0 and seeds.lo == 0.0 and seeds.hi == 6.0
