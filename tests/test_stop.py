"""A run stopped from outside, and the run folder's state: SIGTERM / Ctrl-C between steps, a
kill during the final pass@k, a resume past trainer.max_steps, a truncated newest checkpoint,
a checkpoint of another objective, two runs in one run_dir, a finished run_dir re-used."""

import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_cli import run_cli

from nsr_lightning.checkpoint import check_resumable, find_last, hash_path
from nsr_lightning.cli import main
from nsr_lightning.errors import UserError
from nsr_lightning.run_dir import hydra_quote

TINY = ["trainer.max_steps=4", "data.batch_size=2", "rollout.n=4", "rollout.sampling.max_new_tokens=16"]
TINY += ["algo.mini_batch_size=4", "callbacks=none", "trainer.enable_progress_bar=false"]
TINY += ["trainer.deterministic=true"]
TESTS_DIR = str(Path(__file__).parent)
ENV = {"PYTHONPATH": os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")])}


def weights(run: Path) -> dict:
    return load_file(run / "final_model" / "model.safetensors")


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """The uninterrupted 4-step run, a checkpoint after every step."""
    run = tmp_path_factory.mktemp("whole") / "run"
    assert main(["fit", *TINY, "checkpoint.every_n_steps=1", "checkpoint.keep=4", f"run_dir={run}"]) == 0
    return run


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_saves_the_last_step_and_resume_is_exact(signum, whole, tmp_path, capsys):
    """The signal arrives inside step 2 (before its last update); checkpoints only at the end.
    The step finishes, its checkpoint is written, the exit code is 128 + signal, no final model;
    the printed command resumes to the uninterrupted run's weights, bit for bit."""
    run = tmp_path / "run"
    sig = ["+callbacks.sig._target_=helpers.signal_at.SignalAt", "+callbacks.sig.step=2"]
    args = [*TINY, "checkpoint.every_n_steps=0", *sig, f"+callbacks.sig.signum={int(signum)}"]
    proc = run_cli(["fit", *args, f"run_dir={run}"], env=ENV)
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert torch.load(find_last(run), weights_only=True)["global_step"] == 3
    assert not (run / "final_model").exists() and not (run / ".lock").exists()
    hint = shlex.split(proc.stderr.split("to resume: python -m nsr_lightning ")[1].splitlines()[0])
    assert hint[0] == "fit" and "ckpt_path=last" in hint and f"run_dir='{run}'" in hint
    assert main(hint) == 0
    assert same(weights(run), weights(whole))


ODD_RUN_DIRS = [
    "my run ü 日本",
    "a'b\"c",
    "a=b,c [d] {e}",
    "back\\slash\\",
    "x\\'y",
    "${oc.env:HOME}",
    "$HOME `ls`;|&",
]


@pytest.mark.parametrize("name", ODD_RUN_DIRS)
def test_the_resume_command_reads_back_as_the_same_run_dir(name, tmp_path):
    """The printed command, split as a shell splits it, gives Hydra (and OmegaConf) back the run_dir
    exactly: spaces, quotes, '=', ',', brackets, backslashes, `${...}` and non-ASCII letters."""
    from nsr_lightning.cli import compose
    from nsr_lightning.run_dir import resume_command

    run_dir = str(tmp_path / name)
    argv = shlex.split(resume_command("fit", ["trainer.max_steps=4", "+callbacks.x.y='a b'"], run_dir))
    assert argv[:4] == ["python", "-m", "nsr_lightning", "fit"]
    assert argv[4:6] == ["trainer.max_steps=4", "+callbacks.x.y='a b'"]  # the user's own, verbatim
    assert compose("fit", [argv[4], *argv[6:]]).run_dir == run_dir


def test_the_printed_resume_command_runs_in_a_shell_for_an_odd_run_dir(tmp_path):
    """SIGTERM inside step 2 of a run whose run_dir has spaces, quotes, '=' and non-ASCII letters;
    the printed command, run as is by bash, resumes it to a final model."""
    run = tmp_path / "R" / "my run ü 日本 'q' a=b"
    sig = ["+callbacks.sig._target_=helpers.signal_at.SignalAt", "+callbacks.sig.step=2"]
    args = ["fit", *TINY, "checkpoint.every_n_steps=0", *sig, "run_dir=" + hydra_quote(str(run))]
    proc = run_cli(args, env=ENV)
    assert proc.returncode == 143, proc.stderr[-3000:]
    hint = proc.stderr.split("to resume: ")[1].splitlines()[0]
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])  # `python` is ours
    proc = subprocess.run(
        ["bash", "-c", hint],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **ENV, "PATH": path},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming from {run}" in proc.stdout
    assert (run / "final_model" / "model.safetensors").is_file()


