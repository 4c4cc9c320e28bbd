"""The command line as a new user meets it: --help, --cfg job, run_dir=~/x, Ctrl-C on evaluate,
and every user mistake answered with exit code 2 and one line naming the key or file."""

import shlex
import signal
import subprocess
import sys
import time

import pytest

from nsr_lightning.cli import main


def test_help_prints_the_groups_and_the_common_keys(capsys):
    for flag in ("--help", "-h"):
        assert main(["fit", flag]) == 0
        out = capsys.readouterr().out
        assert "objective=" in out and "nsr|ppo|psr" in out and "trainer=" in out
        assert "trainer.max_steps" in out and "checkpoint.every_n_steps" in out
    assert "trainer.<arg>" in out  # fit builds a lightning.Trainer
    assert main(["evaluate", "--help"]) == 0
    out = capsys.readouterr().out
    assert "preset=" in out and "data.datasets" in out and "device" in out
    assert "trainer.<arg>" not in out  # evaluate builds no Trainer: its device is `device=`


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
        # as from a terminal: a test run started in the background (`cmd &` in a script) ignores
        # SIGINT, the child would inherit that and Python would then never raise KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    results = run / "synthetic" / "results.jsonl"
    for _ in range(1200):  # until the first problems are done
        if (results.exists() and results.stat().st_size) or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the evaluation ended before the signal: make it longer"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    hint = shlex.split(err.split("to resume: python -m nsr_lightning ")[1].splitlines()[0])
    assert hint[0] == "evaluate" and f"run_dir='{run}'" in hint


def _files(tmp_path):
    """Data and checkpoint-like files the cases below point at."""
    (tmp_path / "nan.jsonl").write_text('{"problem": "1+1", "answer": NaN}\n')
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (tmp_path / "math.jsonl").write_text('{"problem": "1+1", "answer": "2"}\n')  # no 'solution'


CUDA = __import__("torch").cuda.is_available()
# (command line, the fragment the one line must hold, reaches the build step: data files are read there)
CASES = [
    ("evaluate n=0", "n must be an integer >= 1; got 0", False),
    ("evaluate n=-3", "n must be an integer >= 1; got -3", False),
    ("evaluate n=abc", "n must be an integer >= 1; got 'abc'", False),
    ("evaluate seed=-1", "seed must be an integer >= 0; got -1", False),
    ("evaluate device=tpu", "device must be auto, cpu, or cuda", False),
    *([] if CUDA else [("evaluate device=cuda", "device must be auto, cpu, or cuda", False)]),
    ("evaluate data.limit=0", "data.limit must be an integer >= 1, or null", False),
    ("evaluate data.datasets=[]", "data.datasets must be a non-empty list", False),
    ("evaluate model.dtype=float16 device=cpu", "device must be a CUDA GPU for model.dtype=float16", False),
    ("fit model.dtype=float16", "model.dtype must be float32 or bfloat16 on a CPU", False),
    ("fit +algo.lrr=1e-4", "algo.lrr: unknown config key; algo has: lr, ", False),
    ("fit data=math", "with data=math add reward=math", False),
    ("fit ckpt_path={d}/config.yaml", "config.yaml is a .yaml file, not a training checkpoint", False),
    ("fit ckpt_path={d}/model.safetensors", "is a .safetensors file, not a training checkpoint", False),
    ("fit ckpt_path={d}/none.ckpt", "ckpt_path: no checkpoint at", False),
    (
        "evaluate data.datasets=[mine] data.paths.mine={d}/nan.jsonl",
        "nan.jsonl: line 1: not readable JSON",
        True,
    ),
    (
        "fit data=math reward=math data.template=chat data.paths.math_train={d}/math.jsonl",
        "math.jsonl: line 1: no 'solution' field",  # a data module's error, not wrapped by Hydra
        True,
    ),
]


@pytest.mark.parametrize("line, fragment, builds", CASES, ids=[c[0] for c in CASES])
def test_every_user_mistake_is_exit_2_and_one_line(line, fragment, builds, tmp_path, capsys, monkeypatch):
    import nsr_lightning.cli as cli

    _files(tmp_path)
    if not builds:  # refused before anything is loaded
        for name in ("build_fit", "build_evaluate"):
            monkeypatch.setattr(cli, name, lambda cfg: pytest.fail("went on to load models and data"))
    args = line.format(d=tmp_path).split() + [f"run_dir={tmp_path / 'run'}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment in err, err
    assert not (tmp_path / "run" / "csv").exists()  # no log folder left by the failed try


def test_a_parquet_file_with_any_name_is_read_as_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nsr_lightning.data import load_problems

    path = tmp_path / "rows.jsonl"  # a Parquet file under a JSONL name
    pq.write_table(pa.table({"problem": ["1+1"], "answer": ["2"]}), path)
    (problem,) = load_problems("mine", path=str(path))
    assert problem.answer == "2"
