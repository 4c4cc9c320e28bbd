"""GRPO, NGRPO, DAPO, Dr.GRPO and PPO against the papers' worked numbers and hand computation."""

import math

import pytest
import torch

from nsr_lightning.objectives import (
    DAPO,
    GRPO,
    NGRPO,
    PPO,
    DrGRPO,
    Reinforce,
    gae,
    group_stats,
    kl_estimate,
)

G = 8  # responses per prompt in the worked examples (NGRPO's: G = 8 real samples, K = 1 virtual one)


def groups_with(counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards (1 correct, 0 wrong) and group ids for groups of G with `counts` correct each."""
    rewards = torch.zeros(len(counts) * G)
    for g, c in enumerate(counts):
        rewards[g * G : g * G + c] = 1.0
    return rewards, torch.arange(len(counts)).repeat_interleave(G)


# NGRPO, G = 8, K = 1 virtual sample of reward 1: (correct advantage, incorrect advantage)
NGRPO_WORKED = {0: (None, -0.333), 1: (1.764, -0.504), 4: (0.843, -1.054), 7: (0.333, -2.667), 8: (0.0, None)}


@pytest.mark.parametrize("c", sorted(NGRPO_WORKED))
def test_ngrpo_worked_example(c):
    rewards, gids = groups_with([c])
    adv = NGRPO().advantages(rewards, gids)
    want_pos, want_neg = NGRPO_WORKED[c]
    if want_pos is not None:
        assert adv[:c].tolist() == pytest.approx([want_pos] * c, abs=1e-3)
    if want_neg is not None:
        assert adv[c:].tolist() == pytest.approx([want_neg] * (G - c), abs=1e-3)


def test_grpo_worked_example_and_homogeneous_groups():
    rewards, gids = groups_with([1, 0, 8])
    adv = GRPO().advantages(rewards, gids).view(3, G)
    assert adv[0, 0].item() == pytest.approx(2.475, abs=1e-3)
    assert adv[0, 1:].tolist() == pytest.approx([-0.354] * 7, abs=1e-3)
    assert adv[1:].abs().max().item() == 0.0  # GRPO learns nothing from homogeneous groups
    # by hand: mean 1/8, unbiased std sqrt(1/8); (1 - 1/8) / sqrt(1/8) = 2.4749
    assert adv[0, 0].item() == pytest.approx((7 / 8) / math.sqrt(1 / 8), rel=1e-5)


def test_dr_grpo_advantage_is_centred_reward_only():
    rewards, gids = groups_with([1, 4])
    adv = DrGRPO().advantages(rewards, gids).view(2, G)
    assert adv[0, 0].item() == pytest.approx(7 / 8) and adv[0, 1].item() == pytest.approx(-1 / 8)
    assert adv[1, 0].item() == pytest.approx(0.5) and adv[1, 7].item() == pytest.approx(-0.5)


def test_group_stats_with_virtual_samples_by_hand():
    rewards, gids = groups_with([0])
    mean, std, n_correct, size = group_stats(rewards, gids, extra_value=1.0, extra_count=1)
    # values: eight 0s and one 1 -> mean 1/9; unbiased var (8/81 + 64/81) / 8 = 1/9
    assert mean[0].item() == pytest.approx(1 / 9) and std[0].item() == pytest.approx(1 / 3)
    assert n_correct[0].item() == 0 and size[0].item() == G  # virtual samples are not real ones


@pytest.mark.parametrize(
    "objective, kept_groups",
    [(GRPO(), [1, 1, 1]), (NGRPO(), [1, 1, 0]), (DAPO(), [1, 0, 0]), (DrGRPO(), [1, 1, 1])],
    ids=["grpo", "ngrpo", "dapo", "dr_grpo"],
)
def test_group_filters(objective, kept_groups):
    rewards, gids = groups_with([3, 0, 8])  # mixed, all wrong, all correct
    keep = objective.keep(rewards, gids).view(3, G)
    assert keep.all(-1).tolist() == [bool(k) for k in kept_groups]
    assert (keep.any(-1) == keep.all(-1)).all()  # whole groups, never part of one


@pytest.mark.parametrize("cls", [GRPO, NGRPO, DAPO, DrGRPO, PPO, Reinforce])
def test_lambdas_combine_with_every_objective(cls):
    """PSR / NSR / W-REINFORCE weights apply to any advantage: NSR-style drops correct samples."""
    rewards, gids = groups_with([3, 5])
    nsr = cls(lambda_pos=0.0)
    keep = nsr.keep(rewards, gids)
    assert keep.tolist() == (rewards == 0).tolist()
    if cls is not PPO:  # PPO weighs its per-token advantages (test_ppo_token_advantages_by_hand)
        full = cls().advantages(rewards, gids)
        weighted = cls(lambda_pos=0.1).advantages(rewards, gids)
        assert weighted.tolist() == pytest.approx(torch.where(rewards > 0, 0.1 * full, full).tolist())


def test_w_reinforce_lambda_one_is_reinforce_across_the_family():
    rewards, gids = groups_with([3, 5])
    a = Reinforce(name="w_reinforce", lambda_pos=1.0).advantages(rewards, gids)
    b = Reinforce().advantages(rewards, gids)
    assert torch.equal(a, b)


# ---- KL estimators ---------------------------------------------------------------------------
def test_kl_estimators_match_their_definitions():
    logp = torch.tensor([-0.5, -2.0, -1.0])
    ref = torch.tensor([-1.0, -1.5, -1.0])
    d = logp - ref  # log pi - log pi_ref
    assert kl_estimate(logp, ref, "k1").tolist() == pytest.approx(d.tolist())
    assert kl_estimate(logp, ref, "k2").tolist() == pytest.approx((0.5 * d**2).tolist())
    assert kl_estimate(logp, ref, "k3").tolist() == pytest.approx((torch.exp(-d) - 1 + d).tolist())
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_estimate(logp, ref, "k4")


def test_k3_is_capped_per_token_as_verl_does():
    """verl's low_var_kl: log r clamped to [-20, 20], then k3 clamped to [-10, 10] per token."""
    logp = torch.tensor([0.0, 0.0, 0.0, -3.0])
    ref = torch.tensor([25.0, 2.0, -25.0, -1.0])  # log r = 25, 2, -25, 2
    k3 = kl_estimate(logp, ref, "k3")
    # exp(20) - 21 = 4.85e8 -> 10; e^2 - 3 = 4.389; exp(-20) + 19 = 19.0 -> 10; 4.389
    assert k3.tolist() == pytest.approx([10.0, 4.389056, 10.0, 4.389056], rel=1e-6)
    logp.requires_grad_(True)
    kl_estimate(logp, ref, "k3").sum().backward()
    # d k3 / d logp = 1 - r where uncapped (r = e^2), 0 where capped
    assert logp.grad.tolist() == pytest.approx([0.0, 1 - 7.389056, 0.0, 1 - 7.389056], rel=1e-6)


def test_kl_estimators_are_unbiased_where_they_should_be():
    """Sampling from p: E[k1] = E[k3] = KL(p || q) exactly; k3 is never negative."""
    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.tensor([1.0, 0.2, -0.5, 0.0, 0.7]), -1)
    q = torch.softmax(torch.tensor([0.3, 0.4, 0.1, -0.2, 0.5]), -1)
    exact = (p * (p.log() - q.log())).sum().item()
    y = torch.multinomial(p, 400_000, replacement=True, generator=gen)
    logp, logq = p.log()[y], q.log()[y]
    for est in ("k1", "k3"):
        assert kl_estimate(logp, logq, est).mean().item() == pytest.approx(exact, rel=0.03)
    assert (kl_estimate(logp, logq, "k3") >= 0).all()
    assert kl_estimate(logp, logq, "k1").min() < 0  # k1 is unbiased but can be negative per token


