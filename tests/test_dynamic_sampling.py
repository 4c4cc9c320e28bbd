"""DAPO's dynamic sampling in RolloutCallback: filter, refill with fresh prompts, bound, metric."""

from types import SimpleNamespace

import pytest
import torch
from nsr_lightning.callbacks import RolloutCallback
from torch.utils.data import DataLoader

from nsr_lightning.data.datamodule import collate
from nsr_lightning.objectives import DAPO, GRPO, NGRPO
from nsr_lightning.rollout import RolloutBatch

N = 4  # responses per prompt


class KindEngine:
    """Each prompt is one token; response j of a prompt is the text "j"."""

    def sync_weights(self, model):
        pass

    def generate(self, model, prompts, *, n, sampling, seed):
        rows = len(prompts) * n
        return RolloutBatch(
            prompt_ids=torch.tensor([p for p in prompts for _ in range(n)]),
            prompt_mask=torch.ones(rows, 1, dtype=torch.long),
            response_ids=torch.ones(rows, 2, dtype=torch.long),
            response_mask=torch.ones(rows, 2, dtype=torch.long),
            group_ids=torch.arange(len(prompts)).repeat_interleave(n),
            truncated=torch.zeros(rows, dtype=torch.bool),
            texts=[str(j) for _ in prompts for j in range(n)],
        )


def kind_reward(texts, golds):
    """gold 'all': every response correct; 'none': none; 'mixed': only response 0."""
    return [float(g == "all" or (g == "mixed" and t == "0")) for t, g in zip(texts, golds, strict=True)]


def dataset(kinds):
    return [{"id": i, "prompt_ids": [i], "answer": k} for i, k in enumerate(kinds)]


def run_step(objective, batch_kinds, pool_kinds, step=0):
    cb = RolloutCallback(KindEngine(), kind_reward, n=N, seed=3)
    logged = {}
    module = SimpleNamespace(model=None, objective=objective, log=lambda k, v, **_: logged.__setitem__(k, v))
    loader = DataLoader(dataset(pool_kinds), batch_size=len(batch_kinds), collate_fn=collate)
    trainer = SimpleNamespace(global_step=step, global_rank=0, world_size=1, train_dataloader=loader)
    batch = collate(dataset(batch_kinds))
    cb.on_train_batch_start(trainer, module, batch, 0)
    return batch["rollout"], logged


def groups_by_kind(rollout):
    kinds = {}
    for g in torch.unique(rollout.group_ids).tolist():
        r = rollout.rewards[rollout.group_ids == g]
        kinds.setdefault("mixed" if 0 < r.sum() < len(r) else "homogeneous", []).append(g)
    return kinds


def test_refill_until_the_batch_is_full():
    rollout, logged = run_step(DAPO(), ["mixed", "all", "none", "all"], ["mixed", "none"] * 50)
    kinds = groups_by_kind(rollout)
    assert len(kinds["mixed"]) == 4  # exactly as many informative groups as prompts
    assert logged["rollout/dynamic_sampling_rounds"] >= 2
    assert logged["rollout/dynamic_sampling_filled"] == 1.0
    assert len(kinds["homogeneous"]) >= 3  # the first round's homogeneous groups stay for the metrics ...
    keep = DAPO().keep(rollout.rewards, rollout.group_ids)
    assert torch.unique(rollout.group_ids[keep]).numel() == 4  # ... and the objective drops them
    assert (rollout.group_ids.bincount() == N).all()  # whole groups only
    again, _ = run_step(DAPO(), ["mixed", "all", "none", "all"], ["mixed", "none"] * 50)
    assert torch.equal(again.rewards, rollout.rewards) and again.texts == rollout.texts  # seeded


def test_ngrpo_refills_by_default():
    """NGRPO drops all-correct groups only (an all-wrong group still teaches) and, like its
    code, samples fresh prompts until the batch holds as many groups as prompts; its config too."""
    from importlib.resources import files

    import yaml

    rollout, logged = run_step(NGRPO(), ["mixed", "all", "all", "none"], ["all", "none"] * 50)
    keep = NGRPO().keep(rollout.rewards, rollout.group_ids)
    assert torch.unique(rollout.group_ids[keep]).numel() == 4  # mixed, none, then 2 refilled "none"
    assert logged["rollout/dynamic_sampling_rounds"] >= 2 and logged["rollout/dynamic_sampling_filled"] == 1.0
    config = yaml.safe_load(files("nsr_lightning.configs").joinpath("objective/ngrpo.yaml").read_text())
    assert config["dynamic_sampling"] is True and config["drop_all_correct_groups"] is True
    assert config["max_sampling_rounds"] == NGRPO().max_sampling_rounds == 10


def test_rounds_are_bounded_when_nothing_is_informative():
    rollout, logged = run_step(DAPO(max_sampling_rounds=3), ["all", "none"], ["all", "none"] * 10)
    assert logged["rollout/dynamic_sampling_rounds"] == 3
    assert logged["rollout/dynamic_sampling_filled"] == 0.0
    assert len(rollout) == 3 * 2 * N
    assert not DAPO().keep(rollout.rewards, rollout.group_ids).any()


def test_no_refill_when_the_first_round_is_full_or_not_asked_for():
    rollout, logged = run_step(DAPO(), ["mixed", "mixed"], ["none"] * 10)
    assert logged["rollout/dynamic_sampling_rounds"] == 1 and len(rollout) == 2 * N
    rollout, logged = run_step(GRPO(), ["all", "none"], ["mixed"] * 10)
    assert "rollout/dynamic_sampling_rounds" not in logged and len(rollout) == 2 * N


def test_refill_needs_a_map_style_training_set():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter([])

    cb = RolloutCallback(KindEngine(), kind_reward, n=N)
    module = SimpleNamespace(model=None, objective=DAPO(), log=lambda *a, **k: None)
    trainer = SimpleNamespace(
        global_step=0, global_rank=0, world_size=1, train_dataloader=DataLoader(Stream())
    )
    with pytest.raises(ValueError, match="map-style"):
        cb.on_train_batch_start(trainer, module, collate(dataset(["all"])), 0)
