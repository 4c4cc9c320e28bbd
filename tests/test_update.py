"""The update without a Trainer (nsr_lightning/update.py): a scored batch and plain torch
optimizers in, the step's statistics out; the step-level loss metrics against hand formulas."""

import pytest
import torch

from nsr_lightning.data import SyntheticTask
from nsr_lightning.data.templates import build_prompt
from nsr_lightning.models import TINY_MODEL, load_critic, load_policy, load_reference, load_tokenizer
from nsr_lightning.objectives import PPO, Reinforce
from nsr_lightning.rollout import HFEngine, SamplingConfig
from nsr_lightning.update import Update, UpdateSettings


def scored_rollout(model, rewards):
    """4 prompts of the embedded task x 4 responses, rewards given by hand (N = 16)."""
    tok = load_tokenizer(str(TINY_MODEL))
    prompts = [build_prompt(tok, SyntheticTask().train_problem(i).question) for i in range(4)]
    batch = HFEngine(tok).generate(model, prompts, n=4, sampling=SamplingConfig(max_new_tokens=24), seed=0)
    batch.rewards = torch.tensor(rewards, dtype=torch.float32)
    return batch


REWARDS = [1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 0]


def adamw(model, lr):
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)


@pytest.mark.parametrize("lam", [0.1, 1.0])
def test_loss_metrics_are_the_token_weighted_mean_of_the_step(lam):
    """lr = 0 keeps the policy fixed, so every ratio is 1 and a token's surrogate is -A: over
    all micro-batches and updates, loss/policy = -(sum_i A_i L_i) / (sum_i L_i), L_i = response
    length, A = +lambda (correct) / -1 (incorrect). A last-micro-batch value would differ."""
    model = load_policy(str(TINY_MODEL))
    batch = scored_rollout(model, REWARDS)
    settings = UpdateSettings(mini_batch_size=8, micro_batch_size=3, ppo_epochs=2)
    update = Update(model, Reinforce(lambda_pos=lam, lambda_neg=1.0), settings)
    stats = update.run(batch, [adamw(model, 0.0)])
    lengths = batch.response_mask.sum(-1).double()
    adv = torch.where(batch.rewards > 0, lam, -1.0).double()
    want = -(adv * lengths).sum() / lengths.sum()
    assert stats.ratio("loss/policy") == pytest.approx(float(want), abs=1e-5)
    assert stats.ratio("loss/total") == pytest.approx(float(want), abs=1e-5)
    # 2 epochs x 2 mini-batches of 8, each as micro-batches of 3, 3 and 2 rows
    assert stats.scalar("train/updates") == 4 and update.policy_version == 4
    assert stats.ratios["loss/policy"][1].item() == pytest.approx(2 * lengths.sum().item())
    assert stats.ratio("train/clip_fraction") == 0.0


def test_nsr_trains_on_incorrect_samples_only():
    model = load_policy(str(TINY_MODEL))
    before = [p.detach().clone() for p in model.parameters()]
    batch = scored_rollout(model, REWARDS)
    stats = Update(model, Reinforce(lambda_pos=0.0)).run(batch, [adamw(model, 1e-3)])
    assert stats.scalar("train/samples_kept") == REWARDS.count(0)
    assert stats.ratio("train/samples_kept_ratio") == pytest.approx(REWARDS.count(0) / 16)
    assert stats.ratio("rollout/correct_ratio") == pytest.approx(REWARDS.count(1) / 16)
    assert stats.ratio("loss/policy") == pytest.approx(1.0, abs=1e-6)  # -A with A = -1, ratio 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_nothing_kept_steps_without_changing_the_weights(capsys):
    model = load_policy(str(TINY_MODEL))
    before = [p.detach().clone() for p in model.parameters()]
    batch = scored_rollout(model, [1] * 16)  # NSR with every answer correct
    update = Update(model, Reinforce(lambda_pos=0.0))
    stats = update.run(batch, [adamw(model, 1e-3)])
    assert stats.scalar("train/updates") == 0 and update.policy_version == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert "keeps 0 of 16 samples" in capsys.readouterr().err


def test_ppo_trains_its_critic_behind_the_objective_interface():
    """The update names no objective: PPO's critic comes in as an extra model with its optimizer;
    GAE, the value loss and their statistics come from the objective."""
    model, critic = load_policy(str(TINY_MODEL)), load_critic(str(TINY_MODEL))
    critic_before = [p.detach().clone() for p in critic.parameters()]
    batch = scored_rollout(model, REWARDS)
    objective = PPO()
    ref = load_reference(str(TINY_MODEL))  # PPO's KL reward penalty
    settings = UpdateSettings(mini_batch_size=8)
    update = Update(model, objective, settings, ref_model=ref, extras={"critic": critic})
    stats = update.run(batch, [adamw(model, 1e-4), adamw(critic, objective.critic_lr)])
    assert stats.scalar("train/updates") == 2
    for name in ("loss/value", "train/value_clip_fraction", "train/approx_kl_ref"):
        assert name in stats.ratios
    assert "train/explained_variance" in stats.scalars and "train/critic_grad_norm" in stats.scalars
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, critic.parameters(), strict=True))
    with pytest.raises(TypeError, match="step_advantages"):
        objective.advantages(batch.rewards, batch.group_ids)
