"""Math data sets: schema, field mapping, file formats, clear errors; templates; the DataModule."""

import json
import sys
import types

import pytest

from nsr_lightning.data import MathDataModule, build_prompt, load_problems, render_prompt
from nsr_lightning.data.math_datasets import DATASETS
from nsr_lightning.errors import UserError
from nsr_lightning.models import TINY_MODEL, load_tokenizer

ROWS = [
    {"problem": "What is $1+1$?", "answer": "2", "id": "p0"},
    {"problem": "Simplify $\\frac{2}{4}$.", "answer": "\\frac{1}{2}", "id": "p1"},
    {"problem": "Solve $x+1=6$.", "answer": 5, "id": 7},
]


def write_jsonl(path, rows, extra: bytes = b""):
    path.write_bytes(b"\n".join(json.dumps(r).encode() for r in rows) + b"\n" + extra)
    return path


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(str(TINY_MODEL))


def test_jsonl_schema(tmp_path):
    problems = load_problems("mine", path=write_jsonl(tmp_path / "a.jsonl", ROWS))
    assert [(p.id, p.answer) for p in problems] == [("p0", "2"), ("p1", "\\frac{1}{2}"), ("7", "5")]
    assert problems[0].question == "What is $1+1$?"
    assert len(load_problems("mine", path=tmp_path / "a.jsonl", limit=2)) == 2


def test_field_mapping_and_boxed_solutions(tmp_path):
    rows = [
        {"question": "Q1", "solution": "so \\boxed{\\frac{1}{2}}."},
        {"question": "Q2", "solution": "\\boxed{3}"},
    ]
    path = write_jsonl(tmp_path / "b.jsonl", rows)
    problems = load_problems("x", path=path, fields={"problem": "question", "answer": "solution"})
    assert [(p.id, p.question, p.answer) for p in problems] == [
        ("x-0", "Q1", "\\frac{1}{2}"),
        ("x-1", "Q2", "3"),
    ]


def test_registry_defaults_map_hub_columns(tmp_path):
    """A local copy of a hub set keeps that set's column names (amc23: `question`)."""
    path = write_jsonl(tmp_path / "amc.jsonl", [{"question": "Q", "answer": 12.0, "id": 1}])
    assert load_problems("amc23", path=path)[0].answer == "12.0"
    assert {"math_train", "math_test", "math500", "aime25", "amc23"} <= set(DATASETS)
    assert DATASETS["math_train"].size == 7500 and DATASETS["math_test"].size == 5000


def test_json_and_parquet(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps(ROWS))
    assert len(load_problems("c", path=tmp_path / "c.json")) == 3
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"problem": "Q", "answer": "1"}]), tmp_path / "d.parquet")
    assert load_problems("d", path=tmp_path / "d.parquet")[0].answer == "1"
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match="bad.parquet: not a readable Parquet"):
        load_problems("d", path=tmp_path / "bad.parquet")


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b'{"problem": "Q", "answer": "1"}\n{"answer": "2"}\n',
            "line 2: no 'problem' field.*data.fields.bad.problem",
        ),
        (b'{"problem": "Q"}\n', "line 1: no 'answer' field"),
        (b'{"problem": 3, "answer": "1"}\n', "line 1: 'problem' must be a non-empty string"),
        (b'{"problem": "Q", "answer": true}\n', "line 1: 'answer' must be a non-empty string or number"),
        (b'{"problem": "Q", "answer": ""}\n', "'answer' must be a non-empty"),
        (b'{"problem": "Q", "answer": "\\\\boxed{"}\n', "without a closed"),
        (b'{"problem": "Q", "answer": "1", "id": [1]}\n', "'id' must be a string or an integer"),
        (
            b'{"problem": "Q", "answer": "1", "id": 1}\n{"problem": "R", "answer": "2", "id": "1"}\n',
            "line 2: duplicate",
        ),
        (b"", "has no rows"),
        (b"\n\n", "has no rows"),
        (b'{"problem": "Q", "answer": "1"}\n{"problem": "\xff"}\n', "line 2: not valid UTF-8"),
        (b'{"problem": "Q", "answer": "1"}\n{oops\n', "line 2: not valid JSON"),
        (b"[1, 2]\n", "line 1: expected a JSON object"),
    ],
)
def test_bad_rows_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as info:
        load_problems("bad", path=path)
    assert str(path) in str(info.value)


