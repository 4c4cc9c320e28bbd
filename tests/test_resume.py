"""Exact resume: a run SIGKILLed in the middle of a step and resumed with ckpt_path=last ends
with the same weights as an uninterrupted run; checkpoints are complete or absent."""

import csv
import hashlib
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_cli import run_cli

from nsr_lightning.checkpoint import AtomicCheckpointIO, damage, find_last, hash_path, resolve_ckpt_path
from nsr_lightning.cli import main
from nsr_lightning.data.datamodule import StepSampler
from nsr_lightning.errors import UserError
from nsr_lightning.models import load_any_policy
from nsr_lightning.streams import Stream, stream_seed

TINY = ["trainer.max_steps=2", "data.batch_size=2", "rollout.n=4", "rollout.sampling.max_new_tokens=16"]
TINY += ["algo.mini_batch_size=4", "callbacks=none", "checkpoint.every_n_steps=1"]
TINY += ["trainer.enable_progress_bar=false", "trainer.deterministic=true"]
TESTS_DIR = str(Path(__file__).parent)


def train_rows(run: Path) -> dict[int, dict]:
    rows = []
    for path in sorted(run.glob("csv/version_*/metrics.csv")):
        rows += [r for r in csv.DictReader(path.open()) if r.get("train/updates")]
    return {int(r["step"]): r for r in rows}


@pytest.mark.parametrize("objective", ["w_reinforce", "ppo"])
def test_sigkill_mid_step_then_resume_gives_the_same_weights(objective, tmp_path):
    """2 steps uninterrupted vs. killed inside step 1 (after its first mini-batch update, before
    its last: `helpers.die.DieAt`) and resumed from the checkpoint of step 0 with ckpt_path=last.
    Data order, sampling seeds, optimizer state (PPO: the critic and its optimizer too), step
    counters and policy_version all come back: final weights bit-equal, step 1 logged the same."""
    args = ["fit", f"objective={objective}", *TINY]
    assert main([*args, f"run_dir={tmp_path / 'whole'}"]) == 0

    run = tmp_path / "killed"
    die = ["+callbacks.die._target_=helpers.die.DieAt", "+callbacks.die.step=1"]
    env = {"PYTHONPATH": os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")])}
    proc = run_cli([*args, *die, f"run_dir={run}"], timeout=300, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (run / "final_model").exists()
    saved = torch.load(find_last(run), weights_only=True)
    whole = train_rows(tmp_path / "whole")
    assert saved["global_step"] == 1 and saved["policy_version"] == float(whole[0]["train/updates"])
    assert len(saved["optimizer_states"]) == (2 if objective == "ppo" else 1)

    assert main([*args, "ckpt_path=last", f"run_dir={run}"]) == 0
    want = load_file(tmp_path / "whole" / "final_model" / "model.safetensors")
    got = load_file(run / "final_model" / "model.safetensors")
    assert all(torch.equal(want[k], got[k]) for k in want)
    resumed = train_rows(run)
    assert sorted(resumed) == [0, 1]  # the killed step left no row; the resumed run logged step 1
    keys = ["rollout/correct_ratio", "loss/policy", "train/grad_norm", "train/updates"]
    for key in keys + (["loss/value", "train/critic_grad_norm"] if objective == "ppo" else []):
        assert resumed[1][key] == whole[1][key], key


def test_a_crash_mid_write_leaves_no_complete_looking_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    old = tmp_path / "epoch=0-step=1.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "global_step": 1}, old)

    def torn(obj, f, *a, **k):  # half a file, then the process "dies"
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn)
    new = tmp_path / "epoch=0-step=2.ckpt"
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2}, new)
    assert not new.exists()
    # a leftover temp file (a SIGKILL gives no chance to clean up) is never taken for a checkpoint
    (tmp_path / ".epoch=0-step=3.ckpt.tmp-123").write_bytes(b"torn")
    assert find_last(tmp_path) == old
    assert resolve_ckpt_path("last", str(tmp_path)) == str(old)
    assert torch.load(old, weights_only=True)["global_step"] == 1


