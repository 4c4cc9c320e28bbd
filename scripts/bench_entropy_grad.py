"""The entropy with and without gradients in the update's log-prob pass, side by side.

One forward + backward of `response_logprobs` on a 1-layer model with Qwen2.5's vocabulary
(151,936 tokens, random weights, nothing downloaded), 8 rows x 64 response tokens, each mode in
its own process (peak RSS is per process). `entropy_grad=False` is what `fit` does unless the
objective has an entropy bonus.

    python scripts/bench_entropy_grad.py            # both modes, 4 log-softmax chunks
    python scripts/bench_entropy_grad.py --chunk 8  # one chunk
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time


def measure(entropy_grad: bool, chunk: int, repeats: int) -> str:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from nsr_lightning.logprobs import response_logprobs
    from nsr_lightning.rollout.batch import RolloutBatch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True,
    )  # fmt: skip
    model = LlamaForCausalLM(cfg)
    n, p, r = 8, 16, 64
    g = torch.Generator().manual_seed(0)
    batch = RolloutBatch(
        prompt_ids=torch.randint(2, 1000, (n, p), generator=g),
        prompt_mask=torch.ones(n, p, dtype=torch.long),
        response_ids=torch.randint(2, 1000, (n, r), generator=g),
        response_mask=torch.ones(n, r, dtype=torch.long),
        group_ids=torch.arange(n) // 4,
        truncated=torch.zeros(n, dtype=torch.bool),
    )

    def step() -> None:
        logp, _ = response_logprobs(
            model, batch, chunk_size=chunk, share_prompts=True, entropy_grad=entropy_grad
        )
        logp.sum().backward()
        model.zero_grad(set_to_none=True)

    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731  MB on Linux
    before = rss()
    step()
    rise = rss() - before
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    seconds = (time.perf_counter() - t0) / repeats
    return (
        f"entropy_grad={entropy_grad}: peak RSS rise {rise:,.0f} MB, {seconds:.3f} s per forward + backward"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunk", type=int, default=2, help="rows per log-softmax chunk (8 rows in all)")
    ap.add_argument("--repeats", type=int, default=5, help="timed forward + backward passes")
    ap.add_argument("--mode", choices=("graph", "nograd"), help=argparse.SUPPRESS)  # one child process
    a = ap.parse_args()
    if a.mode:
        print(measure(a.mode == "graph", a.chunk, a.repeats), flush=True)
        return
    for mode in ("graph", "nograd"):
        args = [sys.executable, __file__, f"--mode={mode}", f"--chunk={a.chunk}", f"--repeats={a.repeats}"]
        subprocess.run(args, check=True)


if __name__ == "__main__":
    main()