def test_kl_loss_term_by_hand():
    obj = GRPO(kl_coef=0.1, kl_estimator="k3")
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -2.0]])
    loss, stats = obj.loss(logp, logp.detach(), torch.zeros(1), torch.ones(1, 2), ref_logprobs=ref)
    k3 = math.exp(-0.5) - 1 + 0.5  # first token; the second has log ratio 0
    assert loss.item() == pytest.approx(0.1 * k3 / 2)
    assert stats["kl_ref_sum"].item() == pytest.approx(k3)
    (grad,) = torch.autograd.grad(loss, logp)
    # d k3 / d logp = 1 - exp(ref - logp); token-mean over 2 tokens
    assert grad[0, 0].item() == pytest.approx(0.1 * (1 - math.exp(-0.5)) / 2)
    with pytest.raises(ValueError, match="reference"):
        obj.loss(logp, logp.detach(), torch.zeros(1), torch.ones(1, 2))


def test_reference_model_exists_only_with_a_kl_coefficient():
    assert GRPO().needs_reference and not GRPO(kl_coef=0.0).needs_reference
    assert not DAPO().needs_reference and not NGRPO().needs_reference and not Reinforce().needs_reference
    assert PPO().needs_reference and not PPO(kl_penalty_coef=0.0).needs_reference


