"""Report of scripts/miniature.py: reads every run's outputs, writes the table, figures and JSON.

Table 1 of the paper (pass@k, best in bold, second best underlined) with mean +- std over seeds
(std with ddof 1; 0 for one seed), Figure 2 (pass@k curves), Figure 4 (training dynamics) and a
lambda sweep of W-REINFORCE (pass@1 against pass@n). Can be re-run alone on a finished folder:
`python scripts/miniature_report.py runs/miniature [--wandb]`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import sys
from pathlib import Path

LABELS = {
    "base": "Base model",
    "psr": "PSR",
    "nsr": "NSR",
    "w_reinforce": "W-REINFORCE (0.1)",
    "reinforce": "REINFORCE",
    "grpo": "GRPO",
    "ppo": "PPO",
}
SWEEP_SOURCES = {0.0: "nsr", 0.1: "w_reinforce", 1.0: "reinforce"}  # lambda -> the run reused
TRAIN_KEYS = ("rollout/correct_ratio", "rollout/fully_solved_ratio", "rollout/entropy")


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def read_run(run_dir: Path) -> dict | None:
    """pass@k, held-out dynamics and per-step training metrics of one finished run."""
    summary = run_dir / "eval" / "summary.json"
    if not summary.exists():
        return None
    data = json.loads(summary.read_text())["datasets"]["synthetic"]
    run = {"pass@k": {int(k): v for k, v in data["pass@k"].items()}, "problems": data["problems"]}
    times = run_dir / "times.json"
    run["times"] = json.loads(times.read_text()) if times.exists() else {}
    heldout = sorted(run_dir.glob("csv/version_*/heldout.json"))
    run["heldout"] = json.loads(heldout[-1].read_text()) if heldout else []
    metrics = sorted(run_dir.glob("csv/version_*/metrics.csv"))
    train: dict[str, list] = {"step": [], **{k: [] for k in TRAIN_KEYS}}
    if metrics:
        for row in csv.DictReader(metrics[-1].open()):
            if row.get("rollout/correct_ratio"):
                train["step"].append(int(row["step"]))
                for k in TRAIN_KEYS:
                    train[k].append(float(row[k]) if row.get(k) else math.nan)
    run["train"] = train
    return run


def collect(out: Path, jobs: list[dict]) -> dict[str, dict[int, dict]]:
    runs: dict[str, dict[int, dict]] = {}
    for job in jobs:
        run = read_run(out / "runs" / job["method"] / f"seed{job['seed']}")
        if run is not None:
            runs.setdefault(job["method"], {})[job["seed"]] = run
    return runs


def table_rows(runs: dict) -> dict[str, dict[int, tuple[float, float]]]:
    """method -> k -> (mean, std) over seeds, for the table's methods that finished."""
    rows = {}
    for method in LABELS:
        if method in runs:
            ks = sorted(next(iter(runs[method].values()))["pass@k"])
            rows[method] = {k: mean_std([r["pass@k"][k] for r in runs[method].values()]) for k in ks}
    return rows


def ranks(rows: dict, k: int) -> dict[str, int]:
    """1 = best, 2 = second best at this k (means compared at the table's precision, ties share)."""
    means = sorted({round(100 * r[k][0], 1) for r in rows.values()}, reverse=True)
    return {m: means.index(round(100 * r[k][0], 1)) + 1 for m, r in rows.items()}


