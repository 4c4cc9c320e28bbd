"""The Hugging Face engine: the default, runs anywhere (CPU included)."""

from __future__ import annotations

import sys

import torch
from torch import Tensor, nn

from nsr_lightning.config_rules import check
from nsr_lightning.fsdp import is_sharded
from nsr_lightning.rollout.batch import RolloutBatch, SamplingConfig, build_batch, pad_stack
from nsr_lightning.rollout.decode import UnsupportedCache, sample_responses
from nsr_lightning.rollout.stops import stop_token_ids


class HFEngine:
    """Samples with the training model itself; weight sync is a no-op (it *is* the policy).

    Sampling runs the lean loop of `decode.py` (prompt prefilled once per prompt, finished rows
    dropped), with transformers' sampling rules; multi-rank FSDP2 uses `generate` instead.

    batch_size bounds the number of sequences per `generate` call (prompts x n). Under FSDP2
    every forward is a collective: ranks decode in lock-step (`synced_gpus`) and make the same
    number of `generate` calls, so every rank must call `generate` (with at least one prompt).
    """

    name = "hf"

    def __init__(self, tokenizer, *, batch_size: int = 512, lean: bool = True) -> None:
        check("rollout.engine.batch_size", batch_size)
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs a pad token and an EOS token")
        self.pad_id = int(tokenizer.pad_token_id)
        self.stop_ids = stop_token_ids(tokenizer)  # eos, generation config's eos, end of turn
        self.lean = bool(lean)  # the lean loop of decode.py; False: transformers' generate (also
        # set after a model whose cache the loop cannot use)

    def _sample(self, model, input_ids, attn, *, n: int, sampling: SamplingConfig, synced: bool) -> Tensor:
        """(b, P) prompts -> (b * n, R) responses. The lean loop (`decode.py`), except under
        multi-rank FSDP2, where `generate(synced_gpus=True)` keeps the ranks' forwards in step,
        and for a model whose KV cache cannot drop rows."""
        if not synced and self.lean:
            try:
                return sample_responses(
                    model, input_ids, attn, n=n, sampling=sampling, stop_ids=self.stop_ids, pad_id=self.pad_id
                )
            except UnsupportedCache as err:  # e.g. a recurrent model's cache: generate from now on
                print(f"HF engine: {err}; sampling with transformers' generate", file=sys.stderr)
                self.lean = False
        greedy = sampling.temperature == 0
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attn,
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            top_k=None if greedy else sampling.top_k,
            max_new_tokens=sampling.max_new_tokens,
            num_return_sequences=n,
            pad_token_id=self.pad_id,
            eos_token_id=self.stop_ids,
            use_cache=True,
            synced_gpus=synced,
        )  # (b * n, P + R)
        return out[:, input_ids.shape[1] :]

    def sync_weights(self, model: nn.Module) -> None:
        """Nothing to do: generation runs on the training model."""

    @torch.no_grad()
    def generate(
        self, model: nn.Module, prompts: list[list[int]], *, n: int, sampling: SamplingConfig, seed: int
    ) -> RolloutBatch:
        """n responses per prompt; the random stream is a function of `seed` only."""
        if not prompts:
            raise ValueError("generate() needs at least one prompt")
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        per_call = max(1, self.batch_size // n)
        chunks = [prompts[i : i + per_call] for i in range(0, len(prompts), per_call)]
        synced = is_sharded(model) and torch.distributed.get_world_size() > 1
        if synced:  # the same number of generate calls on every rank: pad with a repeat of the last
            n_calls = torch.tensor(len(chunks), device=device)
            torch.distributed.all_reduce(n_calls, op=torch.distributed.ReduceOp.MAX)
            padding = int(n_calls) - len(chunks)
        else:
            padding = 0
        response_rows = []
        devices = [device] if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                for i, rows in enumerate(chunks + chunks[-1:] * padding):
                    chunk = [torch.tensor(p, dtype=torch.long) for p in rows]
                    input_ids = pad_stack(chunk, self.pad_id, left=True).to(device)  # (b, P)
                    attn = pad_stack([torch.ones_like(p) for p in chunk], 0, left=True).to(device)
                    out = self._sample(model, input_ids, attn, n=n, sampling=sampling, synced=synced)
                    if i >= len(chunks):
                        continue  # a padding call: only there to keep the ranks in step
                    response_rows.append(out.cpu())
        finally:
            model.train(was_training)
        return build_batch(
            self.tokenizer,
            prompts,
            response_rows,
            n,
            eos_ids=self.stop_ids,
            pad_id=self.pad_id,
            temperature=sampling.temperature,
        )
