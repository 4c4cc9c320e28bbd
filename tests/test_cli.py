"""The command line: one step per objective config, overrides, clear errors, DDP on 2 processes."""

import csv
import json
import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest
import yaml
from conftest import FAST

from nsr_lightning.cli import main

OBJECTIVES = sorted(
    p.name[:-5]
    for p in files("nsr_lightning.configs").joinpath("objective").iterdir()
    if p.name.endswith(".yaml")
)


def metrics_rows(run_dir: Path) -> list[dict]:
    (path,) = run_dir.glob("csv/version_*/metrics.csv")
    return list(csv.DictReader(path.open()))


def run_cli(args, timeout=300, env=None):
    return subprocess.run(
        [sys.executable, "-m", "nsr_lightning", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_every_objective_config_is_known():
    assert {"psr", "nsr", "w_reinforce", "reinforce"} <= set(OBJECTIVES)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_one_step_per_objective(objective, fast_overrides, tmp_path):
    assert main(["fit", f"objective={objective}", *fast_overrides]) == 0
    run = tmp_path / "run"
    rows = metrics_rows(run)
    train = [r for r in rows if r.get("train/updates")]
    assert len(train) == 1  # max_steps counts RL steps, not optimizer updates
    assert float(train[0]["rollout/correct_ratio"]) >= 0
    assert (run / "final_model" / "model.safetensors").is_file()
    history = json.loads(next(run.glob("csv/version_*/pass_at_k.json")).read_text())
    assert [h["tag"] for h in history] == ["before", "after"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["objective"]["name"] == objective


def test_lambda_override_and_minibatches(fast_overrides, tmp_path):
    args = [
        "fit",
        "objective=w_reinforce",
        "objective.lambda_pos=0.25",
        "algo.mini_batch_size=8",
        "algo.ppo_epochs=2",
        "trainer.detect_anomaly=false",  # a Trainer argument that trainer/cpu.yaml does not list
    ]
    assert main([*args, *fast_overrides]) == 0
    run = tmp_path / "run"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["objective"]["lambda_pos"] == 0.25
    (train,) = [r for r in metrics_rows(run) if r.get("train/updates")]
    # 4 prompts x 4 samples, all kept by W-REINFORCE: 2 mini-batches x 2 epochs = 4 updates, one step
    assert float(train["train/updates"]) == 4
    assert float(train["train/samples_kept"]) == 16
    assert int(train["step"]) == 0


def test_micro_batches_give_the_mini_batch_gradient(fast_overrides, tmp_path):
    """algo.micro_batch_size (gradient accumulation) changes memory, not the update."""
    norms = {}
    for micro in (0, 3):
        run = tmp_path / f"micro{micro}"
        args = ["fit", "objective=grpo", f"algo.micro_batch_size={micro}", "algo.mini_batch_size=8"]
        fast = [o for o in fast_overrides[:-1] if not o.startswith("callbacks.")]
        assert main([*args, *fast, "callbacks=none", f"run_dir={run}"]) == 0
        rows = [r for r in metrics_rows(run) if r.get("train/updates")]
        norms[micro] = float(rows[0]["train/grad_norm"])
    assert norms[3] == pytest.approx(norms[0], rel=1e-4)


def test_print_config(capsys):
    assert main(["fit", "objective=psr", "--cfg"]) == 0
    out = capsys.readouterr().out
    assert "lambda_pos: 1.0" in out and "lambda_neg: 0.0" in out


def test_unknown_objective_is_one_clear_error():
    proc = run_cli(["fit", "objective=nope"], timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "objective=nope: no such option" in proc.stderr
    assert "nsr" in proc.stderr and "w_reinforce" in proc.stderr


def test_missing_model_path_is_one_clear_error(tmp_path, capsys):
    missing = tmp_path / "no_such_model"
    assert main(["fit", f"model.path={missing}", f"run_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "model.path" in err and str(missing) in err


@pytest.mark.parametrize(
    "override, key",
    [
        ("algo.lr=-1", "algo.lr"),
        ("algo.ppo_epochs=0", "algo.ppo_epochs"),
        ("objective.lambda_pos=-0.5", "lambda_pos"),
        ("objective.loss_agg_mode=sum", "loss_agg_mode"),
        ("rollout.n=0", "rollout.n"),
        ("rollout.sampling.top_p=0", "top_p"),
        ("data.template=nope", "data.template"),
        ("trainer.nope=1", "nope"),
    ],
)
def test_bad_config_values_are_refused(override, key, tmp_path, capsys):
    assert main(["fit", override, f"run_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err


def test_unknown_command(capsys):
    assert main(["train"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_ddp_two_processes(tmp_path):
    """2-process CPU DDP (gloo) through Lightning's own launcher, as a subprocess."""
    run = tmp_path / "run"
    args = [
        "fit",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "trainer.max_steps=2",
        "trainer.enable_checkpointing=false",
    ]
    args += [
        "data.batch_size=2",
        "data.num_heldout_problems=3",
        "rollout.n=4",
        "rollout.sampling.max_new_tokens=40",
    ]
    args += ["callbacks.pass_at_k.n=4", f"run_dir={run}"]
    proc = run_cli(args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    train = [r for r in metrics_rows(run) if r.get("train/updates")]
    assert len(train) == 2
    # 2 ranks x 2 prompts x 4 samples: the ratio metrics are summed over both ranks
    assert all(0 <= float(r["rollout/correct_ratio"]) <= 1 for r in train)
    history = json.loads(next(run.glob("csv/version_*/pass_at_k.json")).read_text())
    assert len(history) == 2 and set(history[0]["pass@k"]) == {"1", "2", "4"}


@pytest.mark.parametrize("objective", ["ppo", "dapo"])
def test_ddp_critic_reference_and_dynamic_sampling(objective, tmp_path):
    """Under 2-process DDP: PPO's critic and reference model, DAPO's refill rounds (synced over
    ranks), with several mini-batch updates per step; no hang, every step logged."""
    run = tmp_path / "run"
    args = ["fit", f"objective={objective}", "trainer.devices=2", "trainer.strategy=ddp"]
    args += ["trainer.max_steps=2", "trainer.enable_checkpointing=false", "callbacks=none"]
    args += ["data.batch_size=2", "rollout.n=4", "rollout.sampling.max_new_tokens=40"]
    args += ["algo.mini_batch_size=3", f"run_dir={run}"]
    proc = run_cli(args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    train = [r for r in metrics_rows(run) if r.get("train/updates")]
    assert len(train) == 2
    if objective == "ppo":
        assert all(r.get("loss/value") and r.get("train/approx_kl_ref") for r in train)
    else:
        assert all(float(r["rollout/dynamic_sampling_rounds"]) >= 1 for r in train)


def test_ddp_rank_without_samples_stays_in_step(tmp_path):
    """PSR with every response right on rank 0 and wrong on rank 1: rank 1 has nothing to learn
    from, yet both ranks run the same updates (rank 1 a zero loss), nothing hangs; the updates
    follow the kept count of both ranks."""
    run = tmp_path / "run"
    args = ["fit", "objective=psr", "reward._target_=helpers.rank_reward.RankReward", "trainer.devices=2"]
    args += [
        "trainer.strategy=ddp",
        "trainer.max_steps=2",
        "trainer.enable_checkpointing=false",
        "callbacks=none",
    ]
    args += [
        "data.batch_size=2",
        "rollout.n=4",
        "rollout.sampling.max_new_tokens=40",
        "algo.mini_batch_size=4",
    ]
    args += [f"run_dir={run}"]
    tests_dir = str(Path(__file__).parent)
    pythonpath = os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")])
    proc = run_cli(args, timeout=600, env={"PYTHONPATH": pythonpath})
    assert proc.returncode == 0, proc.stderr[-3000:]
    train = [r for r in metrics_rows(run) if r.get("train/updates")]
    assert len(train) == 2
    for row in train:
        assert float(row["rollout/correct_ratio"]) == 0.5  # summed over both ranks
        assert float(row["train/samples_kept_ratio"]) == 0.5
        assert float(row["train/updates"]) == 1  # 8 kept on both ranks, 4 per rank an update


def test_nothing_to_learn_is_a_quiet_step(fast_overrides, tmp_path):
    """PSR when every response is wrong (1 token each: all truncated): the step passes, no update."""
    args = ["fit", "objective=psr", *fast_overrides, "rollout.sampling.max_new_tokens=1"]
    assert main(args) == 0
    (row,) = [r for r in metrics_rows(tmp_path / "run") if r.get("train/updates")]
    assert float(row["train/updates"]) == 0 and float(row["train/samples_kept"]) == 0
    assert float(row["rollout/truncated_ratio"]) == 1.0


def test_wandb_offline(tmp_path):
    run = tmp_path / "run"
    proc = run_cli(["fit", "logger=wandb", *FAST, f"run_dir={run}"], env={"WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    offline = list((run / "wandb").glob("offline-run-*"))
    (record,) = offline[0].glob("*.wandb")
    data = record.read_bytes()
    for key in (b"val/synthetic/pass@k_curve", b"val/synthetic/pass@k_table", b"rollout/correct_ratio"):
        assert key in data


def test_rollout_entropy_covers_every_response(tmp_path):
    """Same seed, same first rollout: rollout/entropy is the pre-update policy's entropy over all
    responses, whichever samples the objective trains on; train/entropy covers only the kept ones."""
    seen = {}
    for objective in ("psr", "nsr", "reinforce"):
        run = tmp_path / objective
        assert main(["fit", f"objective={objective}", *FAST, f"run_dir={run}"]) == 0
        (row,) = [r for r in metrics_rows(run) if r.get("train/updates")]
        seen[objective] = (float(row["rollout/entropy"]), float(row["train/entropy"]))
    ent_all = [v[0] for v in seen.values()]
    assert max(ent_all) - min(ent_all) < 1e-4 * max(ent_all)
    assert seen["reinforce"][1] == pytest.approx(seen["reinforce"][0], rel=1e-4)  # keeps everything
