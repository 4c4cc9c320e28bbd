"""The measured sides of `scripts/bench_step.py`, each run in its own process (its own peak memory).

- `ours`: the product, as `python -m nsr_lightning fit` builds it (Hydra compose + `build_fit`:
  RLVRModule, RolloutCallback, HFEngine, the CSV logger), objective `grpo`; the phase times are
  the product's own `perf/*` metrics.
- `trl`: TRL's GRPOTrainer (transformers `generate`, GRPO loss) on the same model, task,
  group size, generation length, sampling and update count.
- `raw`: the work a step cannot avoid, on a bare model with a plain AdamW: one batched
  sampling of the same shape, then one forward + backward + optimizer step on its output
  (see `run_raw`).
- `passk`: pass@k evaluation throughput (n samples per held-out problem), through the
  product's `evaluate_dataset`.

Each writes a JSON of per-step records to `--result` (and, with --counts or --profile, the
per-phase probe of `bench_probe.py`).
"""

from __future__ import annotations

import json
import resource
import tempfile
import time

import bench_probe
import torch
from bench_probe import instrument_ours, instrument_trl, phase

PERF = ("sync", "generate", "reward", "old_logprob", "ref", "value", "entropy", "update", "train")


def clock(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def peak_memory_mb(device: str) -> dict:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    out = {"peak_rss_mb": round(rss, 1), "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def overrides(a, run_dir: str) -> list[str]:
    """The `fit` command line of the product side (also used to build the shared data)."""
    return [
        *([f"experiment={a.experiment}"] if a.experiment else []),  # its model, task, template, reward
        f"model.path={a.model_path}",
        f"model.dtype={a.dtype}",
        "objective=grpo",
        f"objective.kl_coef={a.beta}",
        "objective.loss_agg_mode=seq-mean-token-mean",  # GRPO's own (TRL loss_type=grpo)
        f"data.batch_size={a.prompts}",
        f"rollout.n={a.n}",
        f"rollout.sampling.max_new_tokens={a.max_new_tokens}",
        f"algo.lr={a.lr}",
        f"algo.micro_batch_size={a.micro_batch}",
        f"trainer.max_steps={a.warmup + a.steps}",
        f"trainer.accelerator={'gpu' if a.device.startswith('cuda') else 'cpu'}",
        "trainer.enable_checkpointing=false",
        "trainer.enable_progress_bar=false",
        "callbacks=none",
        *(["~callbacks.pass_at_k"] if a.experiment else []),  # the experiment's settings for it
        "logger=csv",
        f"seed={a.seed}",
        f"run_dir={run_dir}",
    ]


def run_ours(a) -> dict:
    import lightning as L

    from nsr_lightning.cli import build_fit, compose

    records, prompts = [], []

    class Timer(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.last = clock(a.device)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            now = clock(a.device)
            metrics = trainer.callback_metrics
            rollout = batch["rollout"]
            rec = {"step_s": now - self.last, "gen_tokens": int(rollout.response_mask.sum())}
            rec["train_tokens"] = int(rollout.attention_mask.sum())
            for name in PERF:
                if f"perf/{name}_s" in metrics:
                    rec[f"{name}_s"] = float(metrics[f"perf/{name}_s"])
            records.append(rec)
            prompts.append(
                [
                    {"prompt_ids": p, "answer": g}
                    for p, g in zip(batch["prompt_ids"], batch["answer"], strict=True)
                ]
            )
            self.last = now

    with tempfile.TemporaryDirectory() as run_dir:
        trainer, module, datamodule = build_fit(compose("fit", overrides(a, run_dir)))
        trainer.callbacks.append(Timer())
        instrument_ours(trainer, module)  # --counts / --profile: the phases, probed
        trainer.fit(module, datamodule=datamodule)
    return {"records": records[a.warmup :], "prompts": prompts, **peak_memory_mb(a.device)}


def step_prompts(a, datamodule) -> list[list[dict]]:
    """The prompts of each step: those our side drew (`--prompts-file`, written by the driver
    from our first run), else the training set in order."""
    if a.prompts_file:
        with open(a.prompts_file) as f:
            return json.load(f)
    train = datamodule.train_dataloader().dataset
    rows = [train[i] for i in range(a.prompts * (a.warmup + a.steps))]
    return [rows[i : i + a.prompts] for i in range(0, len(rows), a.prompts)]


def shared_data(a):
    """(tokenizer, datamodule) of the product's config: the same task, template and seed."""
    from hydra.utils import instantiate

    from nsr_lightning.cli import compose
    from nsr_lightning.models import load_tokenizer

    cfg = compose("fit", overrides(a, tempfile.gettempdir()))
    tokenizer = load_tokenizer(a.model_path)
    return tokenizer, instantiate(cfg.data, tokenizer=tokenizer), instantiate(cfg.reward)


def run_trl(a) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from nsr_lightning.models import load_policy

    tokenizer, datamodule, reward = shared_data(a)
    rows = [row for step in step_prompts(a, datamodule) for row in step]  # in order: no shuffling
    data = Dataset.from_list(
        [{"prompt": tokenizer.decode(r["prompt_ids"]), "answer": r["answer"]} for r in rows]
    )

    def reward_fn(completions, answer, **_):
        return reward(completions, answer)

    records = []

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.last = clock(a.device)

        def on_step_end(self, args, state, control, **kw):
            now = clock(a.device)
            records.append({"step_s": now - self.last})
            self.last = now

    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out,
            # one generation batch of prompts x n, one optimizer update on it, in micro-batches
            per_device_train_batch_size=micro(a),
            gradient_accumulation_steps=a.prompts * a.n // micro(a),
            num_generations=a.n,
            num_iterations=1,
            max_steps=a.warmup + a.steps,
            learning_rate=a.lr,
            lr_scheduler_type="constant",
            weight_decay=0.01,
            max_grad_norm=1.0,
            beta=a.beta,
            loss_type="grpo",
            epsilon=0.2,
            scale_rewards="group",
            max_completion_length=a.max_new_tokens,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            use_cpu=not a.device.startswith("cuda"),
            bf16=a.dtype == "bfloat16",
            report_to="none",
            logging_steps=1,
            save_strategy="no",
            disable_tqdm=True,
            seed=a.seed,
            dataloader_num_workers=0,
            shuffle_dataset=False,  # the same prompts at the same step as our side
            gradient_checkpointing=False,  # TRL's default is True; ours is off
        )
        model = load_policy(a.model_path, a.dtype)
        trainer = GRPOTrainer(
            model=model, reward_funcs=reward_fn, args=config, train_dataset=data, processing_class=tokenizer
        )
        trainer.add_callback(Timer())
        instrument_trl(trainer)  # --counts / --profile: its whole step, probed
        trainer.train()
    return {"records": records[a.warmup :], **peak_memory_mb(a.device)}


def micro(a) -> int:
    total = a.prompts * a.n
    if a.micro_batch and total % a.micro_batch:
        raise SystemExit(f"--micro-batch must divide prompts x n = {total}")
    return a.micro_batch or total


def run_raw(a) -> dict:
    """The limit of a step on a bare model: one batched sampling of the same shape, then the
    forward + backward passes of its update, in the shapes with the least work (micro-batches of
    rows sorted by length, each cut to its own width, each distinct prompt run once: the
    product's `response_logprobs(share_prompts=True)` called directly, no entropy) and one AdamW
    step. Sampling is timed
    two ways on the same prompts and seed: `generate_s` with the lean loop our engine runs
    (`rollout/decode.py`, the faster: the limit) and `hf_generate_s` with transformers' `generate`
    (`num_return_sequences=n`), for reference, after the update (so from weights one update on)."""
    from nsr_lightning.logprobs import response_logprobs
    from nsr_lightning.models import load_policy
    from nsr_lightning.rollout.batch import (
        RolloutBatch,
        SamplingConfig,
        pad_stack,
        response_mask_from_ids,
    )
    from nsr_lightning.rollout.decode import sample_responses
    from nsr_lightning.streams import Stream, stream_seed

    tokenizer, datamodule, _ = shared_data(a)
    model = load_policy(a.model_path, a.dtype).to(a.device)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    from nsr_lightning.rollout.stops import stop_token_ids

    pad, stops = tokenizer.pad_token_id, stop_token_ids(tokenizer)  # our engine's stop set
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=a.max_new_tokens)
    records = []
    for step, batch in enumerate(step_prompts(a, datamodule)[: a.warmup + a.steps]):
        rows = [torch.tensor(r["prompt_ids"]) for r in batch]
        ids = pad_stack(rows, pad, left=True).to(a.device)  # (B, P)
        attn = pad_stack([torch.ones_like(r) for r in rows], 0, left=True).to(a.device)
        model.eval()
        seed = stream_seed(a.seed, Stream.ROLLOUT, 0, step)  # our engine's seed: the same samples
        t0 = clock(a.device)
        with torch.no_grad(), phase("generate", step):
            torch.manual_seed(seed)
            resp = sample_responses(
                model, ids, attn, n=a.n, sampling=sampling, stop_ids=stops, pad_id=pad
            )  # (N, R)
        t1 = clock(a.device)
        model.train()
        mask, truncated = response_mask_from_ids(resp, stops)  # (N, R) up to and including the stop
        rollout = RolloutBatch(
            prompt_ids=ids.repeat_interleave(a.n, 0), prompt_mask=attn.repeat_interleave(a.n, 0),
            response_ids=resp.masked_fill(mask == 0, pad), response_mask=mask.long(),
            group_ids=torch.arange(len(ids), device=ids.device).repeat_interleave(a.n), truncated=truncated,
            texts=[""] * len(resp),
        )  # fmt: skip
        adv = torch.randn(len(rollout), 1, device=a.device)
        with phase("update", step):
            order = torch.argsort(
                rollout.attention_mask.sum(1).cpu(), stable=True
            )  # similar lengths together
            for part in order.split(micro(a)):  # gradient accumulation; each micro-batch at its own width
                logp, _ = response_logprobs(
                    model, rollout.select(part), with_entropy=False, share_prompts=True
                )
                loss = -(adv[part] * logp).sum() / mask.sum()
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        t2 = clock(a.device)
        model.eval()  # the reference, timed last so it cannot disturb the timed phases of the step:
        with torch.no_grad():  # transformers' generate on the same prompts and seed (updated weights)
            torch.manual_seed(seed)
            hf = model.generate(
                input_ids=ids, attention_mask=attn, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                max_new_tokens=a.max_new_tokens, num_return_sequences=a.n, pad_token_id=pad,
                eos_token_id=stops, use_cache=True,
            )  # (B * n, P + R)  # fmt: skip
        t3 = clock(a.device)
        records.append(
            {
                "generate_s": t1 - t0,
                "update_s": t2 - t1,
                "hf_generate_s": t3 - t2,
                "gen_tokens": int(mask.sum()),
                "hf_gen_tokens": int(response_mask_from_ids(hf[:, ids.shape[1] :], stops)[0].sum()),
                "train_tokens": int(rollout.attention_mask.sum()),
            }
        )
    return {"records": records[a.warmup :], **peak_memory_mb(a.device)}


def run_passk(a) -> dict:
    from nsr_lightning.evaluation import evaluate_dataset
    from nsr_lightning.metrics import pass_at_k_table
    from nsr_lightning.models import load_policy
    from nsr_lightning.rollout import HFEngine, SamplingConfig

    tokenizer, datamodule, reward = shared_data(a)
    name, rows = next(iter(datamodule.heldout().items()))
    rows = rows[: a.passk_problems]
    model = load_policy(a.model_path, a.dtype).to(a.device).eval()
    engine = HFEngine(tokenizer, batch_size=a.passk_batch)
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=a.max_new_tokens)
    chunk = max(1, a.passk_batch // a.passk_n)
    with tempfile.TemporaryDirectory() as out:
        t0 = clock(a.device)
        recs = evaluate_dataset(
            name, rows, engine=engine, model=model, reward=reward, n=a.passk_n, sampling=sampling,
            seed=a.seed, chunk_size=chunk, out_dir=out,
        )  # fmt: skip
        table = pass_at_k_table([(r["n"], r["c"]) for r in recs])
        seconds = clock(a.device) - t0
    samples = a.passk_n * len(rows)
    return {
        "problems": len(rows), "n": a.passk_n, "seconds": seconds, "samples_per_s": samples / seconds,
        "pass@1": table[1], f"pass@{a.passk_n}": table[a.passk_n], **peak_memory_mb(a.device),
    }  # fmt: skip


SIDES = {"ours": run_ours, "trl": run_trl, "raw": run_raw, "passk": run_passk}


def main(a) -> None:
    torch.set_num_threads(a.threads) if a.threads else None
    bench_probe.start(a)
    result = SIDES[a.worker](a)
    if bench_probe.PROBE is not None:
        result[bench_probe.PROBE.kind] = bench_probe.PROBE.result()
    with open(a.result, "w") as f:
        json.dump(result, f)
