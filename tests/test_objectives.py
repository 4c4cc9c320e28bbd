"""Objectives against hand-computed losses and the paper's token-level gradient formulas."""

import pytest
import torch

from nsr_lightning.objectives import Objective, Reinforce, aggregate

# name -> (lambda_pos, lambda_neg), as in configs/objective/*.yaml
FAMILY = {"psr": (1.0, 0.0), "nsr": (0.0, 1.0), "w_reinforce": (0.1, 1.0), "reinforce": (1.0, 1.0)}

REWARDS = torch.tensor([1.0, 0.0, 1.0, 0.0])
GROUPS = torch.tensor([0, 0, 1, 1])
MASK = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]])  # lengths 2, 3, 1, 2 -> 8 tokens


def make(name, **kw):
    pos, neg = FAMILY[name]
    return Reinforce(name=name, lambda_pos=pos, lambda_neg=neg, **kw)


@pytest.mark.parametrize(
    "name, keep, adv",
    [
        ("psr", [1, 0, 1, 0], [1.0, -0.0, 1.0, -0.0]),
        ("nsr", [0, 1, 0, 1], [0.0, -1.0, 0.0, -1.0]),
        ("w_reinforce", [1, 1, 1, 1], [0.1, -1.0, 0.1, -1.0]),
        ("reinforce", [1, 1, 1, 1], [1.0, -1.0, 1.0, -1.0]),
    ],
)
def test_keep_and_advantages(name, keep, adv):
    obj = make(name)
    assert obj.keep(REWARDS, GROUPS).tolist() == [bool(x) for x in keep]
    assert obj.advantages(REWARDS, GROUPS).tolist() == pytest.approx(adv)


# Hand computation at ratio 1 (on-policy): per-token surrogate is -A, token-mean over kept tokens.
# psr keeps samples 0, 2 (2 + 1 tokens, A = +1): loss = -1.
# nsr keeps samples 1, 3 (3 + 2 tokens, A = -1): loss = +1.
# w_reinforce: sum A over tokens = 0.1*2 - 3 + 0.1*1 - 2 = -4.7 over 8 tokens: loss = 0.5875.
# reinforce: 2 - 3 + 1 - 2 = -2 over 8: loss = 0.25.
@pytest.mark.parametrize(
    "name, want", [("psr", -1.0), ("nsr", 1.0), ("w_reinforce", 0.5875), ("reinforce", 0.25)]
)
def test_on_policy_loss_by_hand(name, want):
    obj = make(name)
    keep = obj.keep(REWARDS, GROUPS)
    adv = obj.advantages(REWARDS, GROUPS)[keep]
    logp = torch.randn(4, 3)[keep]
    loss, stats = obj.loss(logp, logp.detach(), adv, MASK[keep])
    assert loss.item() == pytest.approx(want)
    assert stats["clipped_tokens"].item() == 0


def test_clipping_by_hand():
    obj = make("reinforce")  # clip 0.2 both sides
    old = torch.zeros(2, 1)
    logp = torch.log(torch.tensor([[1.5], [0.5]])).requires_grad_()
    adv = torch.tensor([1.0, -1.0])
    loss, stats = obj.loss(logp, old, adv, torch.ones(2, 1))
    # sample 0: A=+1, ratio 1.5 -> max(-1.5, -1.2) = -1.2 (clipped, no gradient)
    # sample 1: A=-1, ratio 0.5 -> max(0.5, 0.8) = 0.8 (clipped, no gradient)
    assert loss.item() == pytest.approx((-1.2 + 0.8) / 2)
    loss.backward()
    assert torch.all(logp.grad == 0)
    assert stats["clipped_tokens"].item() == 2
    assert stats["clipped_high_tokens"].item() == 1 and stats["clipped_low_tokens"].item() == 1
    # inside the clip range on the other side, the gradient flows: A=+1 with ratio 0.5
    logp2 = torch.log(torch.tensor([[0.5]])).requires_grad_()
    loss2, _ = obj.loss(logp2, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1))
    loss2.backward()
    assert logp2.grad.item() == pytest.approx(-0.5)  # d(-ratio)/dlogp = -ratio


