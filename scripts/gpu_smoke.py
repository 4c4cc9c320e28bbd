"""GPU smoke test: the paper-scale code path on one GPU with a real model shape, random weights.

    python scripts/gpu_smoke.py [--layers 28] [--steps 2] [--out DIR] [--work DIR]

1. Builds a causal LM from a real config (Qwen3-1.7B's shape: hidden 2048, 28 layers, 16 heads
   of 128, 8 KV heads, vocabulary 151,936) with random weights, no download, and saves it with
   the embedded tiny model's tokenizer (its ids are a subset of the vocabulary).
2. `fit trainer=fsdp8 trainer.devices=1` (FSDP2 through ModelParallelStrategy, bf16 mixed
   precision, activation checkpointing) with `rollout=hf`: rollouts with HF generate on the
   sharded model, updates, final model gathered.
3. The same with `rollout=vllm` when vllm imports: a colocated engine, weight sync every step,
   `rollout/logprob_diff_*` (bf16 sampler vs bf16 trainer: expect about 1e-2 mean).

Prints one summary line per run; writes summary.json and the run logs to --out (small), the
model, checkpoints and runs to --work (tens of GB with all 28 layers). Random weights never answer
right: the reward stays 0, and NSR still trains on every sample, which is all a smoke test needs.
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


def build_model(out: Path, layers: int) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from nsr_lightning.models import TINY_MODEL

    path = out / "model"
    if (path / "config.json").is_file():
        return path
    tok = AutoTokenizer.from_pretrained(TINY_MODEL)
    config = Qwen3Config(
        **{**QWEN3_1_7B, "num_hidden_layers": layers},
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
    print(f"model: Qwen3-1.7B shape, {layers} layers, {n / 1e9:.2f} B parameters, at {path}", flush=True)
    return path


def fit(out: Path, work: Path, model: Path, rollout: str, steps: int) -> dict:
    run = work / f"run_{rollout}"
    args = [sys.executable, "-m", "nsr_lightning", "fit", "trainer=fsdp8", "trainer.devices=1"]
    args += [f"model.path={model}", "model.vllm_dtype=bfloat16", f"rollout={rollout}", "objective=nsr"]
    args += [f"trainer.max_steps={steps}", "trainer.enable_checkpointing=true", "callbacks=none"]
    args += ["data.batch_size=8", "rollout.n=4", "rollout.sampling.max_new_tokens=64"]
    args += ["algo.mini_batch_size=16", "algo.gradient_checkpointing=true", "algo.lr=1e-6"]
    args += ["trainer.enable_progress_bar=false", f"run_dir={run}"]
    if rollout == "vllm":
        args += ["rollout.engine.gpu_memory_utilization=0.3", "rollout.engine.max_model_len=512"]
    t0 = time.time()
    proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    result = {"rollout": rollout, "rc": proc.returncode, "wall_s": round(time.time() - t0, 1)}
    (out / f"{rollout}.log").write_text(proc.stdout + "\n" + proc.stderr)
    if proc.returncode != 0:
        result["error"] = proc.stderr[-2000:]
        return result
    (path,) = run.glob("csv/version_*/metrics.csv")
    rows = [r for r in csv.DictReader(path.open()) if r.get("train/updates")]
    keep = [
        "train/updates",
        "train/grad_norm",
        "perf/generate_s",
        "perf/train_s",
        "perf/sync_s",
        "perf/synced",
    ]
    keep += ["rollout/logprob_diff_mean", "rollout/logprob_diff_max", "rollout/response_length"]
    result["steps"] = [{k: r.get(k) for k in keep if r.get(k)} for r in rows]
    result["checkpoint"] = [str(p) for p in run.glob("csv/version_*/checkpoints/*")]
    result["final_model"] = (run / "final_model" / "model.safetensors").is_file() or any(
        (run / "final_model").glob("model*.safetensors")
    )
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
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: this smoke test needs a GPU", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    model = build_model(args.work, args.layers)
    results = [fit(args.out, args.work, model, "hf", args.steps)]
    if args.skip_vllm:
        pass
    elif importlib.util.find_spec("vllm") is None:
        results.append({"rollout": "vllm", "skipped": "vllm is not installed"})
    else:
        results.append(fit(args.out, args.work, model, "vllm", args.steps))
    for r in results:
        print(json.dumps(r)[:1500], flush=True)
    (args.out / "summary.json").write_text(json.dumps(results, indent=1))
    return 0 if all(r.get("rc", 0) == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
