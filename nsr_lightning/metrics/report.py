"""Reporting pass@k results: a plain-text table, a curve plot (PNG), W&B table and line plot.

Shared by the validation callback (``val/<dataset>/pass@k``) and ``evaluate``
(``eval/<dataset>/pass@k``). matplotlib and wandb are imported only when used.
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)


def format_table(history: list[dict]) -> str:
    """Plain-text table: one row per (evaluation, dataset), one column per k.

    Each entry of ``history`` has ``tag``, ``dataset`` and ``pass@k`` ({k: value}).
    """
    ks = sorted({k for h in history for k in h["pass@k"]})
    head = f"{'pass@k':<14}{'dataset':<12}" + "".join(f"{'k=' + str(k):>8}" for k in ks)
    lines = [head, "-" * len(head)]
    for h in history:
        cells = "".join(f"{h['pass@k'][k]:>8.3f}" if k in h["pass@k"] else f"{'':>8}" for k in ks)
        lines.append(f"{h['tag']:<14}{h['dataset']:<12}{cells}")
    return "\n".join(lines)


def log_wandb_curve(logger, results: dict[str, dict[int, float]], step: int, prefix: str = "val") -> None:
    """One W&B table and line plot of pass@k against k per data set."""
    import wandb

    for name, table in results.items():
        data = wandb.Table(columns=["k", "pass@k"], data=[[k, v] for k, v in table.items()])
        logger.experiment.log(
            {
                f"{prefix}/{name}/pass@k_table": data,
                f"{prefix}/{name}/pass@k_curve": wandb.plot.line(
                    data, "k", "pass@k", title=f"{name} pass@k (step {step})"
                ),
            }
        )


def plot_pass_at_k(results: dict[str, dict[int, float]], path: str, title: str = "pass@k") -> bool:
    """pass@k against k (log2 axis), one line per data set, saved as a PNG. False (and a log
    line) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no pass@k plot (pip install matplotlib)")
        return False
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, table in results.items():
        ks = sorted(table)
        ax.plot(ks, [table[k] for k in ks], marker="o", label=name)
    all_ks = sorted({k for t in results.values() for k in t})
    ax.set_xscale("log", base=2)
    ax.set_xticks(all_ks, [str(k) for k in all_ks])
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("pass@k")
    ax.set_ylim(0, 1.02 if all(math.isfinite(v) for t in results.values() for v in t.values()) else None)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
