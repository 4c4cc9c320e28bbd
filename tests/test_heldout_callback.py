"""HeldOutDynamicsCallback (Figure 4 a, b): held-out greedy accuracy and entropy during `fit`."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from nsr_lightning.callbacks.common import rollout_callback, write_json

from nsr_lightning.cli import main
from nsr_lightning.data import build_prompt
from nsr_lightning.data.synthetic import SyntheticTask
from nsr_lightning.models import TINY_MODEL, load_policy, load_tokenizer
from nsr_lightning.rewards.synthetic import SyntheticReward


def greedy_accuracy_by_hand(problems) -> float:
    """Each prompt alone (no padding), plain HF greedy decoding, the task's verifier."""
    tokenizer, model = load_tokenizer(str(TINY_MODEL)), load_policy(str(TINY_MODEL)).eval()
    texts = []
    for p in problems:
        ids = torch.tensor([build_prompt(tokenizer, p.question, "chat")])
        out = model.generate(
            input_ids=ids, do_sample=False, max_new_tokens=80, pad_token_id=tokenizer.pad_token_id
        )
        texts.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    scores = SyntheticReward()(texts, [p.answer for p in problems])
    return sum(s > 0 for s in scores) / len(problems)


def test_off_by_default_and_on_every_n_steps(fast_overrides, tmp_path):
    run = tmp_path / "run"
    assert main(["fit", *fast_overrides, "data.seed=0"]) == 0
    assert not list(run.glob("csv/version_*/heldout.json"))  # off by default
    run = tmp_path / "on"  # a new run_dir: a finished one is not started over
    fast = [o for o in fast_overrides if not o.startswith("run_dir=")] + [f"run_dir={run}"]
    args = ["fit", *fast, "data.seed=0", "trainer.max_steps=2", "callbacks.heldout.every_n_steps=1"]
    args += [
        "callbacks.heldout.num_problems=3",
        "callbacks.heldout.entropy_samples=2",
        "callbacks.pass_at_k.before=false",
    ]
    assert main(args) == 0
    (path,) = run.glob("csv/version_0/heldout.json")
    history = json.loads(path.read_text())
    assert [h["step"] for h in history] == [0, 1, 2]  # before training, then every step
    by_hand = greedy_accuracy_by_hand(SyntheticTask(seed=0).heldout_problems(3))
    assert history[0]["greedy_accuracy"] == pytest.approx(by_hand)  # the untrained model, step 0
    vocab = load_tokenizer(str(TINY_MODEL)).vocab_size
    for h in history:
        assert h["greedy_accuracy"] * 3 == pytest.approx(round(h["greedy_accuracy"] * 3))  # k of 3 problems
        assert 0 < h["entropy"] < math.log(vocab)
    header = next(run.glob("csv/version_0/metrics.csv")).read_text().splitlines()[0]
    assert "heldout/greedy_accuracy" in header and "heldout/entropy" in header


def test_bad_value_is_one_clear_error(fast_overrides, capsys):
    assert main(["fit", *fast_overrides, "callbacks.heldout.every_n_steps=-1"]) == 2
    assert "callbacks.heldout.every_n_steps must be >= 0" in capsys.readouterr().err


def test_json_writes_are_whole_or_absent(tmp_path):
    """The evaluation callbacks' JSON writer: a failed write leaves the previous file as it was."""
    path = tmp_path / "logs" / "heldout.json"
    write_json(path, [{"step": 0, "entropy": 0.5}])
    assert json.loads(path.read_text()) == [{"step": 0, "entropy": 0.5}]
    with pytest.raises(TypeError):
        write_json(path, [{"step": 1, "entropy": object()}])  # fails mid-way: not JSON
    assert json.loads(path.read_text()) == [{"step": 0, "entropy": 0.5}]
    assert [p.name for p in path.parent.iterdir()] == ["heldout.json"]  # no temporary file left


def test_evaluation_callbacks_need_the_rollout_callback():
    trainer = SimpleNamespace(callbacks=[])
    with pytest.raises(RuntimeError, match="PassAtKCallback needs the RolloutCallback"):
        rollout_callback(trainer, "PassAtKCallback")
