"""PPO with a learned critic, as used for RLVR (Ouyang et al. 2022; the paper's PPO baseline).

- A separate value model V (the policy's architecture with a scalar head, its own learning rate,
  `critic_lr`, 1e-5 in the paper) predicts the return at every response position.
- Token rewards: the verifiable reward on the last response token, and a KL penalty to the
  frozen reference policy on every token, r_t = -kl_penalty_coef * KL_t(pi_old || pi_ref).
- Advantages: generalised advantage estimation (Schulman et al. 2016), with gamma and lambda,
  delta_t = r_t + gamma V(s_{t+1}) - V(s_t), A_t = sum_l (gamma lambda)^l delta_{t+l};
  returns R_t = A_t + V(s_t); advantages whitened over the batch's response tokens.
- The policy loss is the shared clipped surrogate on these per-token advantages; the value loss
  is clipped around the old values: 0.5 * max((V - R)^2, (V_old + clip(V - V_old, +-c) - R)^2).
The paper's lambdas apply after whitening (a correct sample's advantages times lambda_pos).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nsr_lightning.config_rules import check_group
from nsr_lightning.objectives.base import Objective, Prepared, TrainedModel
from nsr_lightning.objectives.functional import aggregate, kl_estimate, masked_var, masked_whiten


def gae(
    token_rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over right-padded responses.

    token_rewards, values, mask: (B, T). Returns (advantages, returns), (B, T), zero where mask is 0.
    Padding lies only after a response's end, so with rewards and values zeroed there the
    recursion restarts at each response's last token with V(s_end+1) = 0.
    """
    m = mask.to(values.dtype)
    r, v = token_rewards * m, values * m
    adv = torch.zeros_like(v)
    running = torch.zeros_like(v[:, 0])  # (B,)
    for t in reversed(range(v.shape[1])):
        next_v = v[:, t + 1] if t + 1 < v.shape[1] else torch.zeros_like(running)
        delta = r[:, t] + gamma * next_v - v[:, t]
        running = delta + gamma * lam * running
        adv[:, t] = running
    adv = adv * m
    return adv, (adv + v) * m


