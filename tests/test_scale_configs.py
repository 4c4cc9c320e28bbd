"""Paper-scale configs compose with the paper's numbers; the engine syncs only when the policy
changed; rollout=vllm without vllm is one clear error. No GPU and no vllm needed."""

import csv
import importlib.util
from importlib.resources import files
from types import SimpleNamespace

import pytest
from conftest import FAST
from nsr_lightning.callbacks import RolloutCallback

from nsr_lightning.cli import compose, main

CONFIGS = files("nsr_lightning.configs")
EXPERIMENTS = ["paper_psr", "paper_nsr", "paper_w_reinforce", "paper_grpo", "paper_ppo"]


def has(group: str, name: str) -> bool:
    return CONFIGS.joinpath(group).joinpath(f"{name}.yaml").is_file()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_paper_experiment_composes_with_paper_numbers(experiment, tmp_path):
    assert has("experiment", experiment)
    objective = experiment.removeprefix("paper_")
    assert has("objective", objective)
    cfg = compose("fit", [f"experiment={experiment}", f"run_dir={tmp_path}"])
    assert cfg.objective.name == objective
    assert cfg.model.path == "Qwen/Qwen2.5-Math-7B" and cfg.model.template == "qwen25_math"
    assert cfg.data.batch_size * cfg.trainer.devices == 1024  # prompts per step
    assert (
        cfg.rollout.n == 8 and cfg.rollout.sampling.temperature == 1.0 and cfg.rollout.sampling.top_p == 1.0
    )
    assert cfg.rollout.sampling.max_new_tokens == 3072 and cfg.rollout.engine.max_model_len == 4096
    assert cfg.rollout.engine._target_.endswith("VLLMEngine")
    assert cfg.rollout.engine.gpu_memory_utilization <= 0.5
    # 256 prompts x 8 samples per update over 8 ranks: 4 updates on a full batch
    full = cfg.data.batch_size * cfg.rollout.n
    assert full // cfg.algo.mini_batch_size == 4
    assert cfg.algo.lr == 1e-6 and cfg.algo.max_grad_norm == 1.0 and cfg.algo.ppo_epochs == 1
    assert cfg.objective.entropy_coef == 1e-4
    assert cfg.trainer.max_steps == 140 and cfg.trainer.devices == 8
    assert cfg.trainer.strategy._target_.endswith("ModelParallelStrategy")
    assert cfg.trainer.strategy.data_parallel_size == 8 and cfg.trainer.strategy.tensor_parallel_size == 1
    assert cfg.callbacks.pass_at_k.n == 256 and cfg.callbacks.pass_at_k.temperature == 0.6
    if objective == "w_reinforce":
        assert cfg.objective.lambda_pos == 0.1


def test_multi_node_scales_data_parallel_size(tmp_path):
    cfg = compose("fit", ["trainer=fsdp8", "trainer.num_nodes=4", f"run_dir={tmp_path}"])
    assert cfg.trainer.strategy.data_parallel_size == 32


def test_model_configs():
    for name, hub_id, template in [
        ("qwen2_5_math_7b", "Qwen/Qwen2.5-Math-7B", "qwen25_math"),
        ("qwen3_4b", "Qwen/Qwen3-4B", "qwen3_nonthinking"),
    ]:
        cfg = compose("fit", [f"model={name}", "run_dir=/tmp/unused"])
        assert cfg.model.path == hub_id and cfg.model.template == template
        assert cfg.model.vllm_dtype == "bfloat16" and cfg.model.gradient_checkpointing


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_missing_is_one_clear_error(tmp_path, capsys):
    assert main(["fit", "rollout=vllm", f"run_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "rollout=vllm needs the vllm package" in err and "Traceback" not in err


class CountingEngine:
    def __init__(self):
        self.syncs = 0

    def sync_weights(self, model):
        self.syncs += 1


def test_sync_only_when_policy_version_changes():
    engine = CountingEngine()
    cb = RolloutCallback(engine, reward_fn=None)
    module = SimpleNamespace(model=None, policy_version=0)
    assert cb.sync_if_changed(module) and engine.syncs == 1  # the first call always syncs
    assert not cb.sync_if_changed(module) and engine.syncs == 1
    module.policy_version = 3  # three optimizer steps
    assert cb.sync_if_changed(module) and engine.syncs == 2
    engine.weights_lost = True  # e.g. vLLM slept at level 2
    assert cb.sync_if_changed(module) and engine.syncs == 3


def synced_per_step(objective: str, run, *extra: str) -> list[float]:
    assert (
        main(["fit", f"objective={objective}", *FAST, "trainer.max_steps=2", *extra, f"run_dir={run}"]) == 0
    )
    (path,) = run.glob("csv/version_*/metrics.csv")
    return [float(r["perf/synced"]) for r in csv.DictReader(path.open()) if r.get("train/updates")]


def test_fit_syncs_after_updates_only(tmp_path):
    """perf/synced per step: the engine syncs after a step with updates, not after one without
    (PSR with every response wrong); pass@k's sync before training is the first one."""
    assert synced_per_step("psr", tmp_path / "psr", "rollout.sampling.max_new_tokens=1") == [0.0, 0.0]
    assert synced_per_step("reinforce", tmp_path / "reinforce") == [0.0, 1.0]
