"""The paper in miniature: Table 1, Figures 2 and 4, the lambda frontier and verdicts, on a CPU.

From the embedded tiny model, in one run (each stage skipped when its outputs exist, so a re-run
with the same --out resumes):

1. Selection (scripts/miniature_select.py): held-out problems with headroom, chosen from the
   base model's own samples (selection seed 1000) before any training: a final set of 64 and a
   disjoint pilot set of 32.
2. Training: every method of Table 1 in the `paper` regime (mini-batch = a quarter of the
   rollout batch: 4 clipped updates per step for a method that keeps every sample, as the
   paper's 1,024 prompts / 256) and, as the control, in the `on_policy` regime (one update per
   step: the ratio is 1 and the clip never fires), for several training seeds, with the
   product's own `fit`; W-REINFORCE also at more lambdas in the paper regime (the frontier).
   The default runs the control for PSR, NSR and W-REINFORCE (it fits in 90 minutes on 2
   cores); `--full` for every method, and lambda 0.05 too (on a default's folder it adds only
   those runs). Per-sign diagnostics (`algo.diagnostics_every_n_steps`) and held-out dynamics
   are logged.
3. Evaluation: `evaluate` on the final set, n samples per problem, evaluation seed = training
   seed; the base model once per seed.
4. The report (scripts/miniature_report.py): pass@k with 95 % bootstrap intervals over problems
   and seeds, differences to the base, crossover k, distinct correct responses, verdicts.

The budget (steps, lr) was fixed before the final run by `--pilot` (PSR in the paper regime on
the pilot set only; `pilot.json`): the fewest steps, then the smallest lr, whose PSR pass@1
gain over the base is >= PILOT["target"] (5 points).

    python scripts/miniature.py --out runs/miniature                # the study (docs/miniature.md)
    python scripts/miniature.py --full --out runs/miniature         # + the control for every method
    python scripts/miniature.py --pilot --out runs/miniature        # the budget pilot (pilot set only)
    python scripts/miniature.py --quick --out runs/miniature-quick  # a smoke test of every stage
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

sys.path.insert(0, str(Path(__file__).parent))
import miniature_select as select  # noqa: E402

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
REGIMES = {"paper": 4, "on_policy": 1}  # optimizer updates per step (rollout batch / mini-batch)
SWEEP_REGIME = "paper"  # the lambda frontier's regime; lambda 0 = nsr, 0.1 = w_reinforce, 1 = reinforce runs
COST = {"ppo": 3, "grpo": 2}  # relative cost for scheduling, longest first
# the budget pilot (--pilot): PSR in the paper regime on the pilot set, checkpoints every `every` steps
PILOT = dict(lrs=(2e-5, 5e-5), steps=240, every=40, n=64, target=0.05)
ALL = ("psr", "nsr", "w_reinforce", "reinforce", "grpo", "ppo")
_SIZES = dict(prompts=16, responses=8, n=256, seeds=3, every=20, dyn_problems=32, diag_every=20)
MODES = {  # steps and lr: the pilot's choice (docs/miniature/pilot.json)
    # the default fits in 90 minutes on 2 cores: the on-policy control for the paper's three methods
    "default": dict(_SIZES, steps=200, lr=5e-5, control=("psr", "nsr", "w_reinforce"), lambdas=(0.25, 0.5)),
    # --full: the control for every method and one more lambda (re-run on a default's folder: adds those)
    "full": dict(_SIZES, steps=200, lr=5e-5, control=ALL, lambdas=(0.05, 0.25, 0.5)),
    "quick": dict(
        steps=4, lr=5e-5, prompts=4, responses=4, n=16, seeds=1, every=2, dyn_problems=4, diag_every=2,
        control=ALL, lambdas=(0.05, 0.25, 0.5),
    ),
}  # fmt: skip
QUICK_SELECT = dict(candidates=96, samples=16, final=(6, 2), pilot=(3, 1))
QUICK_PILOT = dict(lrs=(5e-5,), steps=4, every=2, n=8, target=0.05)


def sweep_name(lam: float) -> str:
    return f"w_reinforce_l{lam:g}"


def plan(cfg: dict) -> list[dict]:
    """Every job (method, regime, seed, fit overrides; regime and fit None for the base model),
    seed by seed (a cut-short run still has whole seeds), the costliest first within a seed."""
    jobs = []
    for seed in range(cfg["seeds"]):
        batch = (
            [{"method": "base", "regime": None, "seed": seed, "fit": None}]
            if "base" in cfg["methods"]
            else []
        )
        for regime in cfg["regimes"]:
            trained = [m for m in cfg["methods"] if METHODS[m] and (regime == "paper" or m in cfg["control"])]
            batch += [{"method": m, "regime": regime, "seed": seed, "fit": METHODS[m]} for m in trained]
            if regime == SWEEP_REGIME:
                batch += [
                    {"method": sweep_name(lam), "regime": regime, "seed": seed,
                     "fit": ["objective=w_reinforce", f"objective.lambda_pos={lam}"]}
                    for lam in cfg["lambdas"]
                ]  # fmt: skip
        jobs += sorted(batch, key=lambda j: -COST.get(j["method"], 1 if j["fit"] else 0))
    return jobs


def run_dir_of(cfg: dict, job: dict) -> Path:
    parts = ["runs", job["regime"] or "untrained", job["method"], f"seed{job['seed']}"]
    return Path(cfg["out"]).joinpath(*parts)


def fit_args(cfg: dict, job: dict, run_dir: Path) -> list[str]:
    updates = REGIMES[job["regime"]]
    rollout = cfg["prompts"] * cfg["responses"]
    task = select.TASK
    return [
        "fit",
        *job["fit"],
        f"seed={job['seed']}",
        f"data.seed={task['seed']}",  # one task partition for every seed; the seed varies training
        f"data.min_terms={task['min_terms']}",  # the selected problems' family
        f"data.max_terms={task['max_terms']}",
        f"data.max_value={task['max_value']}",
        f"run_dir={run_dir}",
        f"trainer.max_steps={job.get('steps', cfg['steps'])}",
        f"data.batch_size={cfg['prompts']}",
        f"rollout.n={cfg['responses']}",
        f"algo.lr={job.get('lr', cfg['lr'])}",
        f"algo.mini_batch_size={rollout // updates if updates > 1 else 0}",
        f"algo.diagnostics_every_n_steps={cfg['diag_every']}",
        f"data.num_heldout_problems={cfg['dyn_problems']}",
        "callbacks.pass_at_k.before=false",  # pass@k comes from `evaluate` below, for every method
        "callbacks.pass_at_k.after=false",
        f"callbacks.heldout.every_n_steps={cfg['every']}",
        f"callbacks.heldout.num_problems={cfg['dyn_problems']}",
        "callbacks.heldout.entropy_samples=2",
        "~callbacks.progress",
        "trainer.enable_progress_bar=false",
        *job.get("checkpoints", ["trainer.enable_checkpointing=false"]),
        f"logger={cfg['logger']}",
    ]


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("WANDB_SILENT", "true")
    import torch

    torch.set_num_threads(threads)


def run_job(cfg: dict, job: dict) -> dict:
    """Fit (unless done), then evaluate each of the job's models on its problem set (unless
    done); the output of both goes to the run folder's job.log."""
    from nsr_lightning.cli import main

    run_dir = run_dir_of(cfg, job)
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
            t0 = time.perf_counter()
            for name, model in evaluations(run_dir, job):
                folder = run_dir / name
                if not (folder / "summary.json").exists():
                    args = select.eval_args(
                        folder, job.get("set", "final"), Path(cfg["out"]) / f"{job.get('set', 'final')}.jsonl",
                        job.get("n", cfg["n"]), job["seed"], model, cfg["logger"],
                    )  # fmt: skip
                    if main(args) != 0:
                        raise RuntimeError(f"evaluate failed: see {run_dir / 'job.log'}")
                    times["eval_s"] = times.get("eval_s", 0.0) + time.perf_counter() - t0
                    t0 = time.perf_counter()
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])
    if times:  # timings of this invocation (a skipped stage keeps the earlier timing)
        old = json.loads((run_dir / "times.json").read_text()) if (run_dir / "times.json").exists() else {}
        (run_dir / "times.json").write_text(json.dumps({**old, **times}))
    return {**job, **times}


