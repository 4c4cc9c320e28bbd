"""docs/extending.md runs as written: its files are written to a fresh folder and each of its
commands runs there (`python -m nsr_lightning ...`, one short step added), so the page cannot rot.
And the trap it warns about: an objective that overrides `advantages` is refused."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nsr_lightning.objectives import PPO, Objective, Reinforce

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "extending.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)
# a short run: one step of 4 prompts x 2 responses, nothing else (the page's commands add the rest)
SHORT = ["trainer.max_steps=1", "trainer.enable_checkpointing=false", "callbacks=none", "logger=none"]
SHORT += ["rollout.n=2", "rollout.sampling.max_new_tokens=32"]


def blocks() -> tuple[dict[str, str], list[str]]:
    """(file name -> text, commands) of the page's fenced blocks, in order."""
    files, commands = {}, []
    for language, info, body in BLOCK.findall(PAGE.read_text(encoding="utf-8")):
        name = re.search(r"file=(\S+)", info)
        if name:
            files[name.group(1)] = body
        elif language == "bash":
            commands.append(body.replace("\\\n", " ").strip())
    return files, commands


def test_the_page_has_the_three_examples():
    files, commands = blocks()
    assert set(files) == {
        "myrewards.py",
        "myobjectives.py",
        "myconfigs/objective/baseline.yaml",
        "mine.jsonl",
    }
    assert len(commands) == 4 and all(c.startswith("python -m nsr_lightning fit ") for c in commands)
    assert "reward > 0" in PAGE.read_text(encoding="utf-8")


def _run(command: str, folder: Path, run_dir: Path) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    argv[0] = sys.executable
    if "data.batch_size=" not in command:
        argv.append("data.batch_size=4")
    return subprocess.run(  # in the folder, as a user runs it: `python -m` puts it first on sys.path
        [*argv, *SHORT, f"run_dir={run_dir}"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("index", range(4), ids=["reward", "objective", "objective-yaml", "data"])
def test_every_command_of_the_page_runs_as_written(index, tmp_path):
    files, commands = blocks()
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    out = _run(commands[index], tmp_path, tmp_path / "run")
    assert out.returncode == 0, out.stderr[-3000:]
    printed = re.search(r"^objective: (\S+) ", out.stdout, re.M)
    assert printed, out.stdout[-2000:]
    if "objective" in commands[index]:  # the own objective was built, with the knob given
        assert printed.group(1) == "baseline" and "'baseline': 0.3" in out.stdout
    assert (tmp_path / "run" / "final_model").is_dir()


def test_the_own_reward_and_objective_compute_what_the_page_says(tmp_path, monkeypatch):
    files, _ = blocks()
    for name in ("myrewards.py", "myobjectives.py"):
        (tmp_path / name).write_text(files[name], encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    from myobjectives import Baseline
    from myrewards import PartialCredit

    assert PartialCredit()(["so \\boxed{7}", "7, \\boxed{8}", "\\boxed{6}"], ["7", "7", "7"]) == [
        1.0,
        0.5,
        0.0,
    ]
    rewards, groups = torch.tensor([1.0, 0.5, 0.0]), torch.zeros(3, dtype=torch.long)
    assert Baseline(baseline=0.3).advantages(rewards, groups).tolist() == pytest.approx([0.7, 0.2, -0.3])
    # partial credit is correct: lambda_pos weighs it, and NSR (lambda_pos = 0) drops it
    assert Baseline(baseline=0.3, lambda_pos=0.5).advantages(rewards, groups).tolist() == pytest.approx(
        [0.35, 0.1, -0.3]
    )
    assert Reinforce(lambda_pos=0.0).keep(rewards, groups).tolist() == [False, False, True]


def test_an_objective_overriding_advantages_is_refused_in_one_line():
    with pytest.raises(TypeError) as info:

        class Mine(Objective):
            def advantages(self, rewards, group_ids):
                return rewards.float()

    message = str(info.value)
    assert "\n" not in message and "Mine overrides advantages; override raw_advantages" in message


def test_the_shipped_objectives_pass_the_guard_and_ppo_still_refuses_sequence_advantages():
    class Mine(Reinforce):  # overriding raw_advantages (or nothing) is the way
        def raw_advantages(self, rewards, group_ids):
            return rewards.float()

    assert Mine(lambda_pos=0.5).advantages(torch.tensor([1.0, 0.0]), torch.zeros(2)).tolist() == [0.5, 0.0]
    with pytest.raises(TypeError, match="per token, from its critic"):
        PPO().advantages(torch.tensor([1.0]), torch.zeros(1, dtype=torch.long))


def test_an_own_objective_overriding_advantages_is_one_line_from_the_command_line(tmp_path):
    (tmp_path / "badobjective.py").write_text(
        "from nsr_lightning.objectives import Objective\n\n\nclass Mine(Objective):\n"
        "    def advantages(self, rewards, group_ids):\n        return rewards.float()\n"
    )
    out = _run("python -m nsr_lightning fit objective._target_=badobjective.Mine", tmp_path, tmp_path / "r")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "error: badobjective.Mine overrides advantages; override raw_advantages instead "
        "(advantages multiplies it by the lambda_pos / lambda_neg weights)"
    )
