"""The paper in miniature: Table 1, Figures 2 and 4 and a W-REINFORCE lambda sweep on a CPU.

From the embedded tiny model and task, with one budget for every method (steps, prompts x
responses, lr), this trains PSR, NSR, W-REINFORCE (lambda 0.1), REINFORCE, GRPO and PPO for
several seeds with the product's own `fit`, evaluates every final policy and the untrained base
model with the product's own `evaluate` (n samples per held-out problem, unbiased pass@k for
k = 1, 2, 4, ..., n; paper section 3, eq. 5), and writes (scripts/miniature_report.py):

    results.json           every number: settings, per run pass@k, dynamics, timings
    table.md, table.csv    Table 1's shape: pass@k, mean +- std over seeds, best / second best
    pass_at_k.png          Figure 2: pass@k curves (and their difference to the base model)
    dynamics.png           Figure 4: held-out greedy accuracy and entropy, correct and
                           fully-solved ratios per step
    lambda_sweep.png       pass@1 against pass@n for lambda in 0, 0.05, 0.1, 0.25, 0.5, 1
                           (0 is the NSR run, 0.1 the W-REINFORCE run, 1 the REINFORCE run)
    runs/<method>/seed<s>/ each run's fit folder (logs, final_model) and eval/ folder

Jobs run in a pool of worker processes (`--workers`, `--threads` torch threads each) that call
the CLI's entry point in-process (`nsr_lightning.cli.main`), so imports are paid once per
worker. A finished fit (final_model/) or evaluation (summary.json) is skipped on a re-run with
the same --out, and an interrupted evaluation resumes from its own results.jsonl.

    python scripts/miniature.py --out runs/miniature              # the full run
    python scripts/miniature.py --quick --out runs/miniature-quick  # a smoke test (1 seed)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

# method name -> fit overrides; the order is the table's
METHODS = {
    "base": None,  # no training: the embedded model as shipped
    "psr": ["objective=psr"],
    "nsr": ["objective=nsr"],
    "w_reinforce": ["objective=w_reinforce", "objective.lambda_pos=0.1"],
    "reinforce": ["objective=reinforce"],
    "grpo": ["objective=grpo"],
    "ppo": ["objective=ppo"],
}
SWEEP_EXTRA = (0.05, 0.25, 0.5)  # lambda 0 = nsr, 0.1 = w_reinforce, 1 = reinforce (same runs)
# relative cost for scheduling, longest first (PPO trains a critic, GRPO runs a reference model)
COST = {"ppo": 3, "grpo": 2}

MODES = {  # steps, prompts per step, responses per prompt, held-out problems, n, seeds, dynamics
    "full": dict(steps=100, prompts=16, responses=8, problems=32, n=256, seeds=3, every=10, dyn_problems=32),
    "quick": dict(steps=4, prompts=4, responses=4, problems=4, n=16, seeds=1, every=2, dyn_problems=4),
}


def sweep_name(lam: float) -> str:
    return f"w_reinforce_l{lam:g}"


def plan(cfg: dict) -> list[dict]:
    """Every job: (method, seed, fit overrides or None for the base model), in priority order:
    seed by seed (so a cut-short run still has whole seeds), the table's methods before the
    sweep's extra lambdas, and within those the costliest first (the pool stays busy to the end)."""
    methods = {m: o for m, o in METHODS.items() if m in cfg["methods"]}
    extra = {sweep_name(lam): ["objective=w_reinforce", f"objective.lambda_pos={lam}"] for lam in SWEEP_EXTRA}
    jobs = []
    for seed in range(cfg["seeds"]):
        for group in (methods, extra if cfg["sweep"] else {}):
            batch = [{"method": m, "seed": seed, "fit": o} for m, o in group.items()]
            jobs += sorted(batch, key=lambda j: -COST.get(j["method"], 1 if j["fit"] else 0))
    return jobs


def fit_args(cfg: dict, job: dict, run_dir: Path) -> list[str]:
    return [
        "fit",
        *job["fit"],
        f"seed={job['seed']}",
        "data.seed=0",  # one task and held-out partition for every seed; the seed varies training
        f"run_dir={run_dir}",
        f"trainer.max_steps={cfg['steps']}",
        f"data.batch_size={cfg['prompts']}",
        f"rollout.n={cfg['responses']}",
        f"algo.lr={cfg['lr']}",
        f"data.num_heldout_problems={max(cfg['problems'], cfg['dyn_problems'])}",
        "callbacks.pass_at_k.before=false",  # pass@k comes from `evaluate` below, for every method
        "callbacks.pass_at_k.after=false",
        f"callbacks.heldout.every_n_steps={cfg['every']}",
        f"callbacks.heldout.num_problems={cfg['dyn_problems']}",
        "callbacks.heldout.entropy_samples=2",
        "~callbacks.progress",
        "trainer.enable_progress_bar=false",
        "trainer.enable_checkpointing=false",
        f"logger={cfg['logger']}",
    ]


