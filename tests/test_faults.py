"""Faults that must not end or corrupt a run: non-finite updates, nothing to learn from, an
unwritable or full run folder. (A reward worker that hangs or dies: tests/test_math_reward.py.)"""

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_cli import metrics_rows, run_cli

from nsr_lightning.cli import main
from nsr_lightning.models import ASSETS

NAN = ["objective=reinforce", "objective._target_=helpers.nan_loss.NaNLoss", "callbacks=none"]
NAN += ["data.batch_size=2", "rollout.n=4", "rollout.sampling.max_new_tokens=16"]
NAN += ["trainer.enable_checkpointing=false", "trainer.enable_progress_bar=false"]


def train_rows(run: Path) -> list[dict]:
    return [r for r in metrics_rows(run) if r.get("train/updates")]


def test_a_non_finite_update_is_skipped_and_counted(tmp_path, capsys):
    """The only update of step 0 has a NaN loss: skipped (the weights are the shipped model's,
    bit for bit, weight decay included), counted in train/skipped_updates, said on stderr."""
    run = tmp_path / "run"
    assert main(["fit", *NAN, "+objective.nan_calls=[1]", "trainer.max_steps=1", f"run_dir={run}"]) == 0
    (row,) = train_rows(run)
    assert float(row["train/updates"]) == 1 and float(row["train/skipped_updates"]) == 1
    assert "non-finite update skipped" in capsys.readouterr().err
    want = load_file(ASSETS / "tiny_model" / "model.safetensors")
    got = load_file(run / "final_model" / "model.safetensors")
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_bad_updates_in_a_row_stop_the_run_with_one_message(tmp_path, capsys):
    """Loss calls 1, 3 and 4 are NaN (one update per step), limit 2 in a row: step 1's good
    update resets the count, steps 2 and 3 make two in a row and the run stops at step 3."""
    run = tmp_path / "run"
    args = [*NAN, "+objective.nan_calls=[1,3,4]", "algo.max_bad_updates_in_a_row=2"]
    assert main(["fit", *args, "trainer.max_steps=6", f"run_dir={run}"]) == 1
    err = capsys.readouterr().err
    assert "error: step 3: 2 updates in a row had a non-finite loss" in err
    assert "algo.max_bad_updates_in_a_row=2" in err and "RunStopped" not in err  # no traceback
    rows = train_rows(run)
    assert [float(r["train/skipped_updates"]) for r in rows] == [1, 0, 1]  # step 3 stopped unlogged
    assert not (run / "final_model").exists()


def test_ddp_non_finite_on_one_rank_skips_on_every_rank(tmp_path):
    """2-process DDP: rank 1's first loss is NaN. Every rank skips that update together (the
    flag is reduced over ranks), the next step trains normally, nothing hangs."""
    run = tmp_path / "run"
    args = ["fit", *NAN, "+objective.nan_calls=[1]", "+objective.nan_rank=1", "trainer.max_steps=2"]
    args += ["trainer.devices=2", "trainer.strategy=ddp", f"run_dir={run}"]
    tests_dir = str(Path(__file__).parent)
    proc = run_cli(
        args, timeout=300, env={"PYTHONPATH": os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")])}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = train_rows(run)
    assert [float(r["train/skipped_updates"]) for r in rows] == [1, 0]
    assert float(rows[1]["train/grad_norm"]) > 0


def test_nothing_to_learn_says_so(tmp_path, capsys):
    """NSR when every response is right, here with a reward that calls everything correct:
    no update, a log line naming the objective and the count."""
    args = ["fit", "objective=nsr", "reward._target_=helpers.rank_reward.RankReward", *NAN[2:]]
    assert main([*args, "trainer.max_steps=1", f"run_dir={tmp_path / 'run'}"]) == 0
    err = capsys.readouterr().err
    assert "objective nsr keeps 0 of 8 samples (nothing to learn from); no update this step" in err
    (row,) = train_rows(tmp_path / "run")
    assert float(row["train/updates"]) == 0


def test_unwritable_run_dir_is_one_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["fit", f"run_dir={blocker / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run_dir: cannot write to") and str(blocker) in err
    assert main(["fit", f"run_dir={tmp_path / 'ok'}", f"logger.csv.save_dir={blocker}"]) == 2
    assert "logger.csv.save_dir: cannot write to" in capsys.readouterr().err


def test_a_full_disk_is_one_clear_error_before_loading_anything(tmp_path, capsys, monkeypatch):
    import shutil

    import nsr_lightning.cli as cli

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10 << 20))
    monkeypatch.setattr(cli, "build_fit", lambda cfg: pytest.fail("went on to load models and data"))
    assert main(["fit", f"run_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "has 10 MB free, this run writes about" in err and "checkpoint.keep" in err


def test_a_disk_that_fills_during_a_checkpoint_is_one_line(tmp_path, capsys, monkeypatch):
    """torch.save's own words for a full disk ("unexpected pos"): one line, exit 1, no temp file."""
    import nsr_lightning.checkpoint as checkpoint

    def full(obj, f, *a, **k):
        f.write(b"PK\x03\x04 part of a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 3086016 vs 3085904")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    run = tmp_path / "run"
    args = [*NAN[2:], "objective=reinforce", "trainer.enable_checkpointing=true", "trainer.max_steps=1"]
    assert main(["fit", *args, f"run_dir={run}"]) == 1
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert "no space left on device while writing" in line and "step=1.ckpt" in line, line
    assert not any(
        x.startswith(("RuntimeError", "nsr_lightning.errors")) for x in err.splitlines()
    )  # no traceback
    assert not list(run.rglob(".*.tmp-*")) and not list(run.rglob("*.ckpt"))
    assert not (run / "final_model").exists()


def test_a_final_model_that_does_not_fit_leaves_no_partial_folder(tmp_path, capsys, monkeypatch):
    from transformers import PreTrainedModel

    def full(self, folder, **kwargs):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "config.json").write_text("{}")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    run = tmp_path / "run"
    assert main(["fit", *NAN[2:], "objective=reinforce", "trainer.max_steps=1", f"run_dir={run}"]) == 1
    err = capsys.readouterr().err
    assert "error: no space left on device while writing" in err and "final_model" in err
    assert not (run / "final_model").exists() and not list(run.glob(".final_model*"))


def test_wandb_online_without_network_or_key_is_one_line_before_loading(tmp_path, capsys, monkeypatch):
    import socket

    import nsr_lightning.cli as cli

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(cli, "build_fit", lambda cfg: pytest.fail("went on to load models and data"))
    args = ["fit", "logger=wandb", "logger.wandb.offline=false", f"run_dir={tmp_path / 'run'}"]
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)

    def unreachable(address, timeout=None):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach the W&B server api.wandb.ai:443" in err
    assert "logger.wandb.offline=true" in err
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert main(args) == 2
    assert "no W&B API key" in capsys.readouterr().err