@pytest.mark.parametrize("name", list(FAMILY))
@pytest.mark.parametrize("correct", [True, False])
def test_token_gradient_matches_paper(name, correct):
    """Paper section 4.2: for L = -R pi(y_t), dL/dz_y = -R pi_y (1 - pi_y), dL/dz_v = R pi_v pi_y.
    Our surrogate differentiates log pi (the ratio's gradient at ratio 1), which is the paper's
    gradient divided by pi_y; the direction per logit is the same."""
    obj = make(name)
    reward = torch.tensor([1.0 if correct else 0.0])
    if not obj.keep(reward, torch.zeros(1, dtype=torch.long)).item():
        pytest.skip(f"{name} drops {'correct' if correct else 'incorrect'} samples")
    R = obj.advantages(reward, torch.zeros(1, dtype=torch.long)).item()
    torch.manual_seed(0)
    z = torch.randn(7, requires_grad=True)
    y = 3
    logp = torch.log_softmax(z, -1)[y].view(1, 1)
    loss, _ = obj.loss(logp, logp.detach(), torch.tensor([R]), torch.ones(1, 1))
    (grad,) = torch.autograd.grad(loss, z)
    pi = torch.softmax(z.detach(), -1)
    paper = R * pi * pi[y]  # other tokens
    paper[y] = -R * pi[y] * (1 - pi[y])  # the sampled token
    torch.testing.assert_close(grad * pi[y], paper, rtol=1e-5, atol=1e-7)
    # and the paper's own loss differentiated by autograd gives its formula
    (g_paper,) = torch.autograd.grad(-R * torch.softmax(z, -1)[y], z)
    torch.testing.assert_close(g_paper, paper, rtol=1e-5, atol=1e-7)
    # NSR lowers the sampled token and raises all others; PSR the opposite
    sign = 1 if R > 0 else -1
    assert sign * grad[y] < 0 and all(sign * grad[v] > 0 for v in range(7) if v != y)


def test_w_reinforce_with_lambda_one_is_reinforce():
    torch.manual_seed(1)
    logp, old = torch.randn(4, 3), torch.randn(4, 3)
    a = Reinforce(lambda_pos=1.0, lambda_neg=1.0)
    b = Reinforce(name="w_reinforce", lambda_pos=1.0)
    for obj in (a, b):
        assert obj.keep(REWARDS, GROUPS).all()
    la, _ = a.loss(logp, old, a.advantages(REWARDS, GROUPS), MASK)
    lb, _ = b.loss(logp, old, b.advantages(REWARDS, GROUPS), MASK)
    assert la.item() == lb.item()


def test_entropy_bonus():
    obj = make("reinforce", entropy_coef=0.01)
    logp = torch.zeros(1, 2)
    ent = torch.tensor([[2.0, 4.0]])
    loss, stats = obj.loss(logp, logp, torch.tensor([1.0]), torch.ones(1, 2), entropy=ent)
    assert loss.item() == pytest.approx(-1.0 - 0.01 * 3.0)


def test_aggregation_modes_by_hand():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert aggregate(values, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert aggregate(values, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate(values, mask, "seq-mean-token-sum-norm").item() == pytest.approx((6 / 3 + 4 / 3) / 2)
    assert aggregate(values, mask, "seq-mean-token-sum-norm", norm_length=10).item() == pytest.approx(0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lambda_pos": -0.1},
        {"lambda_pos": 0.0, "lambda_neg": 0.0},
        {"clip_ratio_low": 1.5},
        {"entropy_coef": -1.0},
        {"loss_agg_mode": "sum"},
    ],
)
def test_bad_values_are_refused(kwargs):
    with pytest.raises(ValueError, match="objective"):
        Reinforce(**kwargs)


def test_base_objective_is_a_zero_signal():
    obj = Objective()
    assert obj.advantages(REWARDS, GROUPS).abs().sum() == 0