# ---- PPO -------------------------------------------------------------------------------------
def test_gae_hand_computed_trajectory():
    # row 0: 3 tokens, reward 1 at the end; row 1: 2 tokens then padding (value 9.9 ignored)
    values = torch.tensor([[0.5, 0.4, 0.2], [0.3, 0.6, 9.9]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # deltas row 0: 0.9*0.4-0.5 = -0.14, 0.9*0.2-0.4 = -0.22, 1-0.2 = 0.8
    # A2 = 0.8, A1 = -0.22 + 0.72*0.8 = 0.356, A0 = -0.14 + 0.72*0.356 = 0.11632
    assert adv[0].tolist() == pytest.approx([0.11632, 0.356, 0.8])
    assert ret[0].tolist() == pytest.approx([0.61632, 0.756, 1.0])
    # row 1: A1 = -0.6, A0 = 0.9*0.6 - 0.3 + 0.72*(-0.6) = -0.192
    assert adv[1].tolist() == pytest.approx([-0.192, -0.6, 0.0])
    assert ret[1].tolist() == pytest.approx([0.108, 0.0, 0.0])


def test_ppo_token_advantages_by_hand():
    """gamma = lambda = 1, no whitening: A_t = R - kl_coef * sum_{l >= t} kl_l - V_t."""
    obj = PPO(kl_penalty_coef=0.1, kl_penalty_estimator="k1", whiten_advantages=False, lambda_pos=0.5)
    values = torch.tensor([[0.2, 0.3], [0.1, 0.4]])
    mask = torch.tensor([[1, 1], [1, 0]])
    old = torch.tensor([[-1.0, -1.0], [-2.0, 0.0]])
    ref = torch.tensor([[-1.5, -0.5], [-1.0, 0.0]])  # k1 = old - ref: [0.5, -0.5], [-1.0, -]
    adv, ret, stats = obj.token_advantages(torch.tensor([1.0, 0.0]), mask, values, old, ref)
    # row 0 (correct, weight 0.5): rewards [-0.05, 0.05 + 1]; A0 = 1.0 - 0.2, A1 = 1.05 - 0.3
    assert adv[0].tolist() == pytest.approx([0.5 * 0.8, 0.5 * 0.75])
    assert ret[0].tolist() == pytest.approx([1.0, 1.05])
    # row 1 (wrong): reward [0.1] at its only token; A0 = 0.1 - 0.1 = 0
    assert adv[1].tolist() == pytest.approx([0.0, 0.0])
    assert stats["kl_ref_sum"].item() == pytest.approx(0.5 - 0.5 - 1.0)
    whitened, _, _ = PPO(kl_penalty_coef=0.0).token_advantages(
        torch.tensor([1.0, 0.0]), mask, values, old, None
    )
    valid = whitened[mask.bool()]
    assert valid.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert valid.std().item() == pytest.approx(1.0, abs=1e-5)


def test_ppo_value_loss_clipping_and_explained_variance():
    obj = PPO(value_clip=0.2)
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[0.5, 0.1]], requires_grad=True)
    ret = torch.tensor([[1.0, 1.0]])
    loss, stats = obj.value_loss(new, old, ret, torch.ones(1, 2))
    # token 0: clipped value 0.2 -> max(0.25, 0.64) = 0.64; token 1: max(0.81, 0.81) = 0.81
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2)
    assert stats["value_clipped_tokens"].item() == 1
    _, _, s = PPO(kl_penalty_coef=0.0).token_advantages(
        torch.tensor([1.0]), torch.ones(1, 3), torch.tensor([[1.0, 1.0, 1.0]]), torch.zeros(1, 3), None
    )
    assert s["explained_variance"].item() == pytest.approx(1.0)  # values equal the returns exactly