class PPO(Objective):
    name = "ppo"
    ratio_metrics = ("train/value_clip_fraction", "loss/value")

    def __init__(
        self,
        *,
        critic_lr: float = 1e-5,  # the value model's own learning rate (the paper: 1e-5)
        critic_model_path: str | None = None,  # None: a copy of the policy's weights, new scalar head
        gamma: float = 1.0,  # GAE discount
        gae_lambda: float = 1.0,  # GAE lambda
        value_clip: float = 0.2,  # clip the value update around the old values (0 = off)
        kl_penalty_coef: float = 1e-3,  # r_t -= coef * KL_t(pi_old || pi_ref) (the paper: 1e-3)
        kl_penalty_estimator: str = "k1",  # k1 | k2 | k3
        whiten_advantages: bool = True,  # advantages standardised over the batch's response tokens
        **shared,
    ) -> None:
        super().__init__(**shared)
        check_group("objective", locals())  # its own knobs (the shared ones: Objective)
        self.critic_lr = float(critic_lr)
        self.critic_model_path = critic_model_path
        self.gamma = float(gamma)
        self.gae_lambda = float(gae_lambda)
        self.value_clip = float(value_clip)
        self.kl_penalty_coef = float(kl_penalty_coef)
        self.kl_penalty_estimator = kl_penalty_estimator
        self.whiten_advantages = bool(whiten_advantages)

    @property
    def needs_old_logprobs(self) -> bool:
        return self.kl_penalty_coef > 0

    @property
    def needs_reference(self) -> bool:
        return self.kl_coef > 0 or self.kl_penalty_coef > 0

    def extra_models(self) -> dict[str, TrainedModel]:
        return {"critic": TrainedModel(lr=self.critic_lr, path=self.critic_model_path)}

    def raw_advantages(self, rewards: Tensor, group_ids: Tensor) -> Tensor:
        raise TypeError("PPO's advantages are per token, from its critic: see step_advantages")

    def step_advantages(
        self, rewards: Tensor, group_ids: Tensor, kept: Tensor, prep: Prepared
    ) -> tuple[Tensor, dict[str, Tensor], dict]:
        """GAE from the critic's old values on the kept samples (PPO keeps all)."""
        adv, returns, stats = self.token_advantages(
            prep.rewards,
            prep.mask,
            prep.outputs["critic"],
            prep.old_logprobs,
            prep.ref_logprobs,
            all_sum=prep.all_sum,
        )
        out = {"train/explained_variance": stats["explained_variance"]}
        if "kl_ref_sum" in stats:
            out["train/approx_kl_ref"] = (stats["kl_ref_sum"], prep.mask.sum())
        return adv, {"returns": returns}, out

    def extra_loss(
        self, outputs: dict[str, Tensor], rows: dict[str, Tensor], mask: Tensor
    ) -> tuple[Tensor | None, dict]:
        """The clipped value loss; the critic has its own parameters and optimizer."""
        loss, stats = self.value_loss(outputs["critic"], rows["old_critic"], rows["returns"], mask)
        tokens = mask.sum()
        return loss, {
            "loss/value": (stats["value_loss"] * tokens, tokens),
            "train/value_clip_fraction": (stats["value_clipped_tokens"], tokens),
        }

    def token_advantages(
        self,
        rewards: Tensor,
        mask: Tensor,
        values: Tensor,
        old_logprobs: Tensor,
        ref_logprobs: Tensor | None,
        all_sum=None,
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Per-token advantages and returns (B, T) from rewards (B,) and old values (B, T); the
        whitening is over the response tokens of every rank's batch (`all_sum`, as verl's)."""
        m = mask.to(values.dtype)
        token_rewards = torch.zeros_like(values)
        stats: dict[str, Tensor] = {}
        if self.kl_penalty_coef > 0:
            if ref_logprobs is None:
                raise ValueError("kl_penalty_coef > 0 needs the reference policy's logprobs")
            kl = kl_estimate(old_logprobs, ref_logprobs, self.kl_penalty_estimator) * m  # (B, T)
            token_rewards = token_rewards - self.kl_penalty_coef * kl
            stats["kl_ref_sum"] = kl.sum()
        last = (m.sum(-1).long() - 1).clamp(min=0)  # (B,) index of each response's last token
        has_tokens = (m.sum(-1) > 0).to(values.dtype)
        token_rewards[torch.arange(len(last)), last] += rewards.to(values.dtype) * has_tokens
        adv, returns = gae(token_rewards, values, mask, self.gamma, self.gae_lambda)
        if self.whiten_advantages:
            adv = masked_whiten(adv, mask, all_sum=all_sum)
        adv = adv * self.sign_weights(rewards).to(adv.dtype).unsqueeze(-1)
        var_r = masked_var(returns, mask)
        stats["explained_variance"] = 1.0 - masked_var(returns - values, mask) / var_r.clamp(min=1e-8)
        return adv, returns, stats

    def value_loss(
        self, values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Clipped value loss (B, T) -> scalar, aggregated like the policy loss."""
        err = (values - returns).square()
        if self.value_clip > 0:
            clipped = old_values + (values - old_values).clamp(-self.value_clip, self.value_clip)
            err_clipped = (clipped - returns).square()
            per_token = torch.maximum(err, err_clipped)
            clip_count = ((err_clipped > err).to(values.dtype) * mask.to(values.dtype)).sum()
        else:
            per_token, clip_count = err, values.new_zeros(())
        loss = 0.5 * aggregate(per_token, mask, self.loss_agg_mode, self.norm_length)
        return loss, {"value_loss": loss.detach(), "value_clipped_tokens": clip_count.detach()}
