"""Report of scripts/miniature.py: reads every run's outputs, writes tables, figures, verdicts, JSON.

Every pass@k comes with a 95 % bootstrap interval over problems and training seeds, every
method-minus-base difference with a paired one (nsr_lightning.metrics.bootstrap), and each
method's crossover k (the smallest k where it falls below the base) with its interval. Can be
re-run alone on a finished folder: `python scripts/miniature_report.py runs/miniature`.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from pathlib import Path

from nsr_lightning.metrics import crossover_k_ci, ks_for, mean_diff_ci, pass_at_k_ci, pass_at_k_diff_ci

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
TRAIN_KEYS = (
    "rollout/correct_ratio", "rollout/fully_solved_ratio", "rollout/entropy", "train/clip_fraction", "train/updates",
    "diag/grad_norm_pos", "diag/grad_norm_neg", "diag/grad_cos", "diag/logp_change_correct",
    "diag/logp_change_incorrect", "diag/unsampled_mass_change",
)  # fmt: skip
BOOT = dict(n_boot=2000, seed=0)


def _csv_series(path: Path, diag_every: int) -> dict[str, list]:
    """(step, value) of each TRAIN_KEYS metric; diag/* only at the steps that computed them."""
    series: dict[str, list] = {k: [] for k in TRAIN_KEYS}
    for row in csv.DictReader(path.open()):
        for k in TRAIN_KEYS:
            step = int(row["step"])
            if row.get(k) and not (k.startswith("diag/") and diag_every and step % diag_every):
                series[k].append((step, float(row[k])))
    return series


def read_run(run_dir: Path, diag_every: int = 0) -> dict | None:
    """Per-problem counts, held-out dynamics, training series and timings of one finished run."""
    results = run_dir / "eval" / "final" / "results.jsonl"
    if not (run_dir / "eval" / "summary.json").exists():
        return None
    records = [json.loads(line) for line in results.open()]
    run = {"c": [r["c"] for r in records], "distinct": [r["distinct"] for r in records], "n": records[0]["n"]}
    times = run_dir / "times.json"
    run["times"] = json.loads(times.read_text()) if times.exists() else {}
    heldout = sorted(run_dir.glob("csv/version_*/heldout.json"))
    run["heldout"] = json.loads(heldout[-1].read_text()) if heldout else []
    metrics = sorted(run_dir.glob("csv/version_*/metrics.csv"))
    run["train"] = _csv_series(metrics[-1], diag_every) if metrics else {}
    return run


def collect(out: Path, jobs: list[dict], diag_every: int = 0) -> dict:
    """{regime: {method: {seed: run}}}; the base model's runs under every regime."""
    from miniature import run_dir_of

    runs: dict = {}
    cfg = {"out": str(out)}
    for job in jobs:
        run = read_run(run_dir_of(cfg, job), diag_every)
        if run is not None:
            runs.setdefault(job["regime"], {}).setdefault(job["method"], {})[job["seed"]] = run
    base = runs.pop(None, {})
    return {regime: {**base, **methods} for regime, methods in runs.items()} or (
        {"untrained": base} if base else {}
    )


def method_stats(by_seed: dict, base: dict | None) -> dict:
    """pass@k intervals, differences to the base, crossover, diversity and training summaries."""
    n = next(iter(by_seed.values()))["n"]
    ks = ks_for(n)
    correct = [r["c"] for r in by_seed.values()]
    out = {"seeds": sorted(by_seed), "n": n, "problems": len(correct[0])}
    out["pass@k"] = {k: vars(v) for k, v in pass_at_k_ci(correct, n, ks, **BOOT).items()}
    out["distinct_correct"] = statistics.fmean(x for r in by_seed.values() for x in r["distinct"])
    out["solved_at_n"] = statistics.fmean(sum(c > 0 for c in r["c"]) for r in by_seed.values())
    if base is not None and by_seed is not base:
        b = [r["c"] for r in base.values()]
        out["minus_base"] = {k: vars(v) for k, v in pass_at_k_diff_ci(correct, n, b, n, ks, **BOOT).items()}
        out["crossover"] = vars(crossover_k_ci(correct, n, b, n, ks, **BOOT))
    train = [r["train"] for r in by_seed.values() if r["train"]]
    summaries = (
        ("train/clip_fraction", "clip_fraction"),
        ("train/updates", "updates_per_step"),
        ("rollout/entropy", "final_entropy"),
    )
    for key, name in summaries:
        per_seed = [_tail_mean(t.get(key, []), all_steps=name != "final_entropy") for t in train]
        per_seed = [v for v in per_seed if v is not None]
        if per_seed:
            out[name] = statistics.fmean(per_seed)
    out["fit_s"] = [r["times"].get("fit_s") for r in by_seed.values()]
    return out


