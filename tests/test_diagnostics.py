"""Per-sign diagnostics (nsr_lightning/diagnostics.py) on hand-built batches of the tiny model."""

import pytest
import torch

from nsr_lightning.config_rules import ConfigError, check_group, check_values
from nsr_lightning.diagnostics import sign_gradients
from nsr_lightning.models import TINY_MODEL, load_policy
from nsr_lightning.objectives import Reinforce
from nsr_lightning.update import Update, UpdateSettings
from tests.test_update import REWARDS, adamw, scored_rollout

ON = UpdateSettings(diagnostics_every_n_steps=1)


def _rows(update, batch):
    rewards = batch.rewards
    return {"advantages": update.objective.advantages(rewards, batch.group_ids)}


@pytest.fixture(scope="module")
def model_and_batch():
    model = load_policy(str(TINY_MODEL))
    return model, scored_rollout(model, REWARDS)


@pytest.mark.parametrize("reward, zero, other", [(0.0, "pos", "neg"), (1.0, "neg", "pos")])
def test_one_sign_only_has_a_zero_other_part(model_and_batch, reward, zero, other):
    """All incorrect: the positive part is 0; all correct: the negative part is 0; the cosine of
    a zero part is undefined and not logged."""
    model, batch = model_and_batch
    batch.rewards = torch.full((16,), reward)
    stats = Update(model, Reinforce(), ON).run(batch, [adamw(model, 0.0)])
    assert stats.scalar(f"diag/grad_norm_{zero}") == 0.0
    assert stats.scalar(f"diag/grad_norm_{other}") > 0.0
    assert "diag/grad_cos" not in stats.scalars


@pytest.mark.parametrize("micro", [0, 5])
def test_parts_sum_to_the_full_loss_gradient(model_and_batch, micro):
    model, batch = model_and_batch
    batch.rewards = torch.tensor(REWARDS, dtype=torch.float32)
    update = Update(model, Reinforce(lambda_pos=0.5), UpdateSettings(micro_batch_size=micro))
    update.stats = None  # sign_gradients must not need the step's statistics
    rows = _rows(update, batch)
    pos, neg, _ = sign_gradients(update, batch, rows)
    params = [p for p in model.parameters() if p.requires_grad]
    logprobs, entropy = update._logprobs(model, batch)
    loss, _ = update.objective.loss(
        logprobs, logprobs.detach(), rows["advantages"], batch.response_mask, entropy=entropy
    )
    full = torch.autograd.grad(loss, params, allow_unused=True)
    for p, n, f in zip(pos, neg, full, strict=True):
        f = torch.zeros_like(p) if f is None else f
        torch.testing.assert_close(p + n, f, atol=1e-6, rtol=0)
    assert all(p.grad is None for p in params)  # no .grad written


def _step(lam_pos, lam_neg, lr, every):
    model = load_policy(str(TINY_MODEL))
    batch = scored_rollout(model, REWARDS)
    settings = UpdateSettings(diagnostics_every_n_steps=every, mini_batch_size=8, micro_batch_size=3)
    update = Update(model, Reinforce(lambda_pos=lam_pos, lambda_neg=lam_neg), settings)
    stats = update.run(batch, [adamw(model, lr)])
    return model, stats


def test_psr_raises_correct_logp_and_nsr_lowers_incorrect_logp():
    _, psr = _step(1.0, 0.0, 1e-4, 1)
    assert psr.ratio("diag/logp_change_correct") > 0
    assert psr.ratios["diag/logp_change_incorrect"][1] == 0  # PSR keeps no incorrect sample
    _, nsr = _step(0.0, 1.0, 1e-4, 1)
    assert nsr.ratio("diag/logp_change_incorrect") < 0
    # lowering the sampled tokens' probability moves mass onto the unsampled ones
    assert nsr.ratio("diag/unsampled_mass_change") > 0


def test_diagnostics_do_not_change_the_training_result():
    off, stats_off = _step(1.0, 1.0, 1e-3, 0)
    on, stats_on = _step(1.0, 1.0, 1e-3, 1)
    assert "diag/grad_norm_pos" in stats_on.scalars and "diag/grad_norm_pos" not in stats_off.scalars
    for a, b in zip(off.parameters(), on.parameters(), strict=True):
        assert torch.equal(a, b)
    assert stats_on.scalar("train/grad_norm") == stats_off.scalar("train/grad_norm")


def test_every_n_steps_and_the_rules():
    model = load_policy(str(TINY_MODEL))
    batch = scored_rollout(model, REWARDS)
    update = Update(model, Reinforce(), UpdateSettings(diagnostics_every_n_steps=2))
    assert "diag/grad_norm_pos" not in update.run(batch, [adamw(model, 0.0)], step=1).scalars
    assert "diag/grad_norm_pos" in update.run(batch, [adamw(model, 0.0)], step=2).scalars
    with pytest.raises(ConfigError, match="diagnostics_every_n_steps"):
        UpdateSettings(diagnostics_every_n_steps=-1)
    fsdp = {"_target_": "lightning.pytorch.strategies.ModelParallelStrategy"}
    with pytest.raises(ConfigError, match="under FSDP2"):
        check_values({"algo.diagnostics_every_n_steps": 1, "trainer.strategy": fsdp})
    check_values({"algo.diagnostics_every_n_steps": 0, "trainer.strategy": fsdp})
    check_values({"algo.diagnostics_every_n_steps": 1, "trainer.strategy": "auto"})
    check_group("algo", {"diagnostics_every_n_steps": 3})


def test_fit_logs_diagnostics_only_at_their_steps(fast_overrides, tmp_path):
    """A metric logged every N steps appears in metrics.csv at those steps only: Lightning would
    otherwise repeat its last value at the steps in between (RolloutCallback resets them)."""
    import csv

    from nsr_lightning.cli import main

    args = [*fast_overrides, "trainer.max_steps=3", "algo.diagnostics_every_n_steps=2", "objective=reinforce"]
    assert main(["fit", *args, "callbacks.pass_at_k.before=false", "callbacks.pass_at_k.after=false"]) == 0
    with open(tmp_path / "run" / "csv" / "version_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/updates")]
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    assert [bool(r["diag/grad_norm_neg"]) for r in rows] == [True, False, True]
    assert all(r["rollout/correct_ratio"] for r in rows)  # metrics of every step stay
