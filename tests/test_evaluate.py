"""`python -m nsr_lightning evaluate`: outputs, pass@k against hand computation, resume, errors."""

import json
from itertools import combinations
from pathlib import Path

import pytest
import torch

from nsr_lightning.cli import main
from nsr_lightning.models import TINY_MODEL, load_any_policy, load_policy
from nsr_lightning.rollout.hf import HFEngine

FAST = [
    "n=4",
    "sampling.max_new_tokens=40",
    "data.synthetic_problems=4",
    "chunk_size=1",
    "logger=none",
    "reward.num_workers=1",
    "reward.timeout_s=2",
]


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of k-subsets of n samples (c correct) that hold a correct one, by enumeration."""
    subsets = list(combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def records(run: Path, name: str = "synthetic") -> list[dict]:
    return [json.loads(line) for line in (run / name / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("eval") / "full"
    assert main(["evaluate", *FAST, f"run_dir={run}"]) == 0
    return run


def test_outputs_and_pass_at_k_by_hand(full_run):
    rows = records(full_run)
    assert [r["id"] for r in rows] == [f"heldout-{i}" for i in range(4)]
    for r in rows:
        assert r["n"] == 4 and 0 <= r["c"] <= 4 and len(r["answers"]) == 4
        assert r["c"] == sum(a is not None and a.strip() == r["gold"] for a in r["answers"])  # integer golds
    summary = json.loads((full_run / "summary.json").read_text())
    table = summary["datasets"]["synthetic"]["pass@k"]
    assert set(table) == {"1", "2", "4"}
    for k in (1, 2, 4):
        expected = sum(brute_pass_at_k(4, r["c"], k) for r in rows) / 4
        assert table[str(k)] == pytest.approx(expected, abs=1e-12)
    csv_lines = (full_run / "synthetic" / "pass_at_k.csv").read_text().splitlines()
    assert csv_lines[0] == "k,pass@k" and len(csv_lines) == 4
    assert (full_run / "pass_at_k.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["settings"]["n"] == 4 and summary["datasets"]["synthetic"]["problems"] == 4


def test_interrupted_run_resumes_to_the_same_result(full_run, tmp_path, monkeypatch):
    run = tmp_path / "resumed"
    calls = []
    real_generate = HFEngine.generate

    def generate(self, *args, **kwargs):
        if len(calls) == 2 and not getattr(generate, "resuming", False):
            raise KeyboardInterrupt  # Ctrl-C during the third chunk
        calls.append(1)
        return real_generate(self, *args, **kwargs)

    monkeypatch.setattr(HFEngine, "generate", generate)
    assert main(["evaluate", *FAST, f"run_dir={run}"]) == 130  # the resume command, no traceback
    assert len(records(run)) == 2 and not (run / "summary.json").exists()
    with (run / "synthetic" / "results.jsonl").open("a") as f:
        f.write('{"id": "heldout-2", "n": 4, "c"')  # a write cut short by the interruption
    generate.resuming, calls[:] = True, []
    assert main(["evaluate", *FAST, f"run_dir={run}"]) == 0
    assert len(calls) == 2  # only the two unfinished chunks were sampled
    assert records(run) == records(full_run)
    summary = json.loads((run / "summary.json").read_text())
    full = json.loads((full_run / "summary.json").read_text())
    assert summary["datasets"] == full["datasets"]


def test_resume_with_other_settings_is_refused(full_run, capsys):
    assert main(["evaluate", *FAST, "n=8", f"run_dir={full_run}"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "n: 4 before, 8 now" in err


def test_checkpoint_and_local_math_set(tmp_path):
    """A Lightning checkpoint (weights only) on a local math file with the chat template (the Qwen
    template's 184 tokens do not fit the tiny model's 128 positions: refused, test_user_mistakes)."""
    model = load_policy(str(TINY_MODEL))
    with torch.no_grad():
        model.lm_head.weight.mul_(0.5)  # a visibly different policy
    ckpt = tmp_path / "run.ckpt"
    state = {"model." + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"model_path": str(TINY_MODEL)}}, ckpt)
    loaded, base = load_any_policy(str(ckpt))
    assert base == str(TINY_MODEL) and torch.equal(loaded.lm_head.weight, model.lm_head.weight)

    data = tmp_path / "mini.jsonl"
    data.write_text(
        '{"question": "1+2", "solution": "\\\\boxed{3}"}\n{"question": "4-1", "solution": "\\\\boxed{3}"}\n'
    )
    run = tmp_path / "ck"
    args = [*FAST, f"model.path={ckpt}", "data.datasets=[mini]", f"data.paths.mini={data}"]
    args += [
        "data.fields.mini.problem=question",
        "data.fields.mini.answer=solution",
        "data.template=chat",
    ]
    assert main(["evaluate", *args, f"run_dir={run}"]) == 0
    assert [(r["id"], r["gold"]) for r in records(run, "mini")] == [("mini-0", "3"), ("mini-1", "3")]


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.datasets=[gsm9k]", "unknown data set 'gsm9k'; choose one of: math_train, math_test, math500"),
        ("data.template=llama", "chat, qwen25_math, qwen3_nonthinking"),
        ("data.datasets=[math500]", "HF_HUB_OFFLINE"),
        ("preset=nope", "preset"),
        ("model.path=/no/such.ckpt", "no checkpoint file"),
    ],
)
def test_bad_input_is_one_clear_error(override, message, tmp_path, capsys):
    assert main(["evaluate", *FAST, override, f"run_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_values_with_equals_signs_are_quoted_for_hydra():
    from nsr_lightning.cli import _quote_path

    assert _quote_path("model.path=runs/x/epoch=0-step=9.ckpt") == "model.path='runs/x/epoch=0-step=9.ckpt'"
    assert _quote_path("n=4") == "n=4"
    assert _quote_path("data.fields.x={a: b}") == "data.fields.x={a: b}"


def test_distinct_counts_different_correct_responses(tmp_path, monkeypatch):
    """`distinct` = distinct correct texts (whitespace-stripped) per problem; incorrect ones do not count."""
    import nsr_lightning.evaluation as ev

    texts = ["1+2=3 \\boxed{3}", " 1+2=3 \\boxed{3}\n", "2+1=3 \\boxed{3}", "\\boxed{4}"]  # problem 0
    texts += ["\\boxed{5}", "\\boxed{6}", "\\boxed{6}", "no"]  # problem 1: nothing correct
    scores = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    monkeypatch.setattr(ev, "sample_and_score", lambda *a, **k: (texts, scores))
    rows = [{"id": "a", "answer": "3"}, {"id": "b", "answer": "7"}]
    recs = ev.evaluate_dataset(
        "toy", rows, engine=None, model=None, reward=None, n=4, sampling=None, seed=0, chunk_size=2,
        out_dir=str(tmp_path),
    )  # fmt: skip
    assert [(r["c"], r["distinct"]) for r in recs] == [(3, 2), (0, 0)]
