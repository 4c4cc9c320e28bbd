"""RLVRModule's extra models: a frozen reference policy and a critic, only when the objective asks."""

import pytest
import torch

from nsr_lightning.data import SyntheticTask
from nsr_lightning.data.templates import build_prompt
from nsr_lightning.logprobs import response_logprobs, response_values
from nsr_lightning.models import TINY_MODEL, load_critic, load_policy, load_tokenizer
from nsr_lightning.module import RLVRModule
from nsr_lightning.objectives import DAPO, GRPO, PPO, Reinforce
from nsr_lightning.rollout import HFEngine, SamplingConfig


@pytest.mark.parametrize(
    "objective, ref, critic",
    [(Reinforce(), False, False), (DAPO(), False, False), (GRPO(), True, False), (PPO(), True, True)],
    ids=["reinforce", "dapo", "grpo", "ppo"],
)
def test_extra_models_only_when_needed(objective, ref, critic):
    module = RLVRModule(model_path=str(TINY_MODEL), objective=objective)
    assert (module.ref_model is not None) == ref
    assert ("critic" in module.extras) == critic
    if ref:
        assert not any(p.requires_grad for p in module.ref_model.parameters())
        state = module.state_dict()  # the reference is the initial weights: in no state dict
        assert not any(k.startswith("ref_model.") for k in state) and any(
            k.startswith("model.") for k in state
        )
        module.load_state_dict(state, strict=True)  # missing on purpose
        del state[next(k for k in state if k.startswith("model."))]
        with pytest.raises(RuntimeError, match="Missing key"):  # any other missing key is an error
            module.load_state_dict(state, strict=True)
    optimizers = module.configure_optimizers()
    if critic:
        policy_opt, critic_opt = optimizers
        assert critic_opt.param_groups[0]["lr"] == objective.critic_lr
        assert {id(p) for p in critic_opt.param_groups[0]["params"]} == {
            id(p) for p in module.extras["critic"].parameters()
        }


def test_critic_values_line_up_with_left_padded_prompts():
    tok = load_tokenizer(str(TINY_MODEL))
    task = SyntheticTask()
    prompts = [build_prompt(tok, task.train_problem(i).question) for i in (0, 5)]
    assert len(prompts[0]) != len(prompts[1])  # so one of them is left-padded
    policy = load_policy(str(TINY_MODEL))
    batch = HFEngine(tok).generate(policy, prompts, n=1, sampling=SamplingConfig(max_new_tokens=30), seed=0)
    critic = load_critic(str(TINY_MODEL)).eval()
    with torch.no_grad():
        values = response_values(critic, batch)
        for row in range(len(batch)):
            p = batch.prompt_ids[row][batch.prompt_mask[row].bool()]
            r = batch.response_ids[row][batch.response_mask[row].bool()]
            # V(s_t) is read at the token before response token t
            want = critic(torch.cat([p, r]).unsqueeze(0)).logits[0, len(p) - 1 : -1, 0]
            torch.testing.assert_close(values[row, : len(r)], want, atol=1e-4, rtol=1e-4)
            assert torch.all(values[row, len(r) :] == 0)


def test_a_cache_that_cannot_gather_rows_falls_back_to_whole_rows(monkeypatch, capsys):
    """algo.share_prompts with a model whose KV cache cannot repeat / select rows: the module
    notices once and runs every row's prompt from then on, with the same log-probs."""
    from transformers.cache_utils import Cache

    module = RLVRModule(model_path=str(TINY_MODEL), objective=Reinforce())
    batch = small_rollout(module.model)
    shared, _ = module.update._logprobs(module.model, batch)
    monkeypatch.delattr(Cache, "batch_select_indices")
    rows, _ = module.update._logprobs(module.model, batch)
    assert module.update.rows_only and "every row runs its prompt" in capsys.readouterr().err
    torch.testing.assert_close(rows, shared, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("entropy_coef", [0.0, 0.01])
def test_entropy_has_gradients_only_for_an_entropy_bonus(entropy_coef):
    """The update's entropy is only logged unless the objective adds a bonus: then no autograd
    graph (rows x length x vocabulary tensors) is kept for it. The values are the same."""
    module = RLVRModule(model_path=str(TINY_MODEL), objective=Reinforce(entropy_coef=entropy_coef))
    batch = small_rollout(module.model)
    logp, entropy = module.update._logprobs(module.model, batch)
    assert logp.requires_grad and entropy.requires_grad == (entropy_coef > 0)
    _, with_graph = response_logprobs(module.model, batch, share_prompts=True)
    assert torch.equal(entropy.detach(), with_graph.detach())


def small_rollout(model):
    """2 prompts of the embedded task x 3 responses of at most 20 tokens."""
    tok = load_tokenizer(str(TINY_MODEL))
    prompts = [build_prompt(tok, SyntheticTask().train_problem(i).question) for i in range(2)]
    return HFEngine(tok).generate(model, prompts, n=3, sampling=SamplingConfig(max_new_tokens=20), seed=0)
