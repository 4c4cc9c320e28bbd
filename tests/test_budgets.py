"""Budgets of the hot path, counted (nsr_lightning/op_counts.py), not timed: what a GPU step must
not do more of, checked on any device.

- decode: at most one host synchronisation per decoded token (the loop's check of which rows are
  done; transformers' own padding check per token is avoided);
- update: host synchronisations per micro-batch a small constant, the same for any sequence
  length and vocabulary;
- update: full-vocabulary float32 tensors per micro-batch at most those of the plainest
  correct code (`raw_update` below: forward, log-softmax, gather, backward).
"""

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from nsr_lightning.objectives import GRPO, Reinforce
from nsr_lightning.op_counts import OpCounts
from nsr_lightning.rollout.batch import RolloutBatch, SamplingConfig
from nsr_lightning.rollout.decode import sample_responses
from nsr_lightning.update import Update, UpdateSettings


def model_of(vocab: int) -> Qwen3ForCausalLM:
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    return Qwen3ForCausalLM(config)


def rollout_of(vocab: int, prompts: int = 4, n: int = 4, width: int = 12) -> RolloutBatch:
    """prompts x n responses of different lengths (1 to `width` tokens), left-padded prompts."""
    gen = torch.Generator().manual_seed(1)
    rows = prompts * n
    prompt_ids = torch.randint(3, vocab, (prompts, 6), generator=gen).repeat_interleave(n, 0)
    prompt_mask = torch.ones_like(prompt_ids)
    prompt_mask[:n, :2] = 0  # the first prompt is shorter
    lengths = torch.randint(1, width + 1, (rows,), generator=gen)
    lengths[0] = width
    response_mask = (torch.arange(width) < lengths[:, None]).long()
    response_ids = torch.randint(3, vocab, (rows, width), generator=gen) * response_mask
    return RolloutBatch(
        prompt_ids=prompt_ids * prompt_mask,
        prompt_mask=prompt_mask,
        response_ids=response_ids,
        response_mask=response_mask,
        group_ids=torch.arange(prompts).repeat_interleave(n),
        truncated=torch.zeros(rows, dtype=torch.bool),
        texts=["x"] * rows,
        rewards=torch.tensor([1.0, 0.0, 0.0, 1.0] * prompts),
    )


# per micro-batch: the prompt-shared forward's distinct prompts (unique, bincount, their count),
# the trim of all-padding columns, transformers' padding checks in its two forwards
SYNCS_PER_MICRO_BATCH = 5


def decode_syncs(tokens: int) -> int:
    model = model_of(128).eval()
    ids = torch.randint(3, 128, (3, 7), generator=torch.Generator().manual_seed(0))
    attn = torch.ones_like(ids)
    attn[0, :3] = 0  # padding: transformers would check it at every step
    sampling = SamplingConfig(max_new_tokens=tokens)
    with OpCounts(128) as counts:
        out = sample_responses(model, ids, attn, n=2, sampling=sampling, stop_ids=[], pad_id=0)
    assert out.shape == (6, tokens)  # no stop token: every row decodes every token
    return counts.host_syncs


def test_decode_syncs_at_most_one_per_token():
    extra = decode_syncs(24) - decode_syncs(8)
    assert extra <= 16, f"{extra} host syncs for 16 more decoded tokens"


def update_counts(vocab: int, width: int, micro: int, objective=None) -> OpCounts:
    model = model_of(vocab)
    batch = rollout_of(vocab, width=width)
    settings = UpdateSettings(micro_batch_size=micro, entropy_of_all_responses=False)
    update = Update(model, objective or GRPO(kl_coef=0.0), settings)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with OpCounts(vocab) as counts:
        update.run(batch, [opt])
    return counts


@pytest.mark.parametrize("objective", [GRPO(kl_coef=0.0), Reinforce(lambda_pos=0.0)], ids=["grpo", "nsr"])
def test_update_syncs_per_micro_batch_are_constant(objective):
    """16 rows (NSR: the 8 incorrect ones) in micro-batches of 8 or 4 or 2: the syncs grow by a
    small constant per micro-batch, and do not depend on the response width or the vocabulary."""
    base = update_counts(256, 12, 8, objective).host_syncs
    more = update_counts(256, 12, 2, objective).host_syncs
    micro_batches = (16 if objective.lambda_pos else 8) // 2 - (16 if objective.lambda_pos else 8) // 8
    assert (more - base) / micro_batches <= SYNCS_PER_MICRO_BATCH, (base, more)
    assert update_counts(512, 24, 4, objective).host_syncs == update_counts(256, 12, 4, objective).host_syncs


def raw_update(vocab: int, micro: int) -> OpCounts:
    """The plainest correct update of the same rows: per micro-batch a forward of prompt +
    response, log-softmax in float32, the targets' log-probs, a REINFORCE loss, backward."""
    model = model_of(vocab)
    batch = rollout_of(vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    adv = torch.where(batch.rewards > 0, 1.0, -1.0)
    prompt_len = batch.prompt_ids.shape[1]
    with OpCounts(vocab) as counts:
        for rows in torch.arange(len(batch)).split(micro):
            sub = batch.select(rows)
            logits = model(input_ids=sub.input_ids, attention_mask=sub.attention_mask).logits
            logp = logits[:, prompt_len - 1 : -1].float().log_softmax(-1)
            logp = logp.gather(-1, sub.response_ids.unsqueeze(-1)).squeeze(-1)
            loss = -(adv[rows, None] * logp * sub.response_mask).sum() / batch.response_mask.sum()
            loss.backward()
        opt.step()
    return counts


@pytest.mark.parametrize("micro", [16, 4])
def test_update_full_vocab_tensors_at_most_raw(micro):
    ours = update_counts(512, 12, micro, Reinforce(lambda_pos=1.0))
    raw = raw_update(512, micro)
    assert ours.full_vocab_f32 <= raw.full_vocab_f32, (ours.full_vocab_f32, raw.full_vocab_f32)
    assert ours.full_vocab_f32_bytes <= raw.full_vocab_f32_bytes
