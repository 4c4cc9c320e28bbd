"""The trainer scores responses under the distribution they were sampled from: softmax(logits / T).

Hand numbers: logits [2, 0, -1], sampled token 0: log-prob -0.170 at T = 1 and -0.042
at T = 0.6."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from nsr_lightning.logprobs import response_logprobs
from nsr_lightning.models import TINY_MODEL, load_policy, load_tokenizer
from nsr_lightning.rollout import HFEngine, SamplingConfig
from nsr_lightning.rollout.batch import RolloutBatch, cat_batches
from nsr_lightning.rollout.decode import filter_logits

LOGITS = [2.0, 0.0, -1.0]


class FixedLogits(nn.Module):
    """Logits [2, 0, -1] at every position, whatever the input."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, logits_to_keep=0, **_):
        n, length = input_ids.shape
        keep = logits_to_keep or length
        logits = torch.tensor(LOGITS).expand(n, keep, 3) + 0 * self.dummy
        return SimpleNamespace(logits=logits)


def batch(temperature: float) -> RolloutBatch:
    return RolloutBatch(
        prompt_ids=torch.tensor([[1]]),
        prompt_mask=torch.tensor([[1]]),
        response_ids=torch.tensor([[0]]),
        response_mask=torch.tensor([[1]]),
        group_ids=torch.tensor([0]),
        truncated=torch.tensor([False]),
        texts=["a"],
        temperature=temperature,
    )


def by_hand(t: float) -> tuple[float, float]:
    """(log p(token 0), entropy) of softmax(LOGITS / t), written out."""
    z = [x / t for x in LOGITS]
    log_norm = math.log(sum(math.exp(v) for v in z))
    logp = [v - log_norm for v in z]
    return logp[0], -sum(math.exp(v) * v for v in logp)


@pytest.mark.parametrize("t, issue_value", [(1.0, -0.170), (0.6, -0.042)])
def test_logprob_and_entropy_at_the_sampling_temperature(t, issue_value):
    with torch.no_grad():
        logp, ent = response_logprobs(FixedLogits(), batch(t))
    hand_logp, hand_ent = by_hand(t)
    assert round(float(logp[0, 0]), 3) == issue_value
    assert float(logp[0, 0]) == pytest.approx(hand_logp, abs=1e-6)
    assert float(ent[0, 0]) == pytest.approx(hand_ent, abs=1e-6)


def test_greedy_batches_are_scored_at_temperature_one():
    logp, _ = response_logprobs(FixedLogits(), batch(0.0))
    assert float(logp[0, 0]) == pytest.approx(by_hand(1.0)[0], abs=1e-6)


def test_on_policy_ratio_is_one_at_t_06():
    """The HF sampler's probability of the sampled token (decode.filter_logits: logits / T, then
    softmax) against the trainer's: ratio 1 at T = 0.6; scoring at T = 1 would give 0.88."""
    sampling = SamplingConfig(temperature=0.6)
    sampler_logp = filter_logits(torch.tensor([LOGITS]), sampling).log_softmax(-1)[0, 0]
    trainer_logp, _ = response_logprobs(FixedLogits(), batch(0.6))
    assert float(torch.exp(trainer_logp[0, 0] - sampler_logp)) == pytest.approx(1.0, abs=1e-6)
    at_one, _ = response_logprobs(FixedLogits(), batch(1.0))
    assert float(torch.exp(at_one[0, 0] - sampler_logp)) == pytest.approx(
        math.exp(-0.1698 + 0.0424), abs=1e-3
    )


def test_the_batch_keeps_its_temperature_through_select_trim_and_cat():
    b = batch(0.6)
    assert b.select(torch.tensor([0])).temperature == 0.6 and b.trimmed().temperature == 0.6
    assert cat_batches([b, b]).temperature == 0.6
    with pytest.raises(ValueError, match="different temperatures"):
        cat_batches([b, batch(1.0)])


def test_hf_engine_records_the_sampling_temperature():
    tok = load_tokenizer(str(TINY_MODEL))
    model = load_policy(str(TINY_MODEL))
    prompt = tok("3+4=", add_special_tokens=False)["input_ids"]
    out = HFEngine(tok).generate(
        model, [prompt], n=2, sampling=SamplingConfig(temperature=0.6, max_new_tokens=4), seed=0
    )
    assert out.temperature == 0.6