def test_a_checkpoint_is_hashed_when_saved_and_checked_by_content(tmp_path):
    """Each save writes `<name>.sha256` (sha256sum's format) once the file is in place; removing the
    checkpoint removes it; a file without one (saved before hashes existed) is judged by its archive;
    the same bytes changed in place are refused by `evaluate model.path=` too."""
    io = AtomicCheckpointIO()
    path = tmp_path / "epoch=0-step=1.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.arange(4096.0)}, "global_step": 1}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert hash_path(path).read_text() == f"{digest}  epoch=0-step=1.ckpt\n"
    assert damage(path) is None
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1  # one bit, in the tensor's bytes: the archive still reads
    path.write_bytes(bytes(data))
    assert "its content does not match the sha256 saved with it in epoch=0-step=1.ckpt.sha256" in damage(path)
    with pytest.raises(UserError, match="model.path: .* is not a whole checkpoint: its content does not"):
        load_any_policy(str(path))
    hash_path(path).unlink()
    assert damage(path) is None  # no hash saved: its archive is whole
    io.save_checkpoint({"global_step": 2}, path)
    io.remove_checkpoint(path)
    assert list(tmp_path.iterdir()) == []


def test_last_checkpoint_by_step_and_sharded_folders(tmp_path):
    (tmp_path / "csv/version_0/checkpoints").mkdir(parents=True)
    (tmp_path / "csv/version_1/checkpoints").mkdir(parents=True)
    torch.save({"global_step": 10}, tmp_path / "csv/version_0/checkpoints/epoch=0-step=10.ckpt")
    torch.save({"global_step": 9}, tmp_path / "csv/version_1/checkpoints/epoch=0-step=9.ckpt")  # newer file
    assert find_last(tmp_path).name == "epoch=0-step=10.ckpt"
    sharded = tmp_path / "csv/version_1/checkpoints/epoch=0-step=12.ckpt"
    sharded.mkdir()
    (sharded / "__0_0.distcp").write_bytes(b"x")
    assert find_last(tmp_path).name == "epoch=0-step=10.ckpt"  # no .metadata / meta.pt yet: incomplete
    (sharded / ".metadata").write_bytes(b"x")
    (sharded / "meta.pt").write_bytes(b"PK torn")  # meta.pt is judged by content
    assert find_last(tmp_path).name == "epoch=0-step=10.ckpt"
    torch.save({"global_step": 12}, sharded / "meta.pt")
    assert find_last(tmp_path) == sharded
    assert resolve_ckpt_path("last", str(tmp_path / "empty")) is None  # nothing yet: start fresh
    with pytest.raises(UserError, match="ckpt_path"):
        resolve_ckpt_path(str(tmp_path / "nope.ckpt"), str(tmp_path))


def test_step_sampler_order_is_a_function_of_the_step():
    """Ranks take disjoint slices of one seeded permutation per epoch; starting at step s gives
    the suffix an uninterrupted pass gives from s on, across an epoch boundary too."""
    position = {"step": 0}

    def sampler(rank):
        return StepSampler(20, 3, seed=5, rank=rank, world=2, position=lambda: position["step"])

    assert sampler(0).steps_per_epoch == 3 and len(sampler(0)) == 9
    epoch0 = [list(sampler(r)) for r in (0, 1)]
    perm = torch.randperm(
        20, generator=torch.Generator().manual_seed(stream_seed(5, Stream.TRAIN_ORDER, 0, 0))
    ).tolist()
    assert epoch0[0] == perm[0:3] + perm[6:9] + perm[12:15]
    assert epoch0[1] == perm[3:6] + perm[9:12] + perm[15:18]
    position["step"] = 2
    assert list(sampler(1)) == epoch0[1][6:]
    position["step"] = 4  # epoch 1, its second step: a new permutation
    perm1 = torch.randperm(
        20, generator=torch.Generator().manual_seed(stream_seed(5, Stream.TRAIN_ORDER, 0, 1))
    ).tolist()
    assert list(sampler(0)) == perm1[6:9] + perm1[12:15]
    with pytest.raises(ValueError, match="data.batch_size"):
        StepSampler(5, 3, seed=0, rank=0, world=2, position=lambda: 0)
