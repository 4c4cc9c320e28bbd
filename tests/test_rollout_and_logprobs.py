"""Engine output layout, seeds, and response log-probabilities against a naive computation."""

import pytest
import torch

from nsr_lightning.data import SyntheticTask
from nsr_lightning.data.templates import build_prompt
from nsr_lightning.logprobs import _spread, response_logprobs
from nsr_lightning.models import TINY_MODEL, load_policy, load_tokenizer
from nsr_lightning.objectives import Reinforce
from nsr_lightning.rollout import HFEngine, SamplingConfig
from nsr_lightning.rollout.batch import response_mask_from_ids


@pytest.fixture(scope="module")
def world():
    tok = load_tokenizer(str(TINY_MODEL))
    task = SyntheticTask()
    prompts = [build_prompt(tok, task.train_problem(i).question) for i in range(3)]
    return tok, prompts


def test_response_mask_by_hand():
    ids = torch.tensor([[5, 6, 1, 0, 0], [5, 1, 7, 1, 0], [5, 6, 7, 8, 9]])
    mask, truncated = response_mask_from_ids(ids, eos_token_id=1)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert truncated.tolist() == [False, False, True]


def test_engine_layout_and_seeds(world):
    tok, prompts = world
    model = load_policy(str(TINY_MODEL))
    engine = HFEngine(tok, batch_size=4)  # forces several generate calls
    sampling = SamplingConfig(max_new_tokens=40)
    a = engine.generate(model, prompts, n=3, sampling=sampling, seed=1)
    b = engine.generate(model, prompts, n=3, sampling=sampling, seed=1)
    c = engine.generate(model, prompts, n=3, sampling=sampling, seed=2)
    assert len(a) == 9 and a.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert torch.equal(a.response_ids, b.response_ids) and a.texts == b.texts
    assert not torch.equal(a.response_ids, c.response_ids)
    assert model.training  # restored after generation
    for row in range(len(a)):  # prompts left-padded and intact, responses decoded from masked ids
        p = a.prompt_ids[row][a.prompt_mask[row].bool()].tolist()
        assert p == prompts[a.group_ids[row]]
        assert a.texts[row] == tok.decode(
            a.response_ids[row][a.response_mask[row].bool()], skip_special_tokens=True
        )
    assert torch.all(a.response_mask.sum(-1) >= 1)


@pytest.mark.parametrize("share_prompts", [False, True])
def test_logprobs_match_naive_per_sequence(world, share_prompts):
    tok, prompts = world
    model = load_policy(str(TINY_MODEL)).eval()
    batch = HFEngine(tok).generate(model, prompts, n=2, sampling=SamplingConfig(max_new_tokens=40), seed=0)
    with torch.no_grad():
        logp, ent = response_logprobs(model, batch, chunk_size=2, share_prompts=share_prompts)
        for row in range(len(batch)):
            p = batch.prompt_ids[row][batch.prompt_mask[row].bool()]
            r = batch.response_ids[row][batch.response_mask[row].bool()]
            logits = model(torch.cat([p, r]).unsqueeze(0)).logits[0, len(p) - 1 : -1].float()
            lp = torch.log_softmax(logits, -1)
            want = lp.gather(-1, r.unsqueeze(-1)).squeeze(-1)
            torch.testing.assert_close(logp[row, : len(r)], want, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(ent[row, : len(r)], -(lp.exp() * lp).sum(-1), atol=1e-4, rtol=1e-4)
            assert torch.all(logp[row, len(r) :] == 0)


@pytest.mark.parametrize(
    "name, lam_pos, lam_neg, correct", [("psr", 1.0, 0.0, True), ("nsr", 0.0, 1.0, False)]
)
def test_one_update_moves_likelihood_the_right_way(world, name, lam_pos, lam_neg, correct):
    """PSR raises the likelihood of the responses it trains on; NSR lowers it (paper, section 4)."""
    tok, prompts = world
    model = load_policy(str(TINY_MODEL))
    batch = HFEngine(tok).generate(model, prompts, n=4, sampling=SamplingConfig(max_new_tokens=40), seed=3)
    obj = Reinforce(lambda_pos=lam_pos, lambda_neg=lam_neg)
    rewards = torch.full((len(batch),), 1.0 if correct else 0.0)
    adv = obj.advantages(rewards, batch.group_ids)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    logp, _ = response_logprobs(model, batch)
    loss, _ = obj.loss(logp, logp.detach(), adv, batch.response_mask)
    loss.backward()
    opt.step()
    with torch.no_grad():
        after, _ = response_logprobs(model, batch)
    delta = (after.sum(-1) - logp.detach().sum(-1)).mean().item()
    assert (delta > 0) if correct else (delta < 0)


def test_shared_prompt_forward_gives_the_same_gradient(world):
    """Each prompt run once, its cache gathered to its responses: the loss and every parameter's
    gradient equal the plain per-row forward's (prompts of different lengths, a subset of rows as
    PSR / NSR keep, so prompts have 4, 2 and 1 responses, shuffled so one prompt's are not adjacent).
    No gather with a repeated index is differentiated: its backward (atomic adds on CPU) would
    sum in an order that changes from run to run."""
    tok, prompts = world
    model = load_policy(str(TINY_MODEL))
    batch = HFEngine(tok).generate(model, prompts, n=4, sampling=SamplingConfig(max_new_tokens=40), seed=1)
    keep = torch.tensor([0, 1, 2, 3, 4, 5, 8])  # 4, 2 and 1 responses of the 3 prompts
    batch = batch.select(keep[torch.randperm(len(keep), generator=torch.Generator().manual_seed(0))])
    weights = torch.linspace(-1, 1, len(batch)).unsqueeze(-1)
    grads = []
    for share in (False, True):
        model.zero_grad()
        logp, ent = response_logprobs(model, batch, share_prompts=share)
        loss = (weights * logp).sum() + 0.1 * ent.sum()
        loss.backward(retain_graph=True)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-5, rtol=1e-4, msg=name)
    gathers = [node for node in _graph(loss.grad_fn) if type(node).__name__ == "IndexBackward0"]
    assert gathers  # the shared cache is gathered to the rows
    for node in gathers:
        (index,) = [i for i in node._saved_indices if i is not None]
        assert len(torch.unique(index)) == index.numel()


def test_spread_by_hand():
    """Rows of prompts [2, 0, 2, 1, 0, 2]: 3 repeats; each row gets its own slot 3 * prompt + rank."""
    row_of = torch.tensor([2, 0, 2, 1, 0, 2])
    repeats, slots = _spread(row_of, 3)
    assert repeats == 3 and slots.tolist() == [6, 0, 7, 3, 1, 8]
    x = torch.randn(3, 5)
    assert torch.equal(x.repeat_interleave(repeats, 0)[slots], x[row_of])
    with torch.no_grad():  # the same layout: it also places each response's first token (u, repeats)
        repeats_ng, slots_ng = _spread(row_of, 3)
    assert repeats_ng == 3 and torch.equal(slots_ng, slots)


def _graph(root) -> list:
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(nxt for nxt, _ in node.next_functions)
    return list(seen)
