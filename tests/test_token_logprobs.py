"""The hot path's numbers stay those of the plain formulas: token_logprobs (written-out backward)
against autograd through log_softmax / gather / -sum p log p; the sync-free group counts against
torch.unique; the update's micro-batches keep a prompt's responses together."""

import pytest
import torch

from nsr_lightning.objectives import GRPO, group_outcomes, group_stats
from nsr_lightning.objectives.functional import dense_group_ids
from nsr_lightning.token_logprobs import token_logprobs
from nsr_lightning.update import Update, UpdateSettings


def reference(z, y, temperature):
    logp = torch.log_softmax(z.float() / temperature, dim=-1)
    lp = logp.gather(-1, y if y.dim() == 3 else y.unsqueeze(-1))
    return (lp if y.dim() == 3 else lp.squeeze(-1)), -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("chunk", [64, 2])
@pytest.mark.parametrize("k", [None, 3])
def test_token_logprobs_equal_autograd(temperature, chunk, k):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(5, 7, 50, generator=gen, requires_grad=True)
    shape = (5, 7) if k is None else (5, 7, k)
    y = torch.randint(0, 50, shape, generator=gen)
    g_lp, g_h = torch.randn(shape, generator=gen), torch.randn(5, 7, generator=gen)
    lp, h = token_logprobs(z, y, temperature=temperature, chunk_size=chunk)
    (lp * g_lp).sum().add((h * g_h).sum()).backward()
    ours = z.grad.clone()
    z.grad = None
    lp_ref, h_ref = reference(z, y, temperature)
    (lp_ref * g_lp).sum().add((h_ref * g_h).sum()).backward()
    assert torch.equal(lp, lp_ref.detach())  # the same kernels in the same order: bit for bit
    assert torch.allclose(h, h_ref.detach(), atol=1e-6)
    assert torch.allclose(ours, z.grad, atol=1e-6)


def test_token_logprobs_bf16_logits_get_bf16_gradients():
    z = torch.randn(2, 3, 40).to(torch.bfloat16).requires_grad_()
    y = torch.randint(0, 40, (2, 3))
    lp, _ = token_logprobs(z, y, with_entropy=False)
    lp.sum().backward()
    assert lp.dtype == torch.float32 and z.grad.dtype == torch.bfloat16
    want = torch.nn.functional.one_hot(y, 40) - torch.softmax(z.float(), -1)
    assert torch.allclose(z.grad.float(), want, atol=1e-2)


def test_group_counts_without_unique():
    ids = torch.tensor([7, 3, 7, 9, 3, 3, 12])
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    assert dense_group_ids(ids).tolist() == torch.unique(ids, return_inverse=True)[1].tolist()
    groups, solved, unsolved = group_outcomes(rewards > 0, ids)
    assert (int(groups), int(solved), int(unsolved)) == (4, 2, 1)  # 7 and 12 solved, 9 unsolved
    mean, std, n_correct, size = group_stats(rewards, ids)
    assert mean.tolist() == pytest.approx([1, 1 / 3, 1, 0, 1 / 3, 1 / 3, 1])
    assert std[1] == pytest.approx(torch.tensor([0.0, 1.0, 0.0]).std().item())
    assert size.tolist() == [2, 3, 2, 1, 3, 3, 1] and n_correct.tolist() == [2, 1, 2, 0, 1, 1, 1]


def test_micro_batches_keep_a_prompts_responses_together():
    """6 prompts x 4 responses in micro-batches of 4: each micro-batch is one prompt's group."""
    from test_budgets import model_of, rollout_of

    batch = rollout_of(64, prompts=6)
    update = Update(model_of(64), GRPO(kl_coef=0.0), UpdateSettings(micro_batch_size=4))
    plan = update._micro_plan(batch, 1)
    parts = [rows for rows, _ in plan[0]]
    assert sorted(torch.cat(parts).tolist()) == list(range(24))
    assert all(len(set(batch.group_ids[p].tolist())) == 1 for p in parts)
    weights = torch.stack([w for _, w in plan[0]])
    assert float(weights.sum()) == pytest.approx(1.0)  # token-mean: each part's tokens / all tokens
