"""FSDP2 through Lightning's ModelParallelStrategy on CPU: 2 processes (gloo), as subprocesses.

The same code path as `trainer=fsdp8` on 8 GPUs: fully_shard per decoder layer, a mixed
precision policy (float32 here, for exact comparisons), HF generate on the sharded model, a
sharded checkpoint saved and resumed, the final model gathered from the shards.
"""

import csv
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_cli import run_cli

SMALL = [
    "trainer.enable_checkpointing=false",
    "data.batch_size=2",
    "rollout.n=4",
    "rollout.sampling.max_new_tokens=40",
    "callbacks=none",
]


def train_rows(run: Path) -> list[dict]:
    (path,) = run.glob("csv/version_*/metrics.csv")
    return [r for r in csv.DictReader(path.open()) if r.get("train/updates")]


def fit(run: Path, *args: str, env=None) -> list[dict]:
    proc = run_cli(["fit", *args, f"run_dir={run}"], timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return train_rows(run)


@pytest.mark.parametrize("objective", ["psr", "ppo"])
def test_fsdp_equals_ddp(objective, tmp_path):
    """Every response right on rank 0 and wrong on rank 1. PSR: uneven work per rank (rank 1
    runs dummy forwards to stay in step with rank 0's gathers); PPO: a sharded critic and
    reference model too. FSDP2 and DDP give the same rollouts, losses and gradient norms, step
    for step."""
    tests_dir = str(Path(__file__).parent)
    env = {"PYTHONPATH": os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")])}
    args = [
        f"objective={objective}",
        "reward._target_=helpers.rank_reward.RankReward",
        "algo.mini_batch_size=4",
    ]
    args += ["algo.gradient_checkpointing=true"]  # activation checkpointing under FSDP2 too
    args += ["algo.micro_batch_size=3"]  # uneven micro-batches and no-grad chunks per rank
    args += ["trainer.max_steps=2", *SMALL]
    fsdp = fit(tmp_path / "fsdp", "trainer=fsdp_cpu", "fsdp.param_dtype=float32", *args, env=env)
    # FSDP2 samples with transformers' generate (lock-step ranks): so does the DDP side here
    ddp = fit(
        tmp_path / "ddp",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "rollout.engine.lean=false",
        *args,
        env=env,
    )
    assert len(fsdp) == len(ddp) == 2
    for a, b in zip(fsdp, ddp, strict=True):
        # counted over ranks: PSR keeps 8 on rank 0 and 0 on rank 1; PPO 8 + 8; 4 per rank an update
        assert float(a["train/updates"]) == float(b["train/updates"]) == (1 if objective == "psr" else 2)
        keys = ["rollout/correct_ratio", "rollout/entropy", "loss/policy", "train/grad_norm"]
        keys += ["loss/value", "train/approx_kl_ref"] if objective == "ppo" else []
        for key in keys:
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-6), key


def test_fsdp_sharded_checkpoint_resume(tmp_path):
    """2 steps saving a sharded checkpoint (a folder of per-rank shards); resume from it at the
    same max_steps (nothing to do: the final model equals the first run's, so weights came back
    from the shards), and resume to 3 steps (training goes on at step 2)."""
    first = tmp_path / "first"
    common = ["trainer=fsdp_cpu", "fsdp.param_dtype=float32", *SMALL[1:]]
    rows = fit(first, *common, "trainer.max_steps=2", "trainer.enable_checkpointing=true")
    assert [int(r["step"]) for r in rows] == [0, 1]
    (ckpt,) = first.glob("csv/version_*/checkpoints/*.ckpt")
    assert ckpt.is_dir() and len(list(ckpt.glob("*.distcp"))) == 2  # one shard file per rank

    same = tmp_path / "same"
    proc = run_cli(
        ["fit", *common, "trainer.max_steps=2", f"ckpt_path={ckpt}", f"run_dir={same}"], timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = load_file(first / "final_model" / "model.safetensors")
    got = load_file(same / "final_model" / "model.safetensors")
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)

    more = tmp_path / "more"
    rows = fit(more, *common, "trainer.max_steps=3", f"ckpt_path={ckpt}")
    assert [int(r["step"]) for r in rows] == [2]
    assert float(rows[0]["train/updates"]) >= 0


def test_fsdp_rank_without_a_heldout_problem_joins_the_collectives(tmp_path):
    """One held-out problem on 2 FSDP2 ranks: rank 1 has none, yet pass@k and the held-out
    callback finish (it runs a stand-in problem whose results are dropped) instead of hanging."""
    import json

    args = ["trainer=fsdp_cpu", "fsdp.param_dtype=float32", "trainer.max_steps=1"]
    args += ["data.batch_size=1", "rollout.n=2", "rollout.sampling.max_new_tokens=16"]
    args += ["trainer.enable_checkpointing=false", "data.num_heldout_problems=1", "callbacks.pass_at_k.n=2"]
    args += ["callbacks.heldout.every_n_steps=1", "callbacks.heldout.entropy_samples=2"]
    fit(tmp_path, *args)
    (path,) = tmp_path.glob("csv/version_*/heldout.json")
    assert [h["step"] for h in json.loads(path.read_text())] == [0, 1]
    (path,) = tmp_path.glob("csv/version_*/pass_at_k.json")
    assert [h["tag"] for h in json.loads(path.read_text())] == ["before", "after"]


@pytest.mark.parametrize("objective", ["grpo", "ppo"])
def test_fsdp_sigkill_mid_step_then_resume_with_reference_and_critic(objective, tmp_path):
    """FSDP2 on 2 ranks with a reference model (GRPO's KL term, PPO's KL reward) and PPO's
    critic: both ranks SIGKILLed inside step 2 (after its first update, before its last),
    resumed from the sharded checkpoint of step 1 with ckpt_path=last: the final weights equal
    an uninterrupted run's (the reference is rebuilt from model.path, not saved)."""
    from safetensors.torch import load_file
    from test_resume import TESTS_DIR, TINY

    env = {"PYTHONPATH": os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")])}
    args = [f"objective={objective}", "trainer=fsdp_cpu", "fsdp.param_dtype=float32", *TINY]
    args += ["trainer.enable_checkpointing=true"]
    assert objective == "ppo" or "objective.kl_coef=0.0" not in args  # GRPO: kl_coef 1e-3 by default
    fit(tmp_path / "whole", *args, env=env)
    run = tmp_path / "killed"
    die = ["+callbacks.die._target_=helpers.die.DieAt", "+callbacks.die.step=1"]
    proc = run_cli(["fit", *args, *die, f"run_dir={run}"], timeout=600, env=env)
    assert proc.returncode != 0 and not (run / "final_model").exists(), proc.stderr[-2000:]
    (ckpt,) = run.glob("csv/version_0/checkpoints/*step=1.ckpt")
    assert ckpt.is_dir() and len(list(ckpt.glob("*.distcp"))) == 2  # sharded, after step 1
    proc = run_cli(["fit", *args, "ckpt_path=last", f"run_dir={run}"], timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = sorted(run.glob("csv/version_*/metrics.csv"))[-1]
    assert [int(r["step"]) for r in csv.DictReader(resumed.open()) if r.get("train/updates")] == [1]
    want = load_file(tmp_path / "whole" / "final_model" / "model.safetensors")
    got = load_file(run / "final_model" / "model.safetensors")
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want), objective
