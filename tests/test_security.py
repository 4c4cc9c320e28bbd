"""Security: checkpoints load weights-only unless the user opts out; model outputs are only
parsed, never evaluated or executed; no secret from the environment lands in a run's files."""

import ast
import os
from pathlib import Path

import pytest
import torch
from test_cli import run_cli

from nsr_lightning.cli import main
from nsr_lightning.rewards.math import MathVerifyReward
from nsr_lightning.rewards.synthetic import SyntheticReward

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "nsr_lightning").rglob("*.py"), *(ROOT / "callbacks").rglob("*.py")])
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_ATTRS = {("pickle", "loads"), ("pickle", "load"), ("marshal", "loads"), ("dill", "loads")}


def calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def test_the_package_never_evaluates_code_or_unpickles_freely():
    """No eval / exec / compile / __import__, no pickle.loads, torch.load only with
    weights_only=True, no shell=True subprocesses, anywhere in the package."""
    assert len(SOURCES) > 30
    found = []
    for path in SOURCES:
        for call in calls(ast.parse(path.read_text(), filename=str(path))):
            func, where = call.func, f"{path.relative_to(ROOT)}:{call.lineno}"
            kw = {k.arg: k.value for k in call.keywords}
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                found.append(f"{where} {func.id}()")
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                if (func.value.id, func.attr) in FORBIDDEN_ATTRS:
                    found.append(f"{where} {func.value.id}.{func.attr}()")
                if (func.value.id, func.attr) == ("torch", "load"):
                    only = kw.get("weights_only")
                    if not (isinstance(only, ast.Constant) and only.value is True):
                        found.append(f"{where} torch.load without weights_only=True")
            shell = kw.get("shell")
            if isinstance(shell, ast.Constant) and shell.value is True:
                found.append(f"{where} shell=True")
    assert found == []


HOSTILE = [
    "\\boxed{__import__('os').system('touch {marker}')}",
    "\\boxed{open('{marker}', 'w')}",
    "\\boxed{exec(\"open('{marker}', 'w')\")}",
    "\\boxed{().__class__.__bases__[0].__subclasses__()}",
    "\\boxed{eval('1+1')}",  # would score 1 against the gold 2 if it were evaluated
    "\\boxed{2}; import os; os.system('touch {marker}')",
]


@pytest.mark.parametrize("reward_cls", [MathVerifyReward, SyntheticReward])
def test_hostile_model_outputs_are_only_parsed(reward_cls, tmp_path):
    marker = tmp_path / "pwned"
    texts = [h.replace("{marker}", str(marker)) for h in HOSTILE]
    reward = reward_cls(num_workers=1) if reward_cls is MathVerifyReward else reward_cls()
    try:
        scores = reward(texts, ["2"] * len(texts))
    finally:
        getattr(reward, "close", lambda: None)()
    assert scores[:-1] == [0.0] * (len(texts) - 1)
    assert not marker.exists()


class Payload:
    """A pickle that would create a file when unpickled without weights-only loading."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code from a checkpoint ran"))


def test_a_checkpoint_with_code_is_refused_by_default(tmp_path, capsys):
    """A checkpoint that holds a pickled callable: resuming refuses it with one message naming
    checkpoint.weights_only, and the callable never runs."""
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "epoch=0-step=1.ckpt"
    torch.save({"state_dict": {}, "global_step": 1, "surprise": Payload(marker)}, ckpt)
    args = ["fit", "trainer.max_steps=2", "data.batch_size=2", "rollout.n=2", "callbacks=none"]
    args += ["rollout.sampling.max_new_tokens=8", f"ckpt_path={ckpt}", f"run_dir={tmp_path / 'run'}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "weights-only loading refused it" in err and "checkpoint.weights_only=false" in err
    assert not marker.exists()


def test_no_secret_in_any_file_of_a_run(tmp_path):
    """W&B key and hub token set in the environment (fake values); a fit with CSV and offline
    W&B logs and a checkpoint; no file under run_dir holds either value."""
    secrets = {"WANDB_API_KEY": "wandb-fake-secret-0123456789abcdef0123", "HF_TOKEN": "hf_FakeSecretToken987"}
    run = tmp_path / "run"
    args = ["fit", "logger=wandb", "trainer.max_steps=1", "data.batch_size=2", "rollout.n=2"]
    args += ["rollout.sampling.max_new_tokens=8", "callbacks.pass_at_k.n=2", "data.num_heldout_problems=2"]
    proc = run_cli([*args, f"run_dir={run}"], env={**secrets, "WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.suffix == ".ckpt" for p in files) and any(p.suffix == ".wandb" for p in files)
    for path in files:
        data = path.read_bytes()
        for name, value in secrets.items():
            assert value.encode() not in data, f"{name} in {path}"
    for value in secrets.values():
        assert value not in proc.stdout + proc.stderr
    assert os.environ.get("WANDB_API_KEY") != secrets["WANDB_API_KEY"]