def test_sigterm_on_every_ddp_rank_stops_them_together(tmp_path):
    """2-process DDP, each rank signalled inside step 2 (rank 1 twice: by itself, then forwarded
    by its parent, as under SLURM): no hang, exit 143, step 3 saved, the resume finishes."""
    run = tmp_path / "run"
    sig = ["+callbacks.sig._target_=helpers.signal_at.SignalAt", "+callbacks.sig.step=2"]
    args = ["fit", *TINY, "checkpoint.every_n_steps=0", "trainer.devices=2", "trainer.strategy=ddp"]
    proc = run_cli([*args, *sig, f"run_dir={run}"], timeout=300, env=ENV)
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert torch.load(find_last(run), weights_only=True)["global_step"] == 3
    proc = run_cli([*args, "ckpt_path=last", f"run_dir={run}"], timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "final_model" / "model.safetensors").is_file()


def test_a_kill_during_the_final_pass_at_k_is_finished_by_the_resume(tmp_path):
    """The default callbacks and progress bar; SIGKILL inside the "after" pass@k, after the last
    step's checkpoint: the same command with ckpt_path=last (training already done) runs the end
    of the run, the progress bar's included, and writes the before / after table and the final model."""
    run = tmp_path / "run"
    args = [a for a in TINY if a.split("=")[0] not in ("callbacks", "trainer.enable_progress_bar")]
    args += ["trainer.max_steps=2", "checkpoint.every_n_steps=1", f"run_dir={run}"]
    args += ["callbacks.pass_at_k.n=2", "data.num_heldout_problems=2"]
    die = ["+callbacks.die._target_=helpers.signal_at.KillInFinalPassAtK"]
    proc = run_cli(["fit", *args, *die], env=ENV)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert torch.load(find_last(run), weights_only=True)["global_step"] == 2
    assert not (run / "final_model").exists()
    proc = run_cli(["fit", *args, "ckpt_path=last"], env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training was already done at step 2" in proc.stdout + proc.stderr
    (history,) = [json.loads(p.read_text()) for p in run.glob("csv/version_1/pass_at_k.json")]
    assert [h["tag"] for h in history] == ["before", "after"]
    assert "\nafter         synthetic" in proc.stderr
    assert (run / "final_model" / "model.safetensors").is_file()


def test_a_truncated_newest_checkpoint_falls_back_with_a_line(whole, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(whole, run)
    shutil.rmtree(run / "final_model")
    newest = find_last(run)
    assert newest.name == "epoch=0-step=4.ckpt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    assert main(["fit", *TINY, "checkpoint.every_n_steps=1", "ckpt_path=last", f"run_dir={run}"]) == 0
    err = capsys.readouterr().err
    assert f"ckpt_path=last: skipping {newest}: its archive is not whole" in err
    assert "falling back to the newest intact one" in err
    assert same(weights(run), weights(whole))  # step 4 trained again from step 3's checkpoint


def test_a_newest_checkpoint_corrupted_in_place_falls_back_with_a_line(whole, tmp_path, capsys):
    """1 KB in the middle of the step-4 checkpoint overwritten, its size kept (its zip archive still
    reads): an explicit ckpt_path to it is refused in one line; ckpt_path=last skips it with one
    line, resumes from step 3 and ends with the uninterrupted run's weights."""
    run = tmp_path / "run"
    shutil.copytree(whole, run)
    shutil.rmtree(run / "final_model")
    newest = find_last(run)
    assert newest.name == "epoch=0-step=4.ckpt"
    assert (
        hash_path(newest).read_text() == f"{hashlib.sha256(newest.read_bytes()).hexdigest()}  {newest.name}\n"
    )
    data = bytearray(newest.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 1024] = bytes(b ^ 0xFF for b in data[mid : mid + 1024])
    newest.write_bytes(bytes(data))
    assert newest.stat().st_size == len(data)
    assert main(["fit", *TINY, f"ckpt_path={newest}", f"run_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and f"ckpt_path: {newest} is not a whole checkpoint: its content does not" in err
    )
    assert main(["fit", *TINY, "checkpoint.every_n_steps=1", "ckpt_path=last", f"run_dir={run}"]) == 0
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "ckpt_path=last: skipping" in x]
    assert f"skipping {newest}: its content does not match the sha256 saved with it" in line
    assert same(weights(run), weights(whole))  # step 4 trained again from step 3's checkpoint


def test_a_checkpoint_that_cannot_continue_this_run_is_one_line(whole, tmp_path, capsys):
    """Past trainer.max_steps, or saved by another objective: refused before any log is written."""
    run = tmp_path / "run"
    shutil.copytree(whole, run)
    versions = sorted(run.glob("csv/version_*"))
    ckpt = str(find_last(run))
    assert main(["fit", *TINY, "trainer.max_steps=2", f"ckpt_path={ckpt}", f"run_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trainer.max_steps=2 is below the step of the checkpoint" in err
    assert main(["fit", *TINY, "objective=w_reinforce", f"ckpt_path={ckpt}", f"run_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was saved by objective nsr with model model_type=" in err
    assert sorted(run.glob("csv/version_*")) == versions  # no empty csv/version_N left behind
    shape = {"num_hidden_layers": 3}
    with pytest.raises(UserError, match="saved by objective nsr with model num_hidden_layers=3; this run"):
        check_resumable({"nsr_run": {"objective": "nsr", "model": shape}}, "x.ckpt", 4, {"objective": "nsr"})


def test_a_finished_run_dir_is_not_started_over(whole, capsys, monkeypatch):
    import nsr_lightning.cli as cli

    monkeypatch.setattr(cli, "build_fit", lambda cfg: pytest.fail("went on to load models and data"))
    assert main(["fit", *TINY, f"run_dir={whole}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a finished run (final_model/)" in err
    assert "add ckpt_path=last to continue it, or choose another run_dir" in err


def test_two_runs_on_one_run_dir_the_second_is_refused(tmp_path, capsys, monkeypatch):
    import nsr_lightning.cli as cli

    run = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "nsr_lightning", "fit", *TINY, f"run_dir={run}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(600):
            if (run / ".lock").exists() or first.poll() is not None:
                break
            time.sleep(0.1)
        assert (run / ".lock").read_text().split() == [str(first.pid), socket.gethostname()]
        monkeypatch.setattr(cli, "build_fit", lambda cfg: pytest.fail("went on to load models and data"))
        assert main(["fit", *TINY, "seed=1", f"run_dir={run}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"is in use by another run (pid {first.pid} on" in err
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=300) in (0, 143), first.stderr.read()[-2000:]
    assert not (run / ".lock").exists()
    # a lock left by a dead process (a SIGKILLed run) on this host: taken over with a line
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / ".lock").write_text(f"{dead.pid} {socket.gethostname()}\n")
    shutil.rmtree(run)
    run.mkdir()
    (run / ".lock").write_text(f"{dead.pid} {socket.gethostname()}\n")

    def stop(cfg):
        assert (run / ".lock").read_text().split()[0] == str(os.getpid())
        raise UserError("stopped here")

    monkeypatch.setattr(cli, "build_fit", stop)
    assert main(["fit", *TINY, f"run_dir={run}"]) == 2
    assert f"taking over the stale lock of pid {dead.pid} (no longer running)" in capsys.readouterr().err
    assert not (run / ".lock").exists()