def _tail_mean(series: list, all_steps: bool, tail: int = 10) -> float | None:
    values = [v for _, v in series] if all_steps else [v for _, v in series[-tail:]]
    return statistics.fmean(values) if values else None


def _cell(v: dict, scale: float = 100) -> str:
    return f"{scale * v['estimate']:.1f} [{scale * v['lo']:.1f}, {scale * v['hi']:.1f}]"


def _signed(v: dict, unit: str = "") -> str:
    """A difference in points (x 100), nats or distinct responses; bold when its interval excludes 0."""
    mark = "**" if v["lo"] > 0 or v["hi"] < 0 else ""
    if unit == "nats":
        return f"{mark}{v['estimate']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]{mark} nats"
    if unit == "responses":
        return f"{mark}{v['estimate']:+.1f} [{v['lo']:+.1f}, {v['hi']:+.1f}]{mark} distinct correct responses"
    text = f"{mark}{100 * v['estimate']:+.1f} [{100 * v['lo']:+.1f}, {100 * v['hi']:+.1f}]{mark}"
    return f"{text} {unit}" if unit else text


def _k(value) -> str:
    return "none" if value is None else str(value)


def tables(stats: dict) -> str:
    """Table 1 per regime (pass@k with intervals) and the differences to the base model."""
    lines = []
    for regime, methods in stats.items():
        ks = ks_for(next(iter(methods.values()))["n"])
        head = "| method | " + " | ".join(f"k={k}" for k in ks) + " |"
        rule = "|---" * (len(ks) + 1) + "|"
        lines += [f"### {regime}: pass@k (%), 95 % interval over problems and seeds", "", head, rule]
        for m, s in methods.items():
            lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(_cell(s["pass@k"][k]) for k in ks) + " |")
        lines += ["", f"### {regime}: minus the base model (points; bold: the interval excludes 0)", ""]
        lines += [
            head[:-1]
            + "| crossover k | distinct correct / problem | updates / step | clip fraction | entropy |",
            rule + "---|---|---|---|---|",
        ]
        for m, s in methods.items():
            if "minus_base" not in s:
                cells = [""] * len(ks) + ["", f"{s['distinct_correct']:.1f}", "", "", ""]
            else:
                x = s["crossover"]
                cells = [_signed(s["minus_base"][k]) for k in ks]
                cells += [f"{_k(x['k'])} [{_k(x['lo'])}, {_k(x['hi'])}]", f"{s['distinct_correct']:.1f}"]
                cells += [
                    f"{s.get('updates_per_step', math.nan):.2f}",
                    f"{s.get('clip_fraction', math.nan):.3f}",
                    f"{s.get('final_entropy', math.nan):.3f}",
                ]
            lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def verdict(interval: dict, want: str) -> str:
    """'held' when the interval lies on the claimed side of 0, 'did not hold' when on the other."""
    above, below = interval["lo"] > 0, interval["hi"] < 0
    if want == "up":
        return "held" if above else "did not hold" if below else "cannot tell at this size"
    return "held" if below else "did not hold" if above else "cannot tell at this size"


def method_diff(a: dict, b: dict, k: int) -> dict:
    """Method a minus method b at k, paired over problems (b's seeds resampled as a base's)."""
    n = next(iter(a.values()))["n"]
    ca, cb = [r["c"] for r in a.values()], [r["c"] for r in b.values()]
    return vars(pass_at_k_diff_ci(ca, n, cb, n, [k], **BOOT)[k])


