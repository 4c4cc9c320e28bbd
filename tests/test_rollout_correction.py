"""Rollout correction (nsr_lightning/correction.py): truncated importance weights pi_old / pi_sampler
and the sequence mask, by hand, and through the update on a deliberately mismatched sampler."""

import math

import pytest
import torch

from nsr_lightning.correction import RolloutCorrection, importance_weights
from nsr_lightning.data import SyntheticTask
from nsr_lightning.data.templates import build_prompt
from nsr_lightning.logprobs import response_logprobs
from nsr_lightning.models import TINY_MODEL, load_policy, load_tokenizer
from nsr_lightning.objectives import Reinforce
from nsr_lightning.rollout import HFEngine, SamplingConfig
from nsr_lightning.update import Update, UpdateSettings

LN = math.log


def test_token_weights_by_hand():
    """Ratios 3, 0.5, 1 (cap 2): weights 2, 0.5, 1; one token truncated; padding weighs 0;
    ESS = (3.5)^2 / (3 * (4 + 0.25 + 1)) = 0.7778."""
    old = torch.tensor([[LN(0.6), LN(0.2), LN(0.9), 0.0]])
    sampler = torch.tensor([[LN(0.2), LN(0.4), LN(0.9), -5.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    w, s = importance_weights(old, sampler, mask, RolloutCorrection(enabled=True, token_cap=2.0))
    torch.testing.assert_close(w, torch.tensor([[2.0, 0.5, 1.0, 0.0]]), atol=1e-6, rtol=0)
    assert float(s["truncated"]) == 1 and float(s["tokens"]) == 3 and float(s["masked"]) == 0
    assert float(s["weight_min"]) == pytest.approx(0.5) and float(s["weight_max"]) == pytest.approx(2.0)
    ess = float(s["weight_sum"]) ** 2 / float(s["weight_sq_sum"]) / 3
    assert ess == pytest.approx(3.5**2 / (3 * 5.25), abs=1e-6)


def test_sequence_mask_by_geometric_mean():
    """Row 0: ratios 4 and 1, geometric mean 2 > 1.5: masked. Row 1: ratios 1.2, 1/1.2: mean 1."""
    old = torch.tensor([[LN(0.8), LN(0.5)], [LN(0.6), LN(0.5)]])
    sampler = torch.tensor([[LN(0.2), LN(0.5)], [LN(0.5), LN(0.6)]])
    mask = torch.ones(2, 2, dtype=torch.long)
    w, s = importance_weights(old, sampler, mask, RolloutCorrection(True, token_cap=5.0, sequence_cap=1.5))
    torch.testing.assert_close(w, torch.tensor([[0.0, 0.0], [1.2, 1 / 1.2]]), atol=1e-6, rtol=0)
    assert float(s["masked"]) == 1 and float(s["sequences"]) == 2


def test_knobs_are_checked():
    with pytest.raises(ValueError, match="token_cap"):
        RolloutCorrection(enabled=True, token_cap=0.5)
    with pytest.raises(ValueError, match="sequence_cap"):
        RolloutCorrection(enabled=True, sequence_cap=1.0)
    assert UpdateSettings(rollout_correction={"enabled": True}).rollout_correction.token_cap == 2.0


def test_objective_weights_only_the_policy_gradient_term():
    """On policy (ratio 1) a token's surrogate is -A; weights 0.5 halve it: pg_loss = -0.5."""
    obj = Reinforce()
    logp = torch.zeros(1, 2, requires_grad=True)
    loss, s = obj.loss(
        logp, logp.detach(), torch.ones(1), torch.ones(1, 2), is_weights=torch.full((1, 2), 0.5)
    )
    assert float(s["pg_loss"]) == pytest.approx(-0.5)


REWARDS = [1, 0, 0, 1, 0, 0, 0, 1]


def rollout(model, temperature):
    tok = load_tokenizer(str(TINY_MODEL))
    prompts = [build_prompt(tok, SyntheticTask().train_problem(i).question) for i in range(2)]
    sampling = SamplingConfig(temperature=temperature, max_new_tokens=16)
    batch = HFEngine(tok).generate(model, prompts, n=4, sampling=sampling, seed=0)
    batch.rewards = torch.tensor(REWARDS, dtype=torch.float32)
    with torch.no_grad():
        trainer, _ = response_logprobs(model, batch, with_entropy=False)
    return batch, trainer


def run(model, batch, correction):
    update = Update(model, Reinforce(), UpdateSettings(rollout_correction=correction, logprob_check_rows=0))
    return update.run(batch, [torch.optim.SGD(model.parameters(), lr=0.0)])


def test_update_on_a_mismatched_sampler():
    """The sampler's log-probs are the trainer's shifted by hand: ratios pi_old / pi_sampler of
    1/3, 2 (at the cap) and 1 in a fixed pattern over tokens.
    lr 0: every ratio is 1, so a token's surrogate is -A w and loss/policy = -sum(A w) / tokens."""
    model = load_policy(str(TINY_MODEL))
    batch, trainer = rollout(model, 1.0)
    rows, cols = torch.meshgrid(torch.arange(trainer.shape[0]), torch.arange(trainer.shape[1]), indexing="ij")
    pattern = (rows + cols) % 3
    shift = torch.where(pattern == 0, -LN(3.0), torch.where(pattern == 1, LN(2.0), 0.0))
    mask = batch.response_mask.float()
    batch.sampler_logprobs = (trainer - shift) * mask  # log(pi_old / pi_sampler) = shift
    hand_w = torch.where(pattern == 0, 1 / 3, torch.where(pattern == 1, 2.0, 1.0)) * mask
    stats = run(model, batch, RolloutCorrection(enabled=True, token_cap=2.0))
    adv = torch.where(batch.rewards > 0, 1.0, -1.0).unsqueeze(-1)
    want = -(adv * hand_w).sum() / mask.sum()
    assert stats.ratio("loss/policy") == pytest.approx(float(want), abs=1e-5)
    assert stats.ratio("rollout/is_weight_mean") == pytest.approx(float(hand_w.sum() / mask.sum()), abs=1e-5)
    assert stats.scalar("rollout/is_weight_min") == pytest.approx(1 / 3, abs=1e-5)
    assert stats.scalar("rollout/is_weight_max") == pytest.approx(2.0, abs=1e-5)
    ess = float(hand_w.sum()) ** 2 / float((hand_w**2).sum()) / float(mask.sum())
    assert stats.ratio("rollout/is_ess") == pytest.approx(ess, abs=1e-5)
    off = run(model, batch, RolloutCorrection(enabled=False))
    assert off.ratio("loss/policy") == pytest.approx(float(-(adv * mask).sum() / mask.sum()), abs=1e-5)
    assert "rollout/is_weight_mean" not in off.ratios


def test_update_truncates_above_the_cap():
    model = load_policy(str(TINY_MODEL))
    batch, trainer = rollout(model, 1.0)
    mask = batch.response_mask.float()
    batch.sampler_logprobs = (trainer - LN(3.0)) * mask  # every ratio 3: every weight the cap
    stats = run(model, batch, RolloutCorrection(enabled=True, token_cap=2.0))
    assert stats.ratio("rollout/is_truncated_ratio") == pytest.approx(1.0)
    assert stats.ratio("rollout/is_weight_mean") == pytest.approx(2.0, abs=1e-5)


def test_on_policy_at_t_06_every_weight_is_one():
    """A sampler whose log-probs are those of softmax(logits / 0.6) (the trainer's at the batch's
    temperature): weights 1 up to float rounding (the update's forward runs other batch shapes than
    the one that made the sampler's numbers: ~1e-6), nothing truncated, ESS 1."""
    model = load_policy(str(TINY_MODEL))
    batch, trainer = rollout(model, 0.6)
    batch.sampler_logprobs = trainer
    stats = run(model, batch, RolloutCorrection(enabled=True))
    assert stats.ratio("rollout/is_weight_mean") == pytest.approx(1.0, abs=1e-5)
    assert stats.scalar("rollout/is_weight_min") == pytest.approx(1.0, abs=1e-5)
    assert stats.scalar("rollout/is_weight_max") == pytest.approx(1.0, abs=1e-5)
    assert stats.ratio("rollout/is_truncated_ratio") == 0.0
    assert stats.ratio("rollout/is_ess") == pytest.approx(1.0, abs=1e-5)