@pytest.mark.parametrize(
    "kwargs",
    [{"critic_lr": 0.0}, {"gamma": 1.5}, {"value_clip": -1.0}, {"kl_penalty_estimator": "k9"}],
)
def test_bad_ppo_values_are_refused(kwargs):
    with pytest.raises(ValueError, match="objective"):
        PPO(**kwargs)


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (GRPO, {"kl_coef": -1.0}),
        (GRPO, {"kl_estimator": "exact"}),
        (GRPO, {"adv_eps": 0.0}),
        (NGRPO, {"virtual_samples": -1}),
        (DAPO, {"max_sampling_rounds": 0}),
        (DAPO, {"drop_all_correct_groups": False, "drop_all_wrong_groups": False}),
    ],
)
def test_bad_values_are_refused(cls, kwargs):
    with pytest.raises(ValueError, match="objective"):
        cls(**kwargs)


@pytest.mark.parametrize(
    "cls, key, value, want",
    [
        (GRPO, "kl_coef", "abc", "objective.kl_coef must be a finite number"),
        (GRPO, "std_normalize", "yes", "objective.std_normalize must be true or false"),
        (DAPO, "max_sampling_rounds", 2.5, "objective.max_sampling_rounds must be an integer"),
        (PPO, "gamma", None, "objective.gamma must be a finite number"),
        (Reinforce, "lambda_pos", float("nan"), "objective.lambda_pos must be a finite number"),
        (NGRPO, "virtual_samples", True, "objective.virtual_samples must be an integer"),
    ],
)
def test_config_values_are_typed(cls, key, value, want):
    with pytest.raises(ValueError, match=want):
        cls(**{key: value})


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batch_shares_add_up_to_the_mini_batch_loss(mode):
    """Gradient accumulation: sum over micro-batches of share * loss(micro) == loss(mini-batch)."""
    torch.manual_seed(0)
    obj = GRPO(loss_agg_mode=mode, kl_coef=0.1, entropy_coef=0.01, norm_length=5)
    logp, old, ref, ent = (torch.randn(5, 4) for _ in range(4))
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    adv = torch.randn(5)
    whole, _ = obj.loss(logp, old, adv, mask, entropy=ent, ref_logprobs=ref)
    total = 0.0
    for rows in (slice(0, 2), slice(2, 4), slice(4, 5)):
        part, _ = obj.loss(
            logp[rows], old[rows], adv[rows], mask[rows], entropy=ent[rows], ref_logprobs=ref[rows]
        )
        total += obj.loss_units(mask[rows]) / obj.loss_units(mask) * part.item()
    assert total == pytest.approx(whole.item(), rel=1e-5)


def test_groups_of_one_response():
    """rollout.n=1. GRPO (and DAPO, Dr.GRPO): verl's mean 0 / std 1 for a lone response, A = r
    (r / (1 + 1e-6) with std_normalize); NGRPO: 0 (its code), not (0 - 0.5) / 0.707 = -0.707;
    DAPO keeps the lone groups (verl's recipe: std > 0 or a single response), so does NGRPO."""
    rewards, gids = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0]), torch.tensor([0, 1, 2, 2, 3])
    eps = 1e-6
    want = [1 / (1 + eps), 0.0, 0.707107, -0.707107, 1 / (1 + eps)]  # group 2: (1, 0), std 0.7071
    assert GRPO().advantages(rewards, gids).tolist() == pytest.approx(want, rel=1e-5)
    assert DAPO().advantages(rewards, gids).tolist() == pytest.approx(want, rel=1e-5)
    assert DrGRPO().advantages(rewards, gids).tolist() == pytest.approx([1.0, 0.0, 0.5, -0.5, 1.0])
    assert DAPO().keep(rewards, gids).all()
    # NGRPO, group 2 with one virtual 1: values (1, 0, 1), mean 2/3, std 0.57735
    ngrpo = [0.0, 0.0, (1 - 2 / 3) / (0.57735 + eps), (0 - 2 / 3) / (0.57735 + eps), 0.0]
    assert NGRPO().advantages(rewards, gids).tolist() == pytest.approx(ngrpo, rel=1e-5)
    assert NGRPO().keep(rewards, gids).all()
    two_correct = torch.tensor([1.0, 1.0])
    assert not DAPO().keep(two_correct, torch.tensor([0, 0])).any()  # a larger homogeneous group goes