def verdicts(runs: dict, stats: dict) -> list[dict]:
    """One line per claim of the paper and regime: the evidence (an interval) and the verdict."""
    out = []
    for regime, s in stats.items():
        r = runs[regime]
        if not {"psr", "nsr"} <= set(s) or "base" not in s:
            continue
        n = s["psr"]["n"]

        seeds = len(s["psr"]["seeds"])

        def add(claim, evidence, want, regime=regime, unit="points", seeds=seeds):
            # an interval over seeds alone needs more than one seed
            judged = verdict(evidence, want) if unit != "nats" or seeds > 1 else "cannot tell at this size"
            out.append(
                {"regime": regime, "claim": claim, "interval": evidence, "unit": unit, "verdict": judged}
            )

        add("PSR raises pass@1 over the base", s["psr"]["minus_base"][1], "up")
        add(f"PSR lowers pass@{n} below the base", s["psr"]["minus_base"][n], "down")
        add("NSR raises pass@1 over the base", s["nsr"]["minus_base"][1], "up")
        add(f"NSR raises pass@{n} over the base", s["nsr"]["minus_base"][n], "up")
        add(f"NSR's pass@{n} is above PSR's", method_diff(r["nsr"], r["psr"], n), "up")
        if "w_reinforce" in s:
            add(f"W-REINFORCE's pass@{n} is above PSR's", method_diff(r["w_reinforce"], r["psr"], n), "up")
            add("W-REINFORCE's pass@1 is above NSR's", method_diff(r["w_reinforce"], r["nsr"], 1), "up")
        distinct = [[x["distinct"] for x in r[m].values()] for m in ("nsr", "psr")]
        add(
            "NSR keeps more distinct correct responses per problem than PSR",
            vars(mean_diff_ci(*distinct, **BOOT)),
            "up",
            unit="responses",
        )
        entropy = _entropy_diff(r["nsr"], r["psr"])
        if entropy is not None:
            add(
                "NSR keeps more entropy than PSR (last 10 steps, interval over seeds)",
                entropy,
                "up",
                unit="nats",
            )
    return out


def _entropy_diff(a: dict, b: dict) -> dict | None:
    """Mean final training entropy of a minus b, with the bootstrap interval over seeds (one
    value per seed: a table of one column; few seeds, so wide)."""
    ea = [_tail_mean(x["train"].get("rollout/entropy", []), False) for x in a.values()]
    eb = [_tail_mean(x["train"].get("rollout/entropy", []), False) for x in b.values()]
    if None in ea or None in eb or not ea or not eb:
        return None
    return vars(mean_diff_ci([[e] for e in ea], [[e] for e in eb], **BOOT))


def frontier(runs: dict, sweep_extra, regime: str) -> dict:
    """lambda -> pass@1 and pass@n intervals of W-REINFORCE (0 = NSR, 1 = REINFORCE runs)."""
    sources = dict(SWEEP_SOURCES) | {lam: f"w_reinforce_l{lam:g}" for lam in sweep_extra}
    points = {}
    for lam, method in sorted(sources.items()):
        if method in runs.get(regime, {}):
            by_seed = runs[regime][method]
            n = next(iter(by_seed.values()))["n"]
            ci = pass_at_k_ci([r["c"] for r in by_seed.values()], n, [1, n], **BOOT)
            points[lam] = {"run": method, "pass@1": vars(ci[1]), f"pass@{n}": vars(ci[n])}
    return points


