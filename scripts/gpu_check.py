"""One-command GPU check: the product on one GPU, stage by stage, in at most --budget seconds (8 min).

    python scripts/gpu_check.py [--out-dir runs/gpu_check-<time>] [--budget 480]
    python scripts/gpu_check.py --device cpu --quick      # the same stages, tiny, on a CPU (a test runs it)

Each stage runs in its own process group with a time limit (its share of what is left of --budget,
so time an early stage does not use goes to the later ones); a stage that fails or runs out of
time is reported with the tail of its output, and the next one runs:

  fit       the default `python -m nsr_lightning fit` with trainer.accelerator=gpu: wall time,
            steps, steps/s (wall, start-up included), median perf/generate_s and perf/train_s,
            the warnings it printed.
  fsdp      scripts/gpu_smoke.py --resume: `trainer=fsdp8 trainer.devices=1` on a Qwen3-shaped
            random model (4 layers), a sharded checkpoint written, `ckpt_path=last` resumed for
            one more step, the final model written.
  bench:*   scripts/bench_step.py on the Qwen2.5-0.5B and 1.5B shapes (bfloat16), sides ours, TRL
            (skipped without trl) and raw, 1 warm-up + 2 measured steps per side and round, up to 3
            rounds in a rotating order (as many as fit its limit): medians, min-max of the per-round
            medians, ours / TRL and the framework overhead per round.
  profile   scripts/bench_step.py --profile on the 0.5B shape, ours, raw and TRL, per phase
            (generate, update, ours' log; `step`: the sum of the phases, TRL's whole step):
            kernel launches, cudaMalloc / cudaFree, stream / device / event synchronisations,
            memcpy HtoD / DtoH (count, bytes), GPU busy time (merged kernel intervals) vs wall
            time, allocator retries and peak (scripts/bench_probe.py).
  vllm      the default fit with rollout=vllm for 3 steps, when vllm is installed (else skipped).

Within the default budget the bench stages get one or two rounds on one H200 (not yet measured
there); `--budget 900` leaves room for three, `--stages bench,profile` runs only those.

`--device cpu`: the tiny model and tiny sizes for every stage that runs on a CPU (fit, fsdp on
trainer=fsdp_cpu with one process, bench, profile with the CPU profiler); vllm is skipped.
`--quick`: the fewest steps (2-step fit, 1-step FSDP + resume, one round, no TRL).
Writes <out-dir>/gpu_check.json and <out-dir>/gpu_check.md (and each stage's log); exit 0.
Needs only the project and its dependencies (trl and vllm are optional); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gpu_check_report  # noqa: E402

PY = sys.executable
# A stage's limit: its share of the budget left when it starts (time unused goes to later stages).
SHARES = {
    "fit": 70,
    "fsdp": 75,
    "bench:qwen2.5-0.5b": 105,
    "bench:qwen2.5-1.5b": 130,
    "profile": 60,
    "vllm": 40,
}
ENV = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="the fewest steps and rounds")
    p.add_argument("--out-dir", type=Path, default=None, help="default runs/gpu_check-<time>")
    p.add_argument("--budget", type=float, default=480, help="seconds for all stages")
    p.add_argument("--stages", default="", help="comma list of stage names to run (default: all)")
    return p.parse_args(argv)


def run_stage(name: str, cmd: list[str], limit: float, out_dir: Path) -> dict:
    """Runs cmd in its own process group; kills the group at the limit. Never raises."""
    log = out_dir / f"{name.replace(':', '_')}.log"
    t0 = time.time()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    out = {"stage": name, "wall_s": round(time.time() - t0, 1), "limit_s": round(limit), "log": str(log)}
    if rc == 0:
        return out | {"status": "ok"}
    why = f"timed out after {limit:.0f} s" if rc is None else f"exit {rc}"
    return out | {"status": "failed", "reason": why, "tail": log.read_text(errors="replace")[-3000:]}


def fit_rows(run: Path) -> list[dict]:
    paths = sorted(run.glob("csv/version_*/metrics.csv"))
    return [r for r in csv.DictReader(paths[-1].open()) if r.get("train/updates")] if paths else []


def fit_stage(a, out: Path, limit: float, rollout: str = "hf") -> tuple[list[str], callable]:
    run = out / f"fit_{rollout}"
    cmd = [PY, "-m", "nsr_lightning", "fit", f"trainer.accelerator={'cpu' if a.device == 'cpu' else 'gpu'}"]
    cmd += [f"run_dir={run}", "trainer.enable_progress_bar=false", f"rollout={rollout}"]
    if rollout == "vllm":
        cmd += ["trainer.max_steps=3", "callbacks=none", "rollout.engine.gpu_memory_utilization=0.3"]
        cmd += ["rollout.engine.max_model_len=512"]
    if a.quick:
        cmd += ["trainer.max_steps=2", "callbacks=none", "data.batch_size=2", "rollout.n=2"]
        cmd += ["rollout.sampling.max_new_tokens=8", "trainer.enable_checkpointing=false"]

    def numbers(result: dict, log: str) -> dict:
        rows = fit_rows(run)
        warnings = sorted({line.strip()[:200] for line in log.splitlines() if "Warning" in line})
        out = {"steps": len(rows), "steps_per_s": len(rows) / result["wall_s"], "warnings": warnings[:8]}
        for key in ("perf/generate_s", "perf/train_s"):
            values = [float(r[key]) for r in rows if r.get(key)]
            out[f"median_{key.split('/')[1]}"] = statistics.median(values) if values else None
        return out

    return cmd, numbers


def fsdp_stage(a, out: Path, limit: float):
    work = Path(tempfile.mkdtemp(prefix="gpu_check_fsdp_"))
    steps = 1 if a.quick else 2
    cmd = [
        PY,
        str(HERE / "gpu_smoke.py"),
        "--layers",
        "2" if a.device == "cpu" else "4",
        "--steps",
        str(steps),
    ]
    cmd += ["--resume", "--skip-vllm", "--device", a.device, "--out", str(out / "fsdp"), "--work", str(work)]

    def numbers(result: dict, log: str) -> dict:
        shutil.rmtree(work, ignore_errors=True)  # the checkpoints (GBs on a GPU)
        (first,) = json.loads((out / "fsdp" / "summary.json").read_text())
        resume = first.get("resume", {})
        return {
            "first_steps": [s.get("step") for s in first.get("steps", [])],
            "sharded_checkpoint": bool(first.get("checkpoint")),
            "resumed_steps": [s.get("step") for s in resume.get("steps", [])],
            "final_model": bool(resume.get("final_model")),
            "first_wall_s": first.get("wall_s"), "resume_wall_s": resume.get("wall_s"),
        }  # fmt: skip

    return cmd, numbers


def bench_args(a, shape: str | None) -> list[str]:
    if a.device == "cpu":
        args = ["--prompts", "2", "--n", "2", "--max-new-tokens", "8", "--micro-batch", "2", "--lr", "1e-12"]
        return args + ["--warmup", "0" if a.quick else "1", "--steps", "1", "--threads", "0"]
    args = ["--device", "cuda", "--dtype", "bfloat16", "--model-config", shape, "--prompts", "8", "--n", "8"]
    return args + [
        "--max-new-tokens",
        "32",
        "--micro-batch",
        "32",
        "--warmup",
        "1",
        "--steps",
        "2",
        "--threads",
        "0",
    ]


def bench_stage(a, out: Path, limit: float, shape: str | None):
    path = out / f"bench_{shape or 'tiny'}.json"
    sides = "ours,raw" if a.quick or find_spec("trl") is None else "ours,trl,raw"
    rounds = "1" if a.quick else "3"
    cmd = [PY, str(HERE / "bench_step.py"), *bench_args(a, shape), "--sides", sides, "--rounds", rounds]
    cmd += ["--time-limit", str(int(limit * 0.9) - 5), "--passk-problems", "0", "--out", str(path)]
    return cmd, lambda result, log: gpu_check_report.bench_numbers(json.loads(path.read_text()))


def profile_stage(a, out: Path, limit: float):
    path = out / "profile.json"
    sides = "ours,raw" if a.quick or find_spec("trl") is None else "ours,trl,raw"
    cmd = [PY, str(HERE / "bench_step.py"), *bench_args(a, "qwen2.5-0.5b"), "--profile"]
    cmd += ["--sides", sides, "--rounds", "1", "--passk-problems", "0", "--out", str(path)]
    return cmd, lambda result, log: {"phases": json.loads(path.read_text())["profile"]}


def stages(a, out: Path) -> list[tuple[str, object]]:
    """(name, builder or a reason to skip) in the order they run."""
    cuda = a.device != "cpu"
    shapes = ["qwen2.5-0.5b", "qwen2.5-1.5b"] if cuda else [None]
    out_list = [
        ("fit", lambda limit: fit_stage(a, out, limit)),
        ("fsdp", lambda limit: fsdp_stage(a, out, limit)),
    ]
    for shape in shapes:
        out_list.append((f"bench:{shape or 'tiny'}", lambda limit, s=shape: bench_stage(a, out, limit, s)))
    out_list.append(("profile", lambda limit: profile_stage(a, out, limit)))
    if not cuda:
        out_list.append(("vllm", "skipped: needs CUDA"))
    elif find_spec("vllm") is None:
        out_list.append(("vllm", "skipped: vllm is not installed"))
    else:
        out_list.append(("vllm", lambda limit: fit_stage(a, out, limit, rollout="vllm")))
    return out_list


def main(argv=None) -> int:
    a = parse(argv)
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --device cpu for the CPU check", file=sys.stderr)
        return 2
    out = a.out_dir or Path("runs") / f"gpu_check-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    chosen = [s for s in a.stages.split(",") if s]
    plan = [(n, b) for n, b in stages(a, out) if not chosen or n in chosen or n.split(":")[0] in chosen]
    shares = {n: SHARES.get(n, 100) for n, b in plan if callable(b)}
    start, results = time.time(), []
    for i, (name, build) in enumerate(plan):
        if not callable(build):
            results.append({"stage": name, "status": "skipped", "reason": build.split(": ", 1)[1]})
            continue
        left = a.budget - (time.time() - start)
        limit = left * shares[name] / sum(shares[n] for n, _ in plan[i:] if n in shares)
        if limit < 10:
            results.append({"stage": name, "status": "skipped", "reason": "out of --budget"})
            continue
        print(f"gpu_check: {name} (limit {limit:.0f} s) ...", file=sys.stderr, flush=True)
        cmd, numbers = build(limit)
        result = run_stage(name, cmd, limit, out)
        if result["status"] == "ok":
            try:
                result["numbers"] = numbers(result, Path(result["log"]).read_text(errors="replace"))
            except Exception as e:  # a stage that ran but left no readable result
                result |= {"status": "failed", "reason": f"no result: {type(e).__name__}: {e}"}
        results.append(result)
        print(f"gpu_check: {name}: {result['status']} ({result['wall_s']} s)", file=sys.stderr, flush=True)
    report = {
        "device": a.device,
        "quick": a.quick,
        "budget_s": a.budget,
        "wall_s": round(time.time() - start, 1),
    }
    report |= {"versions": gpu_check_report.versions(), "stages": results}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_check.md").write_text(gpu_check_report.markdown(report))
    print(gpu_check_report.markdown(report))
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