def evaluations(run_dir: Path, job: dict) -> list[tuple[str, list[str]]]:
    """(folder name, evaluate's model overrides) of every model the job scores: the base model,
    the final model, or (pilot) every periodic checkpoint too."""
    if not job["fit"]:
        return [("eval", [])]
    out = [("eval", [f"model.path={run_dir / 'final_model'}"])]
    for ckpt in sorted(run_dir.glob("csv/version_*/checkpoints/*step=*.ckpt")):
        out.append((f"eval_{ckpt.stem.split('step=')[-1]}", [f"model.path={ckpt}"]))
    return out


def pilot_jobs(cfg: dict) -> list[dict]:
    p = cfg["pilot"]
    keep = f"checkpoint.keep={p['steps'] // p['every'] + 1}"
    ckpt = ["trainer.enable_checkpointing=true", f"checkpoint.every_n_steps={p['every']}", keep]
    jobs = [{"method": "pilot_base", "regime": None, "seed": 0, "fit": None, "set": "pilot", "n": p["n"]}]
    method = cfg["pilot_method"]
    for lr in cfg["pilot_lrs"] or p["lrs"]:
        jobs.append(
            {"method": f"pilot_{method}_lr{lr:g}", "regime": "paper", "seed": 0, "fit": METHODS[method],
             "set": "pilot", "n": p["n"], "lr": lr, "steps": p["steps"], "checkpoints": ckpt}
        )  # fmt: skip
    return jobs