def test_unreadable_and_unknown(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_problems("math500", path=tmp_path / "missing.jsonl")
    with pytest.raises(UserError, match="no such file"):
        load_problems("math500", path=tmp_path)  # a directory
    with pytest.raises(UserError, match="unknown data set 'gsm9k'.*math500.*aime25.*amc23"):
        load_problems("gsm9k")
    with pytest.raises(UserError, match="fields may only map"):
        load_problems("x", path=write_jsonl(tmp_path / "a.jsonl", ROWS), fields={"question": "q"})


def test_hub_needs_online_and_datasets(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE.*set its path"):
        load_problems("aime25")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls = []
    fake = types.SimpleNamespace(
        load_dataset=lambda hub_id, config, split: (
            calls.append((hub_id, split)) or [{"question": "Q", "answer": "4"}]
        )
    )
    monkeypatch.setitem(sys.modules, "datasets", fake)  # no network in tests: the hub is faked
    (problem,) = load_problems("amc23")
    assert calls == [("math-ai/amc23", "test")] and problem.question == "Q" and problem.id == "amc23-0"


def test_templates(tokenizer):
    text = render_prompt("What is 2+2?", "qwen25_math")
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?\n"
        "Please reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render_prompt("What is 2+2?", "qwen3_nonthinking") == text + "<think>\n\n</think>\n\n"
    assert render_prompt("1+2", "Q:{problem}\nA:") == "Q:1+2\nA:"
    # the tiny model's chat template is Q:...\nA: - a custom template can reproduce it exactly
    assert build_prompt(tokenizer, "1+2", "Q:{problem}\nA:") == build_prompt(tokenizer, "1+2", "chat")
    with pytest.raises(UserError, match="chat, qwen25_math, qwen3_nonthinking"):
        build_prompt(tokenizer, "1+2", "llama")


def test_math_datamodule(tokenizer, tmp_path):
    train = write_jsonl(
        tmp_path / "train.jsonl", [{"problem": f"{i}+1", "answer": str(i + 1)} for i in range(6)]
    )
    test = write_jsonl(tmp_path / "test.jsonl", ROWS)
    dm = MathDataModule(
        tokenizer,
        train="math_train",
        heldout=["math500", "synthetic"],
        paths={"math_train": str(train), "math500": str(test)},
        fields={"math_train": {"answer": "answer"}, "math500": {"id": "id"}},  # over the hub defaults
        batch_size=4,
        max_heldout_problems=2,
        template="chat",
    )
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"id", "problem", "answer", "prompt_ids"} and len(batch["prompt_ids"]) == 4
    heldout = dm.heldout()
    assert [r["id"] for r in heldout["math500"]] == ["p0", "p1"] and len(heldout["synthetic"]) == 2
    with pytest.raises(ValueError, match="batch_size"):
        fields = {"math_train": {"answer": "answer"}}
        MathDataModule(tokenizer, paths={"math_train": str(train)}, fields=fields, heldout=[], batch_size=10)


def test_fit_on_a_local_math_set_with_the_math_reward(tmp_path):
    """`fit data=math reward=math` on local files; the reward's timeout counter is logged."""
    import csv

    from conftest import FAST

    from nsr_lightning.cli import main

    train = write_jsonl(
        tmp_path / "train.jsonl", [{"problem": f"{i}+{i}", "answer": str(2 * i)} for i in range(8)]
    )
    args = ["fit", "data=math", "reward=math", "reward.num_workers=1", f"data.paths.math_train={train}"]
    args += ["data.fields.math_train.answer=answer", "data.heldout=[synthetic]", "data.template=chat"]
    fast = [o for o in FAST if not o.startswith("data.num_heldout")]
    args += [*fast, "data.max_heldout_problems=2", f"run_dir={tmp_path / 'run'}"]
    assert main(args) == 0
    (metrics,) = (tmp_path / "run").glob("csv/version_*/metrics.csv")
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("rollout/reward_timeouts")]
    assert len(rows) == 1 and float(rows[0]["rollout/reward_timeouts"]) == 0
