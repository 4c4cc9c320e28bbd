"""DAPO (Yu et al. 2025): GRPO's advantage with clip-higher, token-mean and dynamic sampling.

- Clip-higher: the ratio is clipped to [1 - 0.2, 1 + 0.28], so low-probability tokens with a
  positive advantage can rise further (against entropy collapse).
- Token-level loss: every token of the mini-batch weighs the same (token-mean).
- Dynamic sampling: groups whose responses are all correct or all wrong carry no signal and are
  dropped; the rollout callback keeps sampling fresh prompts until the batch holds as many
  informative groups as prompts, at most `max_sampling_rounds` generation rounds per step (the
  number of rounds is logged as rollout/dynamic_sampling_rounds).
- No KL term (DAPO removes it).
"""

from __future__ import annotations

from nsr_lightning.objectives.grpo import GRPO


class DAPO(GRPO):
    name = "dapo"

    def __init__(
        self,
        *,
        clip_ratio_low: float = 0.2,
        clip_ratio_high: float = 0.28,  # clip-higher
        loss_agg_mode: str = "token-mean",
        kl_coef: float = 0.0,
        drop_all_correct_groups: bool = True,
        drop_all_wrong_groups: bool = True,
        dynamic_sampling: bool = True,  # refill the batch with fresh prompts ...
        max_sampling_rounds: int = 10,  # ... in at most this many generation rounds per step
        **shared,
    ) -> None:
        super().__init__(
            clip_ratio_low=clip_ratio_low,
            clip_ratio_high=clip_ratio_high,
            loss_agg_mode=loss_agg_mode,
            kl_coef=kl_coef,
            drop_all_correct_groups=drop_all_correct_groups,
            drop_all_wrong_groups=drop_all_wrong_groups,
            dynamic_sampling=dynamic_sampling,
            max_sampling_rounds=max_sampling_rounds,
            **shared,
        )