def eval_args(cfg: dict, job: dict, run_dir: Path) -> list[str]:
    model = [f"model.path={run_dir / 'final_model'}"] if job["fit"] else []  # base: the shipped model
    return [
        "evaluate",
        *model,
        "reward=synthetic",
        "preset=tiny",  # temperature 1.0, top-p 1, 80 tokens: the training sampling
        f"n={cfg['n']}",
        f"data.synthetic_problems={cfg['problems']}",
        "data.synthetic_seed=0",
        f"seed={job['seed']}",
        f"run_dir={run_dir / 'eval'}",
        f"logger={cfg['logger']}",
    ]


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("WANDB_SILENT", "true")
    import torch

    torch.set_num_threads(threads)


def run_job(cfg: dict, job: dict) -> dict:
    """Fit (unless done) then evaluate (unless done) one (method, seed); output goes to job.log."""
    from nsr_lightning.cli import main

    run_dir = Path(cfg["out"]) / "runs" / job["method"] / f"seed{job['seed']}"
    run_dir.mkdir(parents=True, exist_ok=True)
    times = {}
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(run_dir / "job.log", "a") as log:
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        try:
            if job["fit"] and not (run_dir / "final_model" / "model.safetensors").exists():
                t0 = time.perf_counter()
                if main(fit_args(cfg, job, run_dir)) != 0:
                    raise RuntimeError(f"fit failed: see {run_dir / 'job.log'}")
                times["fit_s"] = time.perf_counter() - t0
            if not (run_dir / "eval" / "summary.json").exists():
                t0 = time.perf_counter()
                if main(eval_args(cfg, job, run_dir)) != 0:
                    raise RuntimeError(f"evaluate failed: see {run_dir / 'job.log'}")
                times["eval_s"] = time.perf_counter() - t0
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])
    if times:  # timings of this invocation (a skipped step keeps the earlier timing)
        old = json.loads((run_dir / "times.json").read_text()) if (run_dir / "times.json").exists() else {}
        (run_dir / "times.json").write_text(json.dumps({**old, **times}))
    return {**job, **times}


def parse(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/miniature", help="output folder (re-run to resume)")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 seed, few steps, problems and samples")
    for key in ("steps", "prompts", "responses", "problems", "n", "seeds", "every", "dyn_problems"):
        p.add_argument(
            f"--{key.replace('_', '-')}", type=int, default=None, help=f"override the mode's {key}"
        )
    p.add_argument("--lr", type=float, default=2e-5, help="learning rate of every method (fit's default)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of the table's rows")
    p.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip lambda 0.05 / 0.25 / 0.5")
    p.add_argument(
        "--first", default="", help="jobs to run first, e.g. nsr:1,psr:1 (method:seed; a resumed run)"
    )
    p.add_argument("--workers", type=int, default=2, help="jobs at once (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--logger", default="csv", choices=("csv", "wandb"), help="wandb: offline W&B runs too")
    args = p.parse_args(argv)
    cfg = dict(MODES["quick" if args.quick else "full"], mode="quick" if args.quick else "full")
    cfg |= {k: v for k, v in vars(args).items() if v is not None and k not in ("quick",)}
    cfg["methods"] = [m.strip() for m in cfg["methods"].split(",") if m.strip()]
    unknown = sorted(set(cfg["methods"]) - set(METHODS))
    if unknown:
        p.error(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    if cfg["n"] & (cfg["n"] - 1):
        p.error(f"--n must be a power of 2 (pass@k for k = 1, 2, 4, ..., n); got {cfg['n']}")
    cfg["out"] = str(Path(cfg["out"]).resolve())
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse(argv)
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan(cfg)
    first = [tuple(x.split(":")) for x in cfg["first"].split(",") if x]
    jobs.sort(
        key=lambda j: (
            first.index((j["method"], str(j["seed"])))
            if (j["method"], str(j["seed"])) in first
            else len(first)
        )
    )
    print(f"{len(jobs)} jobs ({cfg['mode']}), {cfg['workers']} workers x {cfg['threads']} threads -> {out}")
    t0 = time.perf_counter()
    failed = []
    pool = ProcessPoolExecutor(
        cfg["workers"], mp_context=get_context("spawn"), initializer=_init_worker, initargs=(cfg["threads"],)
    )
    with pool:
        futures = {pool.submit(run_job, cfg, job): job for job in jobs}
        for done, future in enumerate(as_completed(futures), start=1):
            job = futures[future]
            try:
                r = future.result()
                spent = " ".join(f"{k}={v:.0f}" for k, v in r.items() if k.endswith("_s"))
                print(
                    f"[{done}/{len(jobs)} {time.perf_counter() - t0:6.0f}s] {job['method']} seed {job['seed']} {spent}",
                    flush=True,
                )
            except Exception as e:  # report and go on: the report covers what finished
                failed.append(job)
                print(f"[{done}/{len(jobs)}] FAILED {job['method']} seed {job['seed']}: {e}", flush=True)
    wall = time.perf_counter() - t0
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    from miniature_report import write_report  # scripts/ is on sys.path when run as a script

    write_report(out, cfg, jobs, wall_s=wall, machine=machine, sweep_extra=SWEEP_EXTRA)
    print(f"wall time {wall:.0f} s; report in {out}" + (f"; {len(failed)} jobs FAILED" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
