"""HF vs vLLM sampling throughput on one model, same prompts and shapes, side by side in one run.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 python scripts/bench_sampling.py --model smollm2_135m \
        --prompts 4 --n 8 --max-new-tokens 32

The model is a packaged one (model=smollm2_135m) or a folder; prompts are the word problems'
held-out ones in the model's chat template. vLLM's engine start is timed apart from sampling.
Prints one JSON line: tokens, seconds and tokens/s per engine, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--engines", default="hf,vllm")
    a = ap.parse_args()

    from nsr_lightning.data.templates import build_prompt
    from nsr_lightning.data.word_problems import WordProblemTask
    from nsr_lightning.models import load_policy, load_tokenizer
    from nsr_lightning.packaged_models import PACKAGED, packaged_model_path
    from nsr_lightning.rollout import HFEngine, SamplingConfig

    path = packaged_model_path(a.model) if a.model in PACKAGED else a.model
    tok, model = load_tokenizer(path), load_policy(path).eval()
    prompts = [build_prompt(tok, p.question, "chat") for p in WordProblemTask().heldout_problems(a.prompts)]
    sampling = SamplingConfig(temperature=a.temperature, max_new_tokens=a.max_new_tokens)
    out = {"model": path, "prompts": a.prompts, "n": a.n, "max_new_tokens": a.max_new_tokens}
    out["threads"] = torch.get_num_threads()
    for name in a.engines.split(","):
        t0 = time.perf_counter()
        if name == "hf":
            engine = HFEngine(tok)
        else:
            from nsr_lightning.rollout import VLLMEngine

            engine = VLLMEngine(tok, model_path=path, dtype="float32", kv_cache_memory_bytes=1 << 30)
            engine.sync_weights(model)  # builds the engine; pushes the trainer's weights as fit does
        start = time.perf_counter() - t0
        t0 = time.perf_counter()
        batch = engine.generate(model, prompts, n=a.n, sampling=sampling, seed=0)
        seconds = time.perf_counter() - t0
        tokens = int(batch.response_mask.sum())
        out[name] = {"start_s": round(start, 1), "sample_s": round(seconds, 1), "tokens": tokens}
        out[name]["tokens_per_s"] = round(tokens / seconds, 1)
    if "hf" in out and "vllm" in out:
        out["vllm_over_hf"] = round(out["vllm"]["tokens_per_s"] / out["hf"]["tokens_per_s"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
