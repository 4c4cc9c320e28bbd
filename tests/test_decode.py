"""The HF engine's lean sampling loop against transformers' `generate`, token for token."""

import pytest
import torch

from nsr_lightning.models import TINY_MODEL, load_policy
from nsr_lightning.rollout.batch import SamplingConfig, pad_stack
from nsr_lightning.rollout.decode import filter_logits, sample_responses

EOS, PAD = 1, 0


@pytest.fixture(scope="module")
def model():
    return load_policy(str(TINY_MODEL)).eval()


def left_padded(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rows = [torch.randint(2, 29, (n,), generator=gen) for n in lengths]
    return pad_stack(rows, PAD, left=True), pad_stack([torch.ones_like(r) for r in rows], 0, left=True)


def hf_generate(model, ids, attn, s: SamplingConfig, n=1):
    greedy = s.temperature == 0
    out = model.generate(
        input_ids=ids, attention_mask=attn, do_sample=not greedy, max_new_tokens=s.max_new_tokens,
        temperature=None if greedy else s.temperature, top_k=None if greedy else s.top_k,
        top_p=None if greedy else s.top_p, num_return_sequences=n, pad_token_id=PAD, eos_token_id=EOS,
    )  # fmt: skip
    return out[:, ids.shape[1] :]


def same_responses(ours, theirs):
    """Equal up to ours being cut at the longest response (generate pads to max_new_tokens at most)."""
    width = ours.shape[1]
    return torch.equal(ours, theirs[:, :width]) and bool((theirs[:, width:] == PAD).all())


def test_greedy_batch_matches_generate(model):
    """Left-padded prompts of different lengths; rows finish at different steps, so the loop drops
    finished rows (compaction) along the way and must still give generate's tokens."""
    ids, attn = left_padded([5, 12, 9, 16, 7, 11, 14, 6])
    greedy = SamplingConfig(temperature=0, max_new_tokens=60)
    ours = sample_responses(model, ids, attn, n=1, sampling=greedy, stop_ids=[EOS], pad_id=PAD)
    lengths = (ours != PAD).sum(-1)
    assert lengths.unique().numel() > 1  # rows ended at different steps: compaction happened
    assert same_responses(ours, hf_generate(model, ids, attn, greedy))
    repeated = sample_responses(model, ids, attn, n=3, sampling=greedy, stop_ids=[EOS], pad_id=PAD)
    assert torch.equal(repeated, ours.repeat_interleave(3, dim=0))  # row i * n + j answers prompt i


@pytest.mark.parametrize(
    "temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (0.9, 4, 0.6)]
)
def test_sampling_matches_generate_with_the_same_seed(model, temperature, top_k, top_p):
    """One row: both draw one multinomial a token from the global generator, so the same seed must
    give the same tokens whenever the two filter the distribution the same way."""
    ids, attn = left_padded([12])
    s = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=60)
    for seed in range(4):
        torch.manual_seed(seed)
        ours = sample_responses(model, ids, attn, n=1, sampling=s, stop_ids=[EOS], pad_id=PAD)
        torch.manual_seed(seed)
        assert same_responses(ours, hf_generate(model, ids, attn, s))


def test_filter_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda s: torch.isfinite(filter_logits(logits, s)).tolist()  # noqa: E731
    assert kept(SamplingConfig(top_k=2)) == [[True, True, False, False]]
    assert kept(SamplingConfig(top_p=0.8)) == [[True, True, False, False]]  # 0.5 + 0.3 reaches 0.8
    assert kept(SamplingConfig(top_p=0.81)) == [[True, True, True, False]]
    assert kept(SamplingConfig(top_p=0.1)) == [[True, False, False, False]]  # the top token stays
    scaled = filter_logits(logits, SamplingConfig(temperature=0.5))
    assert torch.allclose(scaled, logits * 2)


def test_batched_sampling_is_the_model_distribution(model):
    """Many rows of one prompt: the first token's frequencies are the model's next-token
    probabilities (a chi-square-sized tolerance), and every row stops at its first EOS."""
    ids, attn = left_padded([10])
    n = 4000
    out = sample_responses(
        model, ids, attn, n=n, sampling=SamplingConfig(max_new_tokens=3), stop_ids=[EOS], pad_id=PAD
    )
    with torch.no_grad():
        probs = model(input_ids=ids, attention_mask=attn).logits[0, -1].float().softmax(-1)
    freq = torch.bincount(out[:, 0], minlength=len(probs)).float() / n
    assert (freq - probs).abs().max() < 4 * (probs * (1 - probs) / n).sqrt().max() + 1e-3
    for row in out:  # nothing after the first EOS but padding
        hits = (row == EOS).nonzero()
        if len(hits):
            assert (row[hits[0, 0] + 1 :] == PAD).all()


def test_engine_falls_back_to_generate_for_a_cache_it_cannot_reorder(model, monkeypatch):
    """A model whose KV cache cannot drop rows: the engine samples with generate (same seed, same
    tokens as generate itself) instead of failing."""
    from transformers.cache_utils import Cache

    from nsr_lightning.models import load_tokenizer
    from nsr_lightning.rollout import HFEngine

    tok = load_tokenizer(str(TINY_MODEL))
    engine = HFEngine(tok)
    s = SamplingConfig(temperature=1.0, max_new_tokens=30)
    ids, attn = left_padded([9])
    monkeypatch.delattr(Cache, "batch_select_indices")
    ours = engine.generate(model, [ids[0].tolist()], n=1, sampling=s, seed=5)  # seeds itself
    with torch.random.fork_rng():
        torch.manual_seed(5)
        theirs = hf_generate(model, ids, attn, s)[0]
    assert not engine.lean
    length = int(ours.response_mask.sum())
    assert ours.response_ids[0, :length].tolist() == theirs[:length].tolist()
