"""GPU smoke test: the paper-scale code path on one GPU with a real model shape, random weights.

    python scripts/gpu_smoke.py [--layers 28] [--steps 2] [--resume] [--out DIR] [--work DIR]
    python scripts/gpu_smoke.py --device cpu --layers 2 --resume --skip-vllm   # the same path, tiny, on a CPU

1. Builds a causal LM from a real config (Qwen3-1.7B's shape: hidden 2048, 28 layers, 16 heads
   of 128, 8 KV heads, vocabulary 151,936) with random weights, no download, and saves it with
   the embedded tiny model's tokenizer (its ids are a subset of the vocabulary).
2. `fit trainer=fsdp8 trainer.devices=1` (FSDP2 through ModelParallelStrategy, bf16 mixed
   precision, activation checkpointing) with `rollout=hf`: rollouts with HF generate on the
   sharded model, updates, final model gathered.
   With `--resume`: the same command again with `ckpt_path=last` and one more step (the sharded
   checkpoint read back, training goes on at step `--steps`, the final model written again).
3. The same with `rollout=vllm` when vllm imports: a colocated engine, weight sync every step,
   `rollout/logprob_diff_*` (bf16 sampler vs bf16 trainer: expect about 1e-2 mean).

Prints one summary line per run; writes summary.json and the run logs to --out (small), the
model, checkpoints and runs to --work (tens of GB with all 28 layers). Random weights never answer
right: the reward stays 0, and NSR still trains on every sample, which is all a smoke test needs.
`--device cpu`: trainer=fsdp_cpu (gloo, float32) with one process, a narrow Qwen3 shape (hidden 64,
the real vocabulary) and small batches: the same code path where no GPU is at hand.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

QWEN3_1_7B = dict(  # the public Qwen3-1.7B config, minus what the defaults already say
    hidden_size=2048,
    intermediate_size=6144,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=151936,
    max_position_embeddings=4096,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    tie_word_embeddings=True,
)


NARROW = dict(
    hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16
)


def build_model(out: Path, layers: int, narrow: bool = False) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from nsr_lightning.models import TINY_MODEL

    path = out / f"model_{layers}l{'_narrow' if narrow else ''}"
    if (path / "config.json").is_file():
        return path
    tok = AutoTokenizer.from_pretrained(TINY_MODEL)
    config = Qwen3Config(
        **{**QWEN3_1_7B, **(NARROW if narrow else {}), "num_hidden_layers": layers},
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config)  # random weights, float32
    model.save_pretrained(path)
    for name in os.listdir(TINY_MODEL):  # the tokenizer (and its chat template), not the weights
        if name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(TINY_MODEL / name, path / name)
    n = sum(p.numel() for p in model.parameters())
    print(
        f"model: Qwen3-1.7B shape{' (narrow)' if narrow else ''}, {layers} layers, {n / 1e9:.2f} B parameters, at {path}",
        flush=True,
    )
    return path


def fit(
    out: Path, work: Path, model: Path, rollout: str, steps: int, cpu: bool = False, resume: bool = False
) -> dict:
    run = work / f"run_{rollout}"
    if cpu:
        args = ["trainer=fsdp_cpu", "trainer.devices=1", "fsdp.param_dtype=float32", "data.batch_size=2"]
        args += ["rollout.n=2", "rollout.sampling.max_new_tokens=8", "algo.mini_batch_size=4"]
    else:
        args = ["trainer=fsdp8", "trainer.devices=1", "model.vllm_dtype=bfloat16", "data.batch_size=8"]
        args += ["rollout.n=4", "rollout.sampling.max_new_tokens=64", "algo.mini_batch_size=16"]
    args += [f"model.path={model}", f"rollout={rollout}", "objective=nsr", "callbacks=none"]
    args += ["trainer.enable_checkpointing=true", "algo.gradient_checkpointing=true", "algo.lr=1e-6"]
    args += ["trainer.enable_progress_bar=false", f"run_dir={run}"]
    if rollout == "vllm":
        args += ["rollout.engine.gpu_memory_utilization=0.3", "rollout.engine.max_model_len=512"]
    if not resume:
        shutil.rmtree(run, ignore_errors=True)  # a fresh run (run_dir refuses a used folder)
    result = run_fit(out, run, [*args, f"trainer.max_steps={steps}"], rollout)
    if resume and result["rc"] == 0:  # the sharded checkpoint read back, one more step
        more = run_fit(
            out, run, [*args, f"trainer.max_steps={steps + 1}", "ckpt_path=last"], f"{rollout}_resume"
        )
        result["resume"] = more
        result["rc"] = more["rc"]
    return result


def run_fit(out: Path, run: Path, args: list[str], name: str) -> dict:
    t0 = time.time()
    cmd = [sys.executable, "-m", "nsr_lightning", "fit", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    result = {"rollout": name, "rc": proc.returncode, "wall_s": round(time.time() - t0, 1)}
    (out / f"{name}.log").write_text(proc.stdout + "\n" + proc.stderr)
    if proc.returncode != 0:
        result["error"] = proc.stderr[-2000:]
        return result
    path = max(run.glob("csv/version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)  # this run's
    rows = [r for r in csv.DictReader(path.open()) if r.get("train/updates")]
    keep = ["step", "train/updates", "train/grad_norm", "perf/generate_s", "perf/train_s", "perf/sync_s"]
    keep += [
        "perf/synced",
        "rollout/logprob_diff_mean",
        "rollout/logprob_diff_max",
        "rollout/response_length",
    ]
    result["steps"] = [{k: r.get(k) for k in keep if r.get(k)} for r in rows]
    result["checkpoint"] = sorted(str(p) for p in run.glob("csv/version_*/checkpoints/*"))
    result["final_model"] = any((run / "final_model").glob("model*.safetensors"))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=28, help="decoder layers (28 = the real model)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/gpu_smoke")))
    parser.add_argument("--work", type=Path, default=Path("/tmp/nsr_gpu_smoke"))
    parser.add_argument("--skip-vllm", action="store_true")
    parser.add_argument(
        "--resume", action="store_true", help="then resume (ckpt_path=last) for one more step"
    )
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()
    import torch

    cpu = args.device == "cpu"
    if not cpu and not torch.cuda.is_available():
        print("no CUDA device: this smoke test needs a GPU", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    device = "cpu" if cpu else torch.cuda.get_device_name(0)
    print(f"device: {device}, torch {torch.__version__}", flush=True)
    model = build_model(args.work, args.layers, narrow=cpu)
    results = [fit(args.out, args.work, model, "hf", args.steps, cpu=cpu, resume=args.resume)]
    if args.skip_vllm or cpu:
        pass
    elif importlib.util.find_spec("vllm") is None:
        results.append({"rollout": "vllm", "skipped": "vllm is not installed"})
    else:
        results.append(fit(args.out, args.work, model, "vllm", args.steps, resume=args.resume))
    for r in results:
        print(json.dumps(r)[:1500], flush=True)
    (args.out / "summary.json").write_text(json.dumps(results, indent=1))
    return 0 if all(r.get("rc", 0) == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
