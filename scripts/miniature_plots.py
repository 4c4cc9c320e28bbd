"""Figures of scripts/miniature.py: Figure 2 (pass@k), Figure 4 (dynamics), the lambda frontier
and the per-sign diagnostics, one row per training regime.

Each plot function returns False when there is nothing to draw. pass@k bands and error bars are
95 % bootstrap intervals over problems and seeds; dynamics bands are one standard deviation over
seeds.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {
    "base": "black",
    "psr": "tab:red",
    "nsr": "tab:blue",
    "w_reinforce": "tab:green",
    "reinforce": "tab:purple",
    "grpo": "tab:orange",
    "ppo": "tab:brown",
}


def plot_curves(path, stats: dict, labels: dict) -> bool:
    """Figure 2, one row per regime: pass@k against k, and pass@k minus the base model's, each
    with its 95 % bootstrap interval as a band."""
    if not stats:
        return False
    fig, axes = plt.subplots(len(stats), 2, figsize=(12, 4.5 * len(stats)), dpi=110, squeeze=False)
    for row, (regime, methods) in zip(axes, stats.items(), strict=True):
        for m, s in methods.items():
            ks = sorted(s["pass@k"])
            style = dict(color=COLORS.get(m), marker="o", ms=3, label=labels[m], lw=2 if m == "base" else 1.5)
            for ax, key in zip(row, ("pass@k", "minus_base"), strict=True):
                if key not in s:
                    continue
                scale = 1 if key == "pass@k" else 100
                est, lo, hi = (np.array([scale * s[key][k][x] for k in ks]) for x in ("estimate", "lo", "hi"))
                ax.plot(ks, est, **style)
                ax.fill_between(ks, lo, hi, color=COLORS.get(m), alpha=0.12)
        ks = sorted(next(iter(methods.values()))["pass@k"])
        for ax, ylabel in zip(row, ("pass@k", "pass@k - base model (points)"), strict=True):
            ax.set_xscale("log", base=2)
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.set_xlabel("k")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        row[1].axhline(0, color="black", lw=0.8)
        row[0].legend(fontsize=8)
        row[0].set_title(f"{regime}: pass@k on the held-out set (95 % interval)")
        row[1].set_title(f"{regime}: difference to the base model (paired 95 % interval)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _smooth(values: np.ndarray, window: int = 5) -> np.ndarray:
    if len(values) < window:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def _mean_over_seeds(series: list[tuple[list, list]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs' (steps, values) -> common steps, mean, std (only steps every run has)."""
    common = sorted(set.intersection(*(set(s) for s, _ in series)))
    stack = np.array([[dict(zip(s, v, strict=True))[t] for t in common] for s, v in series], dtype=float)
    return np.array(common), stack.mean(0), stack.std(0, ddof=1) if len(series) > 1 else np.zeros(len(common))


def _series(run: dict, source: str, key: str) -> tuple[list, list]:
    if source == "heldout":
        return [h["step"] for h in run["heldout"]], [h[key] for h in run["heldout"]]
    points = run["train"].get(key, [])
    values = np.array([v for _, v in points])
    return [s for s, _ in points], list(_smooth(values) if source == "train" else values)


def _panels(path, runs: dict, labels: dict, panels: list, methods=None) -> bool:
    """One row per regime, one panel per (source, key, title); mean +- std over seeds."""
    if not runs:
        return False
    fig, axes = plt.subplots(
        len(runs), len(panels), figsize=(4.5 * len(panels), 4 * len(runs)), dpi=110, squeeze=False
    )
    for row, (regime, by_method) in zip(axes, runs.items(), strict=True):
        trained = [m for m in labels if m in by_method and m != "base" and (methods is None or m in methods)]
        for ax, (source, key, title) in zip(row, panels, strict=True):
            for m in trained:
                series = [_series(r, source, key) for r in by_method[m].values()]
                if not all(s for s, _ in series):
                    continue
                steps, mean, std = _mean_over_seeds(series)
                ax.plot(
                    steps,
                    mean,
                    color=COLORS.get(m),
                    label=labels[m],
                    marker="o" if source != "train" else None,
                    ms=3,
                )
                ax.fill_between(steps, mean - std, mean + std, color=COLORS.get(m), alpha=0.12)
            ax.set_title(f"{regime}: {title}", fontsize=9)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_dynamics(path, runs: dict, labels: dict) -> bool:
    """Figure 4: held-out greedy accuracy and entropy, correct and fully-solved ratios of the
    training batch (moving average of 5 steps), one row per regime."""
    return _panels(path, runs, labels, [
        ("heldout", "greedy_accuracy", "(a) greedy accuracy, held-out"),
        ("heldout", "entropy", "(b) entropy, held-out (nats/token)"),
        ("train", "rollout/correct_ratio", "(c) correct ratio, training batch"),
        ("train", "rollout/fully_solved_ratio", "(d) fully-solved ratio, training batch"),
    ])  # fmt: skip


def plot_diagnostics(path, runs: dict, labels: dict) -> bool:
    """The per-sign diagnostics over training (diag/*), one row per regime."""
    return _panels(path, runs, labels, [
        ("diag", "diag/grad_norm_pos", "gradient norm, correct samples' part"),
        ("diag", "diag/grad_norm_neg", "gradient norm, incorrect samples' part"),
        ("diag", "diag/grad_cos", "cosine of the two parts"),
        ("diag", "diag/unsampled_mass_change", "mass moved onto unsampled tokens"),
    ], methods=("psr", "nsr", "w_reinforce", "reinforce", "grpo", "ppo"))  # fmt: skip


def plot_sweep(path, points: dict, stats: dict, labels: dict) -> bool:
    """The lambda frontier: pass@1 (y) against pass@n (x) for W-REINFORCE's lambda, with 95 %
    intervals; the other methods of the same regime as reference marks."""
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 5), dpi=110)
    lams = sorted(points)
    key = next(k for k in points[lams[0]] if k.startswith("pass@") and k != "pass@1")

    def xy(p):
        return 100 * p[key]["estimate"], 100 * p["pass@1"]["estimate"]

    ax.plot(*zip(*(xy(points[lam]) for lam in lams), strict=True), color="tab:green", lw=1, zorder=1)
    for lam in lams:
        p = points[lam]
        x, y = xy(p)
        xerr = [[x - 100 * p[key]["lo"]], [100 * p[key]["hi"] - x]]
        yerr = [[y - 100 * p["pass@1"]["lo"]], [100 * p["pass@1"]["hi"] - y]]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, color="tab:green", fmt="o", capsize=3)
        ax.annotate(f"λ={lam:g}", (x, y), textcoords="offset points", xytext=(6, 4), fontsize=9)
    n = int(key.split("@")[1])
    for m in ("base", "psr", "grpo", "ppo"):
        if m in stats:
            s = stats[m]["pass@k"]
            ax.scatter(
                100 * s[n]["estimate"], 100 * s[1]["estimate"], color=COLORS[m], marker="s", label=labels[m]
            )
    ax.set_xlabel(f"{key} (%)")
    ax.set_ylabel("pass@1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("W-REINFORCE: λ from 0 (NSR) to 1 (REINFORCE)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
