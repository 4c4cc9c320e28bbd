"""Build and pre-train the tiny embedded model on the signed-sum task, fully offline.

Writes a Hugging Face model directory (Llama architecture, character-level tokenizer with a chat
template, ``generation_config.json``) to ``nsr_lightning/assets/tiny_model/`` and measures its
prior on held-out problems (unbiased pass@k at temperature 1.0) into ``prior_eval.json``.

Deterministic: fixed seeds and a fixed torch thread count (``--threads``, default 1), so the same
machine reproduces ``model.safetensors`` bit for bit.

    PYTHONPATH=. python scripts/build_tiny_model.py              # build + evaluate
    PYTHONPATH=. python scripts/build_tiny_model.py --eval-only  # re-measure the shipped model
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from nsr_lightning.data.synthetic import SyntheticTask
from nsr_lightning.metrics import ks_for, pass_at_k_table
from nsr_lightning.rewards.synthetic import SyntheticReward

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "nsr_lightning" / "assets" / "tiny_model"
SPECIAL = ["<pad>", "<eos>", "<unk>"]
# Every character of questions, solutions and the chat template.
CHARS = list("0123456789+-= \\{}boxedQA:\n")
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}Q:{{ message['content'] }}{{ '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}A:{{ message['content'] }}<eos>"
    "{%- endif -%}"  # system (and any other role) messages are ignored
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}A:{%- endif -%}"
)
MODEL = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4, head_dim=32)
MAX_POSITIONS = 128


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer: BPE with no merges (one token per character), Fuse decoder."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL + CHARS)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    core.add_special_tokens(SPECIAL)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        padding_side="left",
        model_max_length=MAX_POSITIONS,
    )


def build_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """Llama-architecture tiny causal LM (head_dim 32 for vLLM's CPU attention)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        num_key_value_heads=MODEL["num_attention_heads"],
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rope_theta=10000.0,
        **MODEL,
    )
    return LlamaForCausalLM(config)


