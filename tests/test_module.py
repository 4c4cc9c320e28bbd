"""RLVRModule's extra models: a frozen reference policy and a critic, only when the objective asks."""

import pytest
import torch

from nsr_lightning.data import SyntheticTask
from nsr_lightning.data.templates import build_prompt
from nsr_lightning.logprobs import response_values
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
    assert (module.critic is not None) == critic
    if ref:
        assert not any(p.requires_grad for p in module.ref_model.parameters())
        checkpoint = {"state_dict": module.state_dict()}
        module.on_save_checkpoint(checkpoint)  # the reference is the initial weights: not saved
        assert not any(k.startswith("ref_model.") for k in checkpoint["state_dict"])
        module.on_load_checkpoint(checkpoint)  # and comes back from model_path on load
        module.load_state_dict(checkpoint["state_dict"], strict=True)
    optimizers = module.configure_optimizers()
    if critic:
        policy_opt, critic_opt = optimizers
        assert critic_opt.param_groups[0]["lr"] == objective.critic_lr
        assert {id(p) for p in critic_opt.param_groups[0]["params"]} == {
            id(p) for p in module.critic.parameters()
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