def write_report(out: Path, cfg: dict, jobs: list[dict], *, wall_s: float | None, machine: dict) -> dict:
    from miniature import SWEEP_REGIME
    from miniature_plots import plot_curves, plot_diagnostics, plot_dynamics, plot_sweep

    out = Path(out)
    runs = collect(out, jobs, cfg["diag_every"])
    stats = {
        regime: {m: method_stats(methods[m], methods.get("base")) for m in LABELS if m in methods}
        for regime, methods in runs.items()
    }
    points = frontier(runs, cfg["lambdas"], SWEEP_REGIME)
    claims = verdicts(runs, stats)
    text = (
        tables(stats)
        + "\n"
        + "\n".join(
            f"- {c['regime']}: {c['claim']}: {_signed(c['interval'], c['unit'])} -> **{c['verdict']}**"
            for c in claims
        )
    )
    (out / "table.md").write_text(text + "\n")
    figures = {
        "pass_at_k": plot_curves(out / "pass_at_k.png", stats, LABELS),
        "dynamics": plot_dynamics(out / "dynamics.png", runs, LABELS),
        "lambda_frontier": plot_sweep(
            out / "lambda_frontier.png", points, stats.get(SWEEP_REGIME, {}), LABELS
        ),
        "diagnostics": plot_diagnostics(out / "diagnostics.png", runs, LABELS),
    }
    expected = {(j["regime"], j["method"], j["seed"]) for j in jobs}
    finished = {x for x in expected if _has(runs, *x)}
    pilot = out / "pilot.json"
    result = {
        "settings": {k: v for k, v in cfg.items() if k != "out"},
        "machine": machine,
        "wall_s": round(wall_s, 1) if wall_s is not None else None,  # None: a run cut short
        "selection": {
            k: v for k, v in json.loads((out / "selection.json").read_text()).items() if k != "counts"
        },
        "pilot": json.loads(pilot.read_text()) if pilot.exists() else None,
        "pilot_controls": {
            p.stem[len("pilot_") :]: json.loads(p.read_text()) for p in sorted(out.glob("pilot_*.json"))
        },
        "missing_runs": sorted(f"{r} {m} seed {s}" for r, m, s in expected - finished),
        "stats": _jsonable(stats),
        "verdicts": claims,
        "lambda_frontier": {f"{lam:g}": p for lam, p in points.items()},
        "figures": {k: f"{k}.png" for k, ok in figures.items() if ok},
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    print(text)
    return result


def _has(runs: dict, regime, method, seed) -> bool:
    return any(seed in runs[r].get(method, {}) for r in runs if regime is None or r == regime)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    return x


def write_pilot(out: Path, cfg: dict, jobs: list[dict], *, wall_s: float) -> dict:
    """pilot.json: PSR's pass@1 gain on the pilot set per (lr, steps), and the budget chosen by
    the rule: the fewest steps, then the smallest lr, whose gain is >= the target."""
    from miniature import run_dir_of

    def pass1(folder: Path) -> float | None:
        path = folder / "pilot" / "results.jsonl"
        if not path.exists():
            return None
        recs = [json.loads(line) for line in path.open()]
        return sum(r["c"] / r["n"] for r in recs) / len(recs)

    runs = {j["method"]: run_dir_of(cfg, j) for j in jobs}
    base = pass1(runs.pop("pilot_base") / "eval")
    grid = []
    for job in (j for j in jobs if j["fit"]):
        for folder in sorted(run_dir_of(cfg, job).glob("eval*")):
            step = job["steps"] if folder.name == "eval" else int(folder.name.split("_")[1])
            value = pass1(folder)
            if value is not None:
                grid.append({"lr": job["lr"], "steps": step, "pass@1": value, "gain": value - base})
    grid = sorted({(g["steps"], g["lr"]): g for g in grid}.values(), key=lambda g: (g["steps"], g["lr"]))
    budget = cfg["pilot_method"] == "psr"  # another method's pilot is a control: no budget chosen
    chosen = next((g for g in grid if g["gain"] >= cfg["pilot"]["target"]), None) if budget else None
    result = {
        "base_pass@1": base,
        "grid": grid,
        "target": cfg["pilot"]["target"],
        "chosen": chosen,
        "wall_s": wall_s,
    }
    result["method"] = cfg["pilot_method"]
    name = "pilot.json" if budget else f"pilot_{cfg['pilot_method']}.json"
    (out / name).write_text(json.dumps(result, indent=1))
    for g in grid:
        print(
            f"lr {g['lr']:g} steps {g['steps']}: pass@1 {g['pass@1']:.3f} (gain {100 * g['gain']:+.1f} points)"
        )
    print(f"base pass@1 {base:.3f}; chosen: {chosen}")
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="re-write the report of a scripts/miniature.py folder")
    parser.add_argument("folder")
    parser.add_argument(
        "--wall-s", type=float, default=None, help="the run's wall time, when its own report was not written"
    )
    args, options = parser.parse_known_args()
    folder = Path(args.folder)
    sys.path.insert(0, str(Path(__file__).parent))
    from miniature import machine, parse, plan

    saved = json.loads((folder / "results.json").read_text()) if (folder / "results.json").exists() else {}
    cfg = parse(["--out", str(folder), *options])
    wall = args.wall_s if args.wall_s is not None else saved.get("wall_s")
    write_report(folder, cfg, plan(cfg), wall_s=wall, machine=saved.get("machine") or machine())