def run_pool(cfg: dict, jobs: list[dict]) -> list[dict]:
    t0, failed = time.perf_counter(), []
    pool = ProcessPoolExecutor(
        cfg["workers"], mp_context=get_context("spawn"), initializer=_init_worker, initargs=(cfg["threads"],)
    )
    with pool:
        futures = {pool.submit(run_job, cfg, job): job for job in jobs}
        for done, future in enumerate(as_completed(futures), start=1):
            job = futures[future]
            name = f"{job['regime'] or 'untrained'}/{job['method']} seed {job['seed']}"
            try:
                r = future.result()
                spent = " ".join(f"{k}={v:.0f}" for k, v in r.items() if k.endswith("_s"))
                print(f"[{done}/{len(jobs)} {time.perf_counter() - t0:6.0f}s] {name} {spent}", flush=True)
            except Exception as e:  # report and go on: the report covers what finished
                failed.append(job)
                print(f"[{done}/{len(jobs)}] FAILED {name}: {e}", flush=True)
    return failed


def parse(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/miniature", help="output folder (re-run to resume)")
    p.add_argument("--quick", action="store_true", help="smoke test of every stage: tiny sizes, 1 seed")
    p.add_argument(
        "--pilot",
        dest="pilot_mode",
        action="store_true",
        help="only the budget pilot on the pilot set (pilot.json)",
    )
    p.add_argument(
        "--pilot-method",
        default="psr",
        choices=[m for m in METHODS if METHODS[m]],
        help="the method --pilot trains (psr: the budget, pilot.json; another: a control, pilot_<method>.json)",
    )
    p.add_argument(
        "--pilot-lrs", default=None, help="comma-separated learning rates for --pilot (default: PILOT's)"
    )

    for key in ("steps", "prompts", "responses", "n", "seeds", "every", "dyn_problems", "diag_every"):
        p.add_argument(
            f"--{key.replace('_', '-')}", type=int, default=None, help=f"override the mode's {key}"
        )
    p.add_argument("--lr", type=float, default=None, help="override the mode's learning rate")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of the table's rows")
    p.add_argument(
        "--regimes", default=",".join(REGIMES), help=f"comma-separated subset of {', '.join(REGIMES)}"
    )
    p.add_argument(
        "--full", action="store_true", help="the on-policy control for every method, lambda 0.05 too"
    )
    p.add_argument("--no-sweep", dest="lambdas", action="store_const", const=(), help="no extra lambdas")
    p.add_argument("--workers", type=int, default=2, help="jobs at once (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--logger", default="csv", choices=("csv", "wandb"), help="wandb: offline W&B runs too")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "full" if args.full else "default"
    cfg = dict(MODES[mode], mode=mode, pilot=QUICK_PILOT if args.quick else PILOT)
    cfg["select"] = QUICK_SELECT if args.quick else None
    cfg |= {
        k: v for k, v in vars(args).items() if v is not None and k not in ("quick", "full")
    }  # pilot_mode too
    cfg["pilot_lrs"] = [float(x) for x in cfg["pilot_lrs"].split(",")] if cfg.get("pilot_lrs") else None
    for key, known in (("methods", METHODS), ("regimes", REGIMES)):
        cfg[key] = [m.strip() for m in cfg[key].split(",") if m.strip()]
        if set(cfg[key]) - set(known):
            p.error(f"--{key}: unknown {sorted(set(cfg[key]) - set(known))}; choose from {', '.join(known)}")
    if cfg["n"] & (cfg["n"] - 1):
        p.error(f"--n must be a power of 2 (pass@k for k = 1, 2, 4, ..., n); got {cfg['n']}")
    cfg["out"] = str(Path(cfg["out"]).resolve())
    return cfg


def main(argv: list[str] | None = None) -> int:
    from miniature_report import write_pilot, write_report  # now: the report's code is the run's code

    cfg = parse(argv)
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    selection = select.write_sets(out, cfg["logger"], cfg["select"])
    print(f"problems: {len(selection['final'])} final, {len(selection['pilot'])} pilot -> {out}", flush=True)
    jobs = pilot_jobs(cfg) if cfg["pilot_mode"] else plan(cfg)
    print(
        f"{len(jobs)} jobs ({cfg['mode']}), {cfg['workers']} workers x {cfg['threads']} threads", flush=True
    )
    failed = run_pool(cfg, jobs)
    wall = time.perf_counter() - t0
    if cfg["pilot_mode"]:
        write_pilot(out, cfg, jobs, wall_s=wall)
    else:
        write_report(out, cfg, jobs, wall_s=wall, machine=machine())
    print(f"wall time {wall:.0f} s; report in {out}" + (f"; {len(failed)} jobs FAILED" if failed else ""))
    return 1 if failed else 0


def machine() -> dict:
    from importlib.metadata import version

    packages = ("torch", "transformers", "lightning", "numpy", "nsr-lightning")
    return {
        "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        **{name: version(name) for name in packages},
    }  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
