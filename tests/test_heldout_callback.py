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


def test_history_is_in_checkpoints_and_a_resume_keeps_it(fast_overrides, tmp_path):
    """1 step with a checkpoint, then resumed to 2 (ckpt_path=last): heldout.json holds steps
    0, 1, 2, equal to an uninterrupted 2-step run's, and step 1 is not measured twice."""
    args = ["fit", *fast_overrides[:-1], "data.seed=0", "trainer.deterministic=true"]
    args += ["trainer.enable_checkpointing=true", "checkpoint.every_n_steps=1"]
    args += ["callbacks.heldout.every_n_steps=1", "callbacks.heldout.num_problems=2"]
    args += ["callbacks.heldout.entropy_samples=2", "callbacks.pass_at_k.before=false"]
    args += ["callbacks.pass_at_k.after=false"]
    assert main([*args, "trainer.max_steps=2", f"run_dir={tmp_path / 'whole'}"]) == 0
    run = tmp_path / "resumed"
    assert main([*args, "trainer.max_steps=1", f"run_dir={run}"]) == 0
    assert main([*args, "trainer.max_steps=2", "ckpt_path=last", f"run_dir={run}"]) == 0
    (want,) = (tmp_path / "whole").glob("csv/version_*/heldout.json")
    got = sorted(run.glob("csv/version_*/heldout.json"))[-1]  # the resumed run's log folder
    history = json.loads(got.read_text())
    assert [h["step"] for h in history] == [0, 1, 2]
    assert history == json.loads(want.read_text())


def test_entropy_runs_in_chunks_of_logprob_chunk_size_rows(monkeypatch):
    """Forwards of at most algo.logprob_chunk_size rows; the entropy sum equals one forward's."""
    from nsr_lightning.callbacks import HeldOutDynamicsCallback

    from nsr_lightning.logprobs import response_logprobs
    from nsr_lightning.rollout import HFEngine, SamplingConfig

    tok, model = load_tokenizer(str(TINY_MODEL)), load_policy(str(TINY_MODEL))
    prompts = [build_prompt(tok, SyntheticTask().train_problem(i).question) for i in range(3)]
    batch = HFEngine(tok).generate(model, prompts, n=2, sampling=SamplingConfig(max_new_tokens=12), seed=0)
    seen = []
    forward = model.forward
    monkeypatch.setattr(
        model, "forward", lambda *a, **k: seen.append(len(k["input_ids"])) or forward(*a, **k)
    )
    settings = SimpleNamespace(logprob_chunk_size=4)
    module = SimpleNamespace(
        model=model, device=torch.device("cpu"), update=SimpleNamespace(settings=settings)
    )
    trainer = SimpleNamespace(world_size=1)
    total, tokens = HeldOutDynamicsCallback(every_n_steps=1)._entropy(trainer, module, batch)
    assert seen == [4, 2] and model.training
    _, whole = response_logprobs(model.eval(), batch)
    assert total == pytest.approx(float(whole.sum()), rel=1e-5) and tokens == float(batch.response_mask.sum())