def prompt_of(tokenizer, question: str) -> str:
    msgs = [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def max_response_tokens(task: SyntheticTask) -> int:
    """Upper bound on the token length of any solution (+ eos) for ``task``."""
    num = len(str(-task.max_terms * task.max_value))
    step = 2 * num + 2 + len(str(task.max_value)) + 1
    return (task.max_terms - 1) * step + len("\\boxed{}") + num + 1


def make_batch(tokenizer, task: SyntheticTask, indices: list[int]) -> dict[str, torch.Tensor]:
    """Right-padded teacher-forcing batch; labels are -100 outside the response (+ eos)."""
    rows = []
    for index in indices:
        problem = task.train_problem(index)
        solution = task.solution(problem, random.Random(f"solution|{task.seed}|{index}"))
        prompt_ids = tokenizer(prompt_of(tokenizer, problem.question))["input_ids"]
        response_ids = tokenizer(solution)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((prompt_ids + response_ids, [-100] * len(prompt_ids) + response_ids))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def pretrain(model, tokenizer, task, *, steps: int, batch_size: int, lr: float, seed: int) -> None:
    """AdamW with linear warm-up and cosine decay; loss on response tokens only."""
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    t0, running = time.time(), 0.0
    for step in range(steps):
        batch = make_batch(tokenizer, task, list(range(step * batch_size, (step + 1) * batch_size)))
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running += loss.item()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            print(
                f"step {step + 1}/{steps} loss {running / 50:.4f} lr {sched.get_last_lr()[0]:.2e} "
                f"{time.time() - t0:.0f}s",
                flush=True,
            )
            running = 0.0
    model.eval()


@torch.no_grad()
def evaluate(model, tokenizer, task, *, problems: int, n: int, chunk: int, seed: int) -> dict:
    """Unbiased pass@k of ``n`` samples (temperature 1, top-p 1, no top-k) on held-out problems."""
    model.eval()
    tokenizer.padding_side = "left"
    reward = SyntheticReward()
    heldout = task.heldout_problems(problems)
    max_new = max_response_tokens(task) + 4
    torch.manual_seed(seed)
    counts, lengths, examples, t0 = [], [], [], time.time()
    for start in range(0, len(heldout), chunk):
        group = heldout[start : start + chunk]
        enc = tokenizer([prompt_of(tokenizer, p.question) for p in group], return_tensors="pt", padding=True)
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=max_new,
            num_return_sequences=n,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        gen = out[:, enc["input_ids"].shape[1] :]
        texts = tokenizer.batch_decode(gen, skip_special_tokens=True)
        examples += [(p.question, texts[j * n]) for j, p in enumerate(group)][: 2 - len(examples)]
        for row in gen.tolist():
            ends = [i for i, t in enumerate(row) if t == tokenizer.eos_token_id]
            lengths.append(ends[0] + 1 if ends else len(row))
        for j, problem in enumerate(group):
            scores = reward(texts[j * n : (j + 1) * n], [problem.answer] * n)
            counts.append((n, int(sum(scores))))
        print(f"eval {start + len(group)}/{len(heldout)} problems {time.time() - t0:.0f}s", flush=True)
    table = pass_at_k_table(counts, ks_for(n))
    return {
        "task": repr(task),
        "heldout_problems": len(heldout),
        "n": n,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": None,
        "max_new_tokens": max_new,
        "pass_at_k": {str(k): round(v, 4) for k, v in table.items()},
        "mean_response_tokens": round(sum(lengths) / len(lengths), 2),
        "solved_at_least_once": sum(c > 0 for _, c in counts),
        "eval_seconds": round(time.time() - t0, 1),
        "torch_threads": torch.get_num_threads(),
        "examples": [{"prompt": prompt_of(tokenizer, q), "response": r} for q, r in examples],
    }


def save(model, tokenizer, out: Path) -> None:
    """Save weights, tokenizer (class PreTrainedTokenizerFast, template in the config) and gen config."""
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (out / "chat_template.jinja").unlink(missing_ok=True)
    for f in out.iterdir():
        f.chmod(0o644)


def check_tokenizer(out: Path, task: SyntheticTask) -> None:
    """Round-trip task strings through the reloaded tokenizer; ids must equal one id per char."""
    tok = AutoTokenizer.from_pretrained(out)
    vocab = tok.get_vocab()
    for i in range(200):
        problem = task.train_problem(i)
        for text in (prompt_of(tok, problem.question), task.solution(problem, random.Random(i))):
            ids = tok(text)["input_ids"]
            assert ids == [vocab[c] for c in text], f"tokenizer altered ids for {text!r}"
            assert tok.decode(ids) == text, f"decode does not round-trip {text!r}"
    assert prompt_of(tok, "17-5+8-12") == "Q:17-5+8-12\nA:"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output model directory")
    ap.add_argument("--eval-only", action="store_true", help="only re-measure the model in --out")
    ap.add_argument("--steps", type=int, default=750)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (fixed for bitwise reproducibility)"
    )
    ap.add_argument("--eval-problems", type=int, default=128)
    ap.add_argument("--eval-n", type=int, default=64)
    ap.add_argument("--eval-chunk", type=int, default=8, help="problems per generate call")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    task = SyntheticTask()
    t0 = time.time()
    if args.eval_only:
        model = AutoModelForCausalLM.from_pretrained(args.out)
        tokenizer = AutoTokenizer.from_pretrained(args.out)
        build_seconds = None
    else:
        tokenizer = build_tokenizer()
        torch.manual_seed(args.seed)
        model = build_model(tokenizer)
        print(f"{task!r}; model params {sum(p.numel() for p in model.parameters()):,}", flush=True)
        pretrain(
            model, tokenizer, task, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed
        )
        save(model, tokenizer, args.out)
        check_tokenizer(args.out, task)
        build_seconds = round(time.time() - t0, 1)
        digest = hashlib.sha256((args.out / "model.safetensors").read_bytes()).hexdigest()
        print(f"saved to {args.out} in {build_seconds}s; model.safetensors sha256 {digest}", flush=True)
    report = evaluate(
        model,
        tokenizer,
        task,
        problems=args.eval_problems,
        n=args.eval_n,
        chunk=args.eval_chunk,
        seed=args.seed,
    )
    report["model_params"] = sum(p.numel() for p in model.parameters())
    report["model_safetensors_sha256"] = hashlib.sha256(
        (args.out / "model.safetensors").read_bytes()
    ).hexdigest()
    report["model_dir_bytes"] = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    if build_seconds is not None:
        report["pretrain"] = {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
        }
        report["build_seconds"] = build_seconds
    else:
        previous = args.out / "prior_eval.json"
        if previous.exists():
            old = json.loads(previous.read_text())
            for key in ("pretrain", "build_seconds"):
                if key in old:
                    report[key] = old[key]
    report["total_seconds"] = round(time.time() - t0, 1)
    (args.out / "prior_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2), flush=True)


if __name__ == "__main__":
    main()
