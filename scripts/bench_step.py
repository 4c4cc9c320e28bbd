"""Benchmark of one RL step: its phases, side by side with TRL and with the raw work it must do.

    python scripts/bench_step.py [--rounds 3 --steps 4 --warmup 2] [--out bench_step.json]
    python scripts/bench_step.py --device cuda --model-config qwen2.5-1.5b --dtype bfloat16
    python scripts/bench_step.py --experiment smollm2_word_problems --prompts 4 --n 4 --max-new-tokens 48 \
        --micro-batch 8 --steps 2 --warmup 1 --rounds 3 --threads 2 --passk-problems 0

Measures, in one run, on the same model, task (the embedded synthetic task, or `--experiment`'s
model, task, template and reward), group size,
generation length and sampling (T 1, top-p 1, no top-k), one update a step, GRPO with KL
coefficient `--beta` (0: no reference model) on both sides:

- `ours`: the product as `python -m nsr_lightning fit objective=grpo` builds it; each step split
  into the product's own perf/* phases (weight sync, generation, reward, old-logprob /
  reference / value forward passes, update = forward + backward + optimizer, the rest);
- `trl`: TRL's GRPOTrainer (needs `pip install -e ".[bench]"`; skipped without trl);
- `raw`: one batched `generate` of the same shape plus one forward + backward + AdamW step on a
  bare model: the limit of a step. Framework overhead = ours - raw, as a share of ours;
- `passk`: pass@k evaluation throughput, samples per second for n = `--passk-n` (256).

Step time = wall time between the ends of consecutive steps (everything included: data,
callbacks, logging), after `--warmup` steps. Each side runs in its own process (its own peak
memory), the sides alternate within each of `--rounds` rounds (in a rotating order), and the
medians are over all measured steps of all rounds. Prints a table and writes JSON (`--out`).

`--counts`: ours and raw side by side per phase (generate, update, ours' log): aten operations,
host synchronisations, FLOPs, full-vocabulary float32 tensors (count and bytes), per measured
step, on any device (`nsr_lightning.op_counts`). `--profile`: per side and phase, torch.profiler's
kernel launches, cudaMalloc / cudaFree, synchronisations, memcpy both ways, GPU busy vs wall time,
allocator retries and peak (on a CPU: wall time and CPU operators). Both: see scripts/bench_probe.py;
their timings are not the step's (the probes slow it); TRL's side is probed as one phase, its step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_probe  # noqa: E402
import bench_sides  # noqa: E402

# Real models' shapes (from their config.json), built with random weights: nothing is downloaded.
MODEL_CONFIGS = {
    "qwen2.5-1.5b": dict(
        model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
    ),
    "qwen2.5-0.5b": dict(
        model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
    ),
}  # fmt: skip


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=16, help="prompts per step")
    p.add_argument("--n", type=int, default=8, help="responses per prompt (group size)")
    p.add_argument("--max-new-tokens", type=int, default=80)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument(
        "--micro-batch", type=int, default=32, help="samples per forward/backward, both sides (0: all)"
    )
    p.add_argument("--beta", type=float, default=0.0, help="KL coefficient on both sides")
    p.add_argument("--steps", type=int, default=4, help="measured steps per side per round")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps at the start of each run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--time-limit", type=float, default=0, help="start no round that would end past it (s)")
    p.add_argument("--sides", default="ours,trl,raw", help="comma list of ours, trl, raw")
    p.add_argument("--passk-n", type=int, default=256)
    p.add_argument("--passk-problems", type=int, default=4, help="0: skip the pass@k measurement")
    p.add_argument("--passk-batch", type=int, default=512, help="sequences per generate call")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument(
        "--experiment",
        default=None,
        help="a config experiment whose model, task and reward both sides use "
        "(e.g. smollm2_word_problems: the real SmolLM2-135M-Instruct; its budgets are replaced by these flags)",
    )
    p.add_argument("--model-config", default=None, help=f"{', '.join(MODEL_CONFIGS)} or a config.json")
    p.add_argument("--num-layers", type=int, default=0, help="override the config's layer count (0: keep)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per side (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    probe = p.add_mutually_exclusive_group()
    probe.add_argument(
        "--counts", action="store_true", help="per-phase op / sync / FLOP / vocab-tensor counts"
    )
    probe.add_argument(
        "--profile", action="store_true", help="per-phase torch.profiler summary (CUDA on a GPU)"
    )
    p.add_argument("--worker", choices=sorted(bench_sides.SIDES), help=argparse.SUPPRESS)
    p.add_argument("--model-path", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    p.add_argument("--prompts-file", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def build_model(a, folder: str) -> str:
    """A model folder with `--model-config`'s shape and random weights, and the tiny tokenizer
    (its ids are a subset of any vocabulary; ids it lacks decode to nothing)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from nsr_lightning.models import TINY_MODEL, load_tokenizer

    if a.model_config in MODEL_CONFIGS:
        spec = dict(MODEL_CONFIGS[a.model_config])
    else:
        spec = json.loads(Path(a.model_config).read_text())
    if a.num_layers:
        spec["num_hidden_layers"] = a.num_layers
    tok = load_tokenizer(str(TINY_MODEL))
    spec.update(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    config = AutoConfig.for_model(**spec)
    torch.manual_seed(a.seed)
    with torch.device("cuda" if a.device.startswith("cuda") else "cpu"):  # random init: faster on a GPU
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, a.dtype))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def run_side(a, side: str, folder: str) -> dict:
    result = os.path.join(folder, f"{side}.json")
    cmd = [sys.executable, __file__, *sys.argv[1:], "--worker", side, "--model-path", a.model_path]
    prompts = os.path.join(folder, "prompts.json")
    if side != "ours" and os.path.exists(prompts):
        cmd += ["--prompts-file", prompts]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads)) if a.threads else None
    proc = subprocess.run([*cmd, "--result", result], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"bench side {side!r} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(Path(result).read_text())
    if "prompts" in out:  # our side's prompts per step: the other sides get the same ones
        Path(prompts).write_text(json.dumps(out.pop("prompts")))
    return out


def med(records: list[dict], key: str) -> float | None:
    values = [r[key] for r in records if key in r]
    return statistics.median(values) if values else None


def summarise(runs: dict[str, list[dict]]) -> dict:
    out = {}
    for side, results in runs.items():
        recs = [r for res in results for r in res["records"]]
        keys = sorted({k for r in recs for k in r})
        out[side] = {k: med(recs, k) for k in keys} | {"steps": len(recs)}
        out[side]["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
        if "peak_gpu_mb" in results[0]:
            out[side]["peak_gpu_mb"] = max(r["peak_gpu_mb"] for r in results)
    if "raw" in out:
        raw = out["raw"]
        raw["step_s"] = raw["generate_s"] + raw["update_s"]
    if "ours" in out:
        ours = out["ours"]
        named = sum(ours.get(f"{k}_s") or 0.0 for k in bench_sides.PERF if k not in ("train", "update"))
        ours["other_s"] = ours["step_s"] - named - (ours.get("update_s") or 0.0)
        ours["gen_tokens_per_s"] = ours["gen_tokens"] / ours["generate_s"]
        ours["train_tokens_per_s"] = ours["train_tokens"] / ours["update_s"]
        if "trl" in out:
            out["ratio_ours_to_trl"] = ours["step_s"] / out["trl"]["step_s"]
            # paired within each round (the sides ran minutes apart at most): robust to drifting load
            out["ratio_per_round"] = [
                med(o["records"], "step_s") / med(t["records"], "step_s")
                for o, t in zip(runs["ours"], runs["trl"], strict=True)
            ]
        if "raw" in out:
            out["overhead_s"] = ours["step_s"] - out["raw"]["step_s"]
            out["overhead_share"] = out["overhead_s"] / ours["step_s"]
            out["overhead_share_per_round"] = [
                1
                - (med(r["records"], "generate_s") + med(r["records"], "update_s"))
                / med(o["records"], "step_s")
                for o, r in zip(runs["ours"], runs["raw"], strict=True)
            ]
    return out


def table(s: dict) -> str:
    lines = [f"{'phase (median s/step)':<28}{'ours':>10}{'raw':>10}{'trl':>10}", "-" * 58]
    phases = [
        "sync",
        "generate",
        "hf_generate",
        "reward",
        "old_logprob",
        "ref",
        "value",
        "entropy",
        "update",
        "other",
    ]
    for key in [*phases, "step"]:
        row = [s.get(side, {}).get(f"{key}_s") for side in ("ours", "raw", "trl")]
        if any(v is not None for v in row):
            lines.append(f"{key:<28}" + "".join(f"{v:>10.3f}" if v is not None else f"{'':>10}" for v in row))
    ours = s.get("ours", {})
    for key in ("gen_tokens_per_s", "train_tokens_per_s"):
        if key in ours:
            lines.append(f"{key:<28}{ours[key]:>10.0f}")
    lines.append(f"{'peak memory (MB)':<28}" + "".join(
        f"{s[side].get('peak_gpu_mb', s[side]['peak_rss_mb']):>10.0f}" if side in s else f"{'':>10}"
        for side in ("ours", "raw", "trl")
    ))  # fmt: skip
    if "ratio_ours_to_trl" in s:
        rounds = ", ".join(f"{r:.2f}" for r in s["ratio_per_round"])
        lines.append(
            f"step time ours / TRL: {s['ratio_ours_to_trl']:.3f} (target <= 0.7); per round: {rounds}"
        )
    if "overhead_share" in s:
        rounds = ", ".join(f"{100 * r:.0f} %" for r in s["overhead_share_per_round"])
        lines.append(f"framework overhead: {s['overhead_s']:.3f} s = {100 * s['overhead_share']:.1f} % of our step (target <= 10 %); per round: {rounds}")  # fmt: skip
    if "passk" in s:
        p = s["passk"]
        lines.append(
            f"pass@k evaluation: {p['samples_per_s']:.0f} samples/s (n={p['n']}, {p['problems']} problems)"
        )
    return "\n".join(lines)


def main() -> None:
    a = parse()
    if a.worker:
        return bench_sides.main(a)
    sides = [x for x in a.sides.split(",") if x]
    if "trl" in sides:
        try:
            import trl  # noqa: F401
        except ImportError:
            print("trl is not installed (pip install -e '.[bench]'): skipping the TRL side", file=sys.stderr)
            sides.remove("trl")
    with tempfile.TemporaryDirectory() as folder:
        if a.model_config:
            a.model_path = build_model(a, os.path.join(folder, "model"))
        elif a.experiment:  # its model (a packaged model is converted here once, not inside a side)
            from nsr_lightning.cli import compose

            a.model_path = str(compose("fit", [f"experiment={a.experiment}"]).model.path)
        else:
            from nsr_lightning.models import TINY_MODEL

            a.model_path = str(TINY_MODEL)
        runs: dict[str, list[dict]] = {s: [] for s in sides}
        start = time.time()
        for r in range(a.rounds):
            begun = time.time()
            for side in sides[r % len(sides) :] + sides[: r % len(sides)]:  # rotate the order
                runs[side].append(run_side(a, side, folder))
                print(f"round {r + 1}/{a.rounds} {side}: done", file=sys.stderr, flush=True)
            if a.time_limit and time.time() - start + (time.time() - begun) > a.time_limit:
                break  # another round like this one would end past --time-limit
        summary = summarise(runs) | {"rounds_done": len(next(iter(runs.values())))}
        for kind in ("counts", "profile"):
            if getattr(a, kind):
                summary[kind] = bench_probe.summarise(runs, kind)
        if a.passk_problems:
            summary["passk"] = run_side(a, "passk", folder)
    import torch
    import transformers

    summary["settings"] = {k: v for k, v in vars(a).items() if k not in ("worker", "result", "model_path")}
    summary["machine"] = {
        "cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
        "transformers": transformers.__version__, "trl": _version("trl"),
        "gpu": torch.cuda.get_device_name() if a.device.startswith("cuda") else None,
    }  # fmt: skip
    summary["raw_runs"] = runs
    print(table(summary))
    for kind in ("counts", "profile"):
        if kind in summary:
            print(f"\n{kind} per measured step (timings above include the probe's cost):")
            print(bench_probe.table(summary[kind], kind))
    if a.out:
        Path(a.out).write_text(json.dumps(summary, indent=1))
        print(f"wrote {a.out}")


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
