"""Unbiased pass@k (Chen et al., 2021), as used in the paper's evaluation (section 3).

pass@k = 1 - C(n - c, k) / C(n, k), computed as 1 - prod_{i=n-c+1..n} (1 - k / i),
which never forms a large binomial coefficient and is exact to float precision for any n.
"""

from __future__ import annotations

import math


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n
    (c of them correct) is correct. Raises ValueError on impossible arguments."""
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or int(value) != value:
            raise ValueError(f"pass_at_k: {name} must be an integer, got {value!r}")
    n, c, k = int(n), int(c), int(k)
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs n >= 1, 0 <= c <= n, 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # log-space product: sum of log1p(-k / i) for i = n-c+1 .. n
    log_fail = math.fsum(math.log1p(-k / i) for i in range(n - c + 1, n + 1))
    return -math.expm1(log_fail)


def ks_for(n: int) -> list[int]:
    """k = 1, 2, 4, ..., up to n (and n itself when n is not a power of two)."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


def pass_at_k_table(counts: list[tuple[int, int]], ks: list[int] | None = None) -> dict[int, float]:
    """Mean pass@k over problems, from (n, c) pairs. All problems must share n >= max(ks)."""
    if not counts:
        raise ValueError("pass_at_k_table: no problems")
    n_min = min(n for n, _ in counts)
    ks = ks or ks_for(n_min)
    return {k: sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) for k in ks}