def write_table(out: Path, rows: dict, seeds: dict[str, int]) -> str:
    ks = sorted(next(iter(rows.values())))
    head = "| method | seeds | " + " | ".join(f"k={k}" for k in ks) + " |"
    lines = [head, "|---" * (len(ks) + 2) + "|"]
    rank = {k: ranks(rows, k) for k in ks}
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seeds", "k", "pass@k_mean", "pass@k_std", "rank"])
        for m, r in rows.items():
            cells = []
            for k in ks:
                mean, std = r[k]
                text = f"{100 * mean:.1f} ± {100 * std:.1f}"
                cells.append(
                    f"**{text}**" if rank[k][m] == 1 else f"<u>{text}</u>" if rank[k][m] == 2 else text
                )
                w.writerow([m, seeds[m], k, f"{mean:.6f}", f"{std:.6f}", rank[k][m]])
            lines.append(f"| {LABELS[m]} | {seeds[m]} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    return text


def sweep_points(runs: dict, sweep_extra, n: int) -> dict[float, dict]:
    """lambda -> pass@k for every k (mean, std over the seeds every lambda has) and the run it comes from."""
    sources = dict(SWEEP_SOURCES) | {lam: f"w_reinforce_l{lam:g}" for lam in sweep_extra}
    sources = {lam: m for lam, m in sources.items() if m in runs}
    # only the seeds every lambda has, so the frontier compares like with like
    seeds = set.intersection(*(set(runs[m]) for m in sources.values())) if sources else set()
    points = {}
    for lam, method in sorted(sources.items()):
        if seeds:
            vals = [runs[method][s] for s in sorted(seeds)]
            points[lam] = {
                "run": method,
                "seeds": sorted(seeds),
                **{f"pass@{k}": mean_std([r["pass@k"][k] for r in vals]) for k in sorted(vals[0]["pass@k"])},
            }
    return points


def same_seeds(runs: dict, points: dict) -> dict:
    """The table's rows on the sweep's seeds only (its reference marks compare like with like)."""
    seeds = next(iter(points.values()))["seeds"] if points else []
    kept = {m: {s: r for s, r in by_seed.items() if s in seeds} for m, by_seed in runs.items()}
    return table_rows({m: by_seed for m, by_seed in kept.items() if len(by_seed) == len(seeds)})


def write_report(
    out: Path, cfg: dict, jobs: list[dict], *, wall_s: float, machine: dict, sweep_extra
) -> dict:
    from miniature_plots import log_wandb, plot_curves, plot_dynamics, plot_sweep

    out = Path(out)
    runs = collect(out, jobs)
    rows = table_rows(runs)
    n = cfg["n"]
    points = sweep_points(runs, sweep_extra, n)
    table = write_table(out, rows, {m: len(runs[m]) for m in rows}) if rows else ""
    figures = {
        "pass_at_k": plot_curves(out / "pass_at_k.png", rows, LABELS),
        "dynamics": plot_dynamics(out / "dynamics.png", runs, LABELS),
        "lambda_sweep": plot_sweep(out / "lambda_sweep.png", points, same_seeds(runs, points), LABELS, n),
    }
    expected = {(j["method"], j["seed"]) for j in jobs}
    finished = {(m, s) for m, by_seed in runs.items() for s in by_seed}
    result = {
        "settings": {k: v for k, v in cfg.items() if k != "out"},
        "machine": machine,
        "wall_s": round(wall_s, 1) if wall_s is not None else None,  # None: a run cut short
        "missing_runs": sorted(f"{m} seed {s}" for m, s in expected - finished),
        "table": {m: {str(k): {"mean": v[0], "std": v[1]} for k, v in r.items()} for m, r in rows.items()},
        "lambda_sweep": {
            f"{lam:g}": {
                "run": p["run"],
                "seeds": p["seeds"],
                **{k: {"mean": v[0], "std": v[1]} for k, v in p.items() if k.startswith("pass@")},
            }
            for lam, p in points.items()
        },
        "runs": {m: {str(s): r for s, r in by_seed.items()} for m, by_seed in runs.items()},
        "figures": {k: f"{k}.png" for k, ok in figures.items() if ok},
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    if cfg.get("logger") == "wandb":
        log_wandb(out, result, LABELS)
    if table:
        print(table)
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="re-write the report of a scripts/miniature.py folder")
    parser.add_argument("folder")
    parser.add_argument("--wandb", action="store_true", help="also log it to an offline W&B run")
    # a run cut short has no results.json: give miniature.py's options again after the folder
    args, options = parser.parse_known_args()
    folder = Path(args.folder)
    sys.path.insert(0, str(Path(__file__).parent))
    from miniature import SWEEP_EXTRA, parse, plan

    if (folder / "results.json").exists():
        saved = json.loads((folder / "results.json").read_text())
        cfg, wall, machine = saved["settings"], saved["wall_s"], saved["machine"]
    else:  # a run cut short: its settings from the same options; wall time unknown
        cfg, wall, machine = (
            parse(["--out", str(folder), *options]),
            None,
            {"cpus": os.cpu_count()},
        )
    cfg = {**cfg, "out": str(folder)} | ({"logger": "wandb"} if args.wandb else {})
    write_report(folder, cfg, plan(cfg), wall_s=wall, machine=machine, sweep_extra=SWEEP_EXTRA)
