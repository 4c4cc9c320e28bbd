"""Figures of scripts/miniature.py: Figure 2 (pass@k), Figure 4 (dynamics), the lambda sweep, W&B.

Each plot function returns False when there is nothing to draw. Means over seeds; bands and
error bars are one standard deviation over seeds.
"""

from __future__ import annotations

import math

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


def plot_curves(path, rows: dict, labels: dict) -> bool:
    """Figure 2: pass@k against k, and pass@k minus the base model's (where a base row exists)."""
    if not rows:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
    base = rows.get("base")
    for m, r in rows.items():
        ks = sorted(r)
        mean = np.array([r[k][0] for k in ks])
        std = np.array([r[k][1] for k in ks])
        style = dict(color=COLORS.get(m), marker="o", ms=3, label=labels[m], lw=2 if m == "base" else 1.5)
        axes[0].plot(ks, mean, **style)
        axes[0].fill_between(ks, mean - std, mean + std, color=COLORS.get(m), alpha=0.12)
        if base is not None:
            delta = mean - np.array([base[k][0] for k in ks])
            axes[1].plot(ks, 100 * delta, **style)
            axes[1].fill_between(
                ks, 100 * (delta - std), 100 * (delta + std), color=COLORS.get(m), alpha=0.12
            )
    ks = sorted(next(iter(rows.values())))
    for ax, ylabel in zip(axes, ("pass@k", "pass@k - base model (points)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("k")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[1].axhline(0, color="black", lw=0.8)
    axes[0].legend(fontsize=8)
    axes[0].set_title("pass@k on held-out problems (mean ± std over seeds)")
    axes[1].set_title("difference to the base model")
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


def plot_dynamics(path, runs: dict, labels: dict) -> bool:
    """Figure 4: (a) held-out greedy accuracy, (b) held-out entropy, (c) correct ratio,
    (d) fully-solved ratio per training step (c, d: moving average of 5 steps)."""
    trained = [m for m in labels if m in runs and m != "base"]
    if not trained:
        return False
    fig, axes = plt.subplots(1, 4, figsize=(18, 4), dpi=110)
    panels = [
        ("heldout", "greedy_accuracy", "(a) greedy accuracy, held-out"),
        ("heldout", "entropy", "(b) entropy, held-out (nats/token)"),
        ("train", "rollout/correct_ratio", "(c) correct ratio, training batch"),
        ("train", "rollout/fully_solved_ratio", "(d) fully-solved ratio, training batch"),
    ]
    for ax, (source, key, title) in zip(axes, panels, strict=True):
        for m in trained:
            if source == "heldout":
                series = [
                    ([h["step"] for h in r["heldout"]], [h[key] for h in r["heldout"]])
                    for r in runs[m].values()
                ]
            else:
                series = [
                    (r["train"]["step"], list(_smooth(np.array(r["train"][key])))) for r in runs[m].values()
                ]
            if not all(s for s, _ in series):
                continue
            steps, mean, std = _mean_over_seeds(series)
            ax.plot(
                steps,
                mean,
                color=COLORS.get(m),
                label=labels[m],
                marker="o" if source == "heldout" else None,
                ms=3,
            )
            ax.fill_between(steps, mean - std, mean + std, color=COLORS.get(m), alpha=0.12)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_sweep(path, points: dict, rows: dict, labels: dict, n: int) -> bool:
    """pass@1 (y) against pass@n and against a middle k (x) for W-REINFORCE's lambda; other
    methods as reference marks. pass@n alone can be coarse (one problem = 1 / problems)."""
    if not points:
        return False
    mid = min(32, n)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), dpi=110)
    lams = sorted(points)
    for ax, k in zip(axes, (n, mid), strict=True):
        xs = [100 * points[lam][f"pass@{k}"][0] for lam in lams]
        ys = [100 * points[lam]["pass@1"][0] for lam in lams]
        ax.plot(xs, ys, color="tab:green", lw=1, zorder=1)
        for lam, x, y in zip(lams, xs, ys, strict=True):
            p = points[lam]
            ax.errorbar(
                x,
                y,
                xerr=100 * p[f"pass@{k}"][1],
                yerr=100 * p["pass@1"][1],
                color="tab:green",
                fmt="o",
                capsize=3,
            )
            ax.annotate(f"λ={lam:g}", (x, y), textcoords="offset points", xytext=(6, 4), fontsize=9)
        for m in ("base", "psr", "grpo", "ppo"):
            if m in rows and k in rows[m]:
                ax.scatter(
                    100 * rows[m][k][0],
                    100 * rows[m][1][0],
                    color=COLORS[m],
                    marker="s",
                    label=labels[m],
                    zorder=2,
                )
        ax.set_xlabel(f"pass@{k} (%)")
        ax.set_ylabel("pass@1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    seeds = next(iter(points.values()))["seeds"]
    fig.suptitle(f"W-REINFORCE: λ from 0 (NSR) to 1 (REINFORCE); seeds {seeds}; squares: other methods")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def log_wandb(out, result: dict, labels: dict) -> None:
    """One offline W&B run with the table, pass@k line series, the lambda sweep and the PNGs."""
    import wandb

    run = wandb.init(
        project="nsr-lightning", name="miniature", dir=str(out), mode="offline", config=result["settings"]
    )
    table = result["table"]
    ks = sorted({int(k) for r in table.values() for k in r})
    cols = ["method", *[f"pass@{k}" for k in ks], *[f"pass@{k}_std" for k in ks]]
    data = [
        [labels.get(m, m), *[r[str(k)]["mean"] for k in ks], *[r[str(k)]["std"] for k in ks]]
        for m, r in table.items()
    ]
    run.log({"miniature/table": wandb.Table(columns=cols, data=data)})
    run.log(
        {
            "miniature/pass@k": wandb.plot.line_series(
                xs=[math.log2(k) for k in ks],
                ys=[[r[str(k)]["mean"] for k in ks] for r in table.values()],
                keys=[labels.get(m, m) for m in table],
                title="pass@k (x = log2 k)",
                xname="log2 k",
            )
        }
    )
    points = result["lambda_sweep"]
    if points:
        keys = [k for k in next(iter(points.values())) if k.startswith("pass@")]
        data = [[float(lam), *(p[k]["mean"] for k in keys)] for lam, p in points.items()]
        run.log({"miniature/lambda_sweep": wandb.Table(columns=["lambda", *keys], data=data)})
    for name, file in result["figures"].items():
        run.log({f"miniature/{name}": wandb.Image(str(out / file))})
    run.finish()
