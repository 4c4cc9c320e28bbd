"""The command line as a new user meets it: --help, --cfg job, run_dir=~/x, Ctrl-C on evaluate,
and every user mistake answered with exit code 2 and one line naming the key or file."""

import signal
import subprocess
import sys
import time

from nsr_lightning.cli import main


def test_help_prints_the_groups_and_the_common_keys(capsys):
    for flag in ("--help", "-h"):
        assert main(["fit", flag]) == 0
        out = capsys.readouterr().out
        assert "objective=" in out and "nsr|ppo|psr" in out and "trainer=" in out
        assert "trainer.max_steps" in out and "checkpoint.every_n_steps" in out
    assert main(["evaluate", "--help"]) == 0
    out = capsys.readouterr().out
    assert "preset=" in out and "data.datasets" in out and "device" in out


def test_cfg_job_prints_the_composed_config(capsys):
    assert main(["fit", "--cfg", "job", "objective=psr"]) == 0
    out = capsys.readouterr().out
    assert "lambda_pos: 1.0" in out and "lambda_neg: 0.0" in out


def test_a_home_relative_run_dir_is_expanded(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["fit", "--cfg", "job", "run_dir=~/x", "+model.base_model=y"]) == 0
    out = capsys.readouterr().out
    assert f"run_dir: {tmp_path / 'x'}" in out
    assert main(["evaluate", "--cfg", "job", "model.base_model=y", "+model.base_model=z"]) == 0
    assert "base_model: z" in capsys.readouterr().out  # with or without '+', as the README writes it


def test_ctrl_c_on_evaluate_prints_the_resume_command_and_no_traceback(tmp_path):
    run = tmp_path / "run"
    args = ["evaluate", "n=4", "chunk_size=1", "data.synthetic_problems=64", f"run_dir={run}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nsr_lightning", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    results = run / "synthetic" / "results.jsonl"
    for _ in range(1200):  # until the first problems are done
        if (results.exists() and results.stat().st_size) or proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    hint = err.split("to resume: python -m nsr_lightning ")[1].split()
    assert hint[0] == "evaluate" and f"run_dir={run}" in hint
