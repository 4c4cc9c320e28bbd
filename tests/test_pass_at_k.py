"""pass@k against brute-force enumeration (small n) and the exact closed form (large n)."""

import itertools
import math
from fractions import Fraction

import pytest

from nsr_lightning.metrics import ks_for, pass_at_k, pass_at_k_table


def brute_force(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (c correct) that hold at least one correct sample."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12)


def exact(n: int, c: int, k: int) -> float:
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


@pytest.mark.parametrize("n", [256, 1000, 1024, 4096])
def test_matches_closed_form_for_large_n(n):
    for c in [0, 1, 2, 7, n // 3, n // 2, n - 300 if n > 300 else n - 1, n - 1, n]:
        for k in ks_for(n):
            got, want = pass_at_k(n, c, k), exact(n, c, k)
            assert got == pytest.approx(want, rel=1e-9, abs=1e-15), (n, c, k)


def test_known_values():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 3 of the 6 pairs hold the correct one
    assert pass_at_k(1024, 1, 1024) == 1.0


def test_tiny_probabilities_are_not_lost():
    # 1 correct of 1024, k = 1: exactly 1/1024 (a naive 1 - product would be fine, but c
    # small and k large stress cancellation): compare relative error.
    assert pass_at_k(1024, 1, 1) == pytest.approx(1 / 1024, rel=1e-12)


@pytest.mark.parametrize(
    "args", [(0, 0, 1), (4, 5, 1), (4, 1, 5), (4, 1, 0), (4, -1, 1), (4.5, 1, 1), (True, 1, 1)]
)
def test_rejects_impossible_arguments(args):
    with pytest.raises(ValueError):
        pass_at_k(*args)


def test_ks_and_table():
    assert ks_for(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert ks_for(6) == [1, 2, 4, 6]
    table = pass_at_k_table([(4, 0), (4, 4), (4, 1)])
    assert table[1] == pytest.approx((0 + 1 + 0.25) / 3)
    assert table[4] == pytest.approx(2 / 3)
