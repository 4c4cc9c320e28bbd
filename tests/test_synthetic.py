"""The embedded world: the signed-sum task, its exact verifier, and the shipped tiny model."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

import pytest

from nsr_lightning.data.synthetic import Problem, SyntheticTask
from nsr_lightning.rewards.synthetic import SyntheticReward, extract_boxed

TINY = Path(__file__).resolve().parents[1] / "nsr_lightning" / "assets" / "tiny_model"
STEP_RE = re.compile(r"(-?\d+)([+-])(\d+)=(-?\d+)")


# ------------------------------------------------------------------------------------------- task
def test_problems_are_deterministic_and_well_formed():
    a, b = SyntheticTask(seed=3), SyntheticTask(seed=3)
    assert [a.train_problem(i) for i in range(200)] == [b.train_problem(i) for i in range(200)]
    assert a.heldout_problems(50) == b.heldout_problems(50)
    assert a.heldout_problems(80)[:50] == a.heldout_problems(50)  # prefix-stable
    assert [a.train_problem(i) for i in range(50)] != [
        SyntheticTask(seed=4).train_problem(i) for i in range(50)
    ]
    for i in range(500):
        p = a.train_problem(i)
        assert isinstance(p, Problem) and p.id == f"train-{i}"
        terms = SyntheticTask.terms_of(p.question)
        assert 3 <= len(terms) <= 5 and all(1 <= abs(t) <= 20 for t in terms)
        assert int(p.answer) == sum(terms) == SyntheticTask.answer_of(p.question)


def test_answer_of():
    assert SyntheticTask.answer_of("17-5+8-12") == 8
    assert SyntheticTask.answer_of("3-10") == -7
    for bad in ("", "17", "1+", "1++2", "a+b", "1 + 2", "1*2"):
        with pytest.raises(ValueError):
            SyntheticTask.answer_of(bad)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"min_terms": 1}, "min_terms"),
        ({"min_terms": 4, "max_terms": 3}, "max_terms"),
        ({"max_value": 0}, "max_value"),
        ({"seed": 1.5}, "seed"),
        ({"max_terms": "5"}, "max_terms"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SyntheticTask(**kwargs)


def test_heldout_is_distinct_and_disjoint_from_train():
    task = SyntheticTask()
    heldout = task.heldout_problems(1000)
    questions = {p.question for p in heldout}
    assert len(questions) == 1000
    assert all(task.is_heldout(q) for q in questions)
    train = {task.train_problem(i).question for i in range(20_000)}
    assert not train & questions


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_every_solution_is_correct_and_accumulates(seed):
    task = SyntheticTask(seed=seed, min_terms=2, max_terms=6, max_value=30)
    reward = SyntheticReward()
    rng = random.Random(seed)
    problems = [task.train_problem(i) for i in range(300)] + task.heldout_problems(50)
    solutions = [task.solution(p, rng) for p in problems]
    assert reward(solutions, [p.answer for p in problems]) == [1.0] * len(problems)
    for p, sol in zip(problems, solutions, strict=True):
        *steps, boxed = sol.split(" ")
        assert boxed == f"\\boxed{{{p.answer}}}" and len(steps) == len(task.terms_of(p.question)) - 1
        used, acc = [], None
        for step in steps:
            m = STEP_RE.fullmatch(step)
            assert m, step
            left, sign, right, result = int(m[1]), m[2], int(m[3]), int(m[4])
            term = right if sign == "+" else -right
            if acc is None:
                used.append(left)
            else:
                assert left == acc
            assert result == left + term
            used.append(term)
            acc = result
        assert sorted(used) == sorted(task.terms_of(p.question)) and acc == int(p.answer)


def test_several_solution_paths_exist():
    task = SyntheticTask()
    problem = Problem(id="x", question="17-5+8-12", answer="8")
    rng = random.Random(0)
    paths = {task.solution(problem, rng) for _ in range(200)}
    assert len(paths) >= 12
    assert "17+8=25 25-5=20 20-12=8 \\boxed{8}" in paths
    assert any(p.startswith("-5+17=12") for p in paths)


# --------------------------------------------------------------------------------------- verifier
@pytest.mark.parametrize(
    "text, expected",
    [
        ("\\boxed{8}", "8"),
        ("a \\boxed{1} b \\boxed{ 2 } c", " 2 "),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{{a}{b{c}}}tail}", "{a}{b{c}}"),
        ("\\boxed{8", None),
        ("\\boxed{1} then \\boxed{2", None),
        ("no box here {}", None),
        ("\\boxed{}", ""),
        ("", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "x" * 1_000_000 + "\\boxed{1}",
        "\\boxed{" * 200_000,
        "\\boxed{" + "{" * 500_000 + "}" * 499_999,
        "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_001,
        "}" * 1_000_000 + "\\boxed{" + "{}" * 300_000,
        "\\boxed{\ud800}",
        "\ud800\\boxed{1}\udfff",
    ],
)
def test_extract_boxed_hostile_inputs_are_fast(text):
    reward = SyntheticReward()
    start = time.perf_counter()
    extract_boxed(text)
    scores = reward([text], ["1"])
    assert scores[0] in (0.0, 1.0)
    assert time.perf_counter() - start < 1.0


def test_nested_and_surrogate_results():
    assert extract_boxed("\\boxed{" + "{" * 10_000 + "1" + "}" * 10_001) == "{" * 10_000 + "1" + "}" * 10_000
    assert extract_boxed("\\boxed{\ud800}") == "\ud800"
    assert SyntheticReward()(["\ud800\\boxed{1}\udfff"], ["1"]) == [1.0]


@pytest.mark.parametrize(
    "response, reward",
    [
        ("17+8=25 25-5=20 20-12=8 \\boxed{8}", 1.0),
        ("\\boxed{ 8 }", 1.0),
        ("\\boxed{+8}", 1.0),
        ("\\boxed{08}", 1.0),
        ("\\boxed{7} \\boxed{8}", 1.0),
        ("\\boxed{8} \\boxed{7}", 0.0),
        ("\\boxed{8.0}", 0.0),
        ("\\boxed{}", 0.0),
        ("\\boxed{1e3}", 0.0),
        ("\\boxed{8}}", 1.0),
        ("\\boxed{{8}}", 0.0),
        ("\\boxed{-8}", 0.0),
        ("\\boxed{8", 0.0),
        ("\\boxed{8_0}", 0.0),
        ("\\boxed{٨}", 0.0),  # Arabic-Indic digit eight: int() would accept it
        ("\\boxed{--8}", 0.0),
        ("8", 0.0),
        ("\\boxed{" + "8" * 40 + "}", 0.0),
    ],
)
def test_reward_values(response, reward):
    assert SyntheticReward()([response], ["8"]) == [reward]


def test_reward_negative_gold_and_length_mismatch():
    reward = SyntheticReward()
    assert reward(["\\boxed{-3}", "\\boxed{3}"], ["-3", "-3"]) == [1.0, 0.0]
    assert reward(["\\boxed{" + "9" * 30 + "}"], ["9" * 30]) == [1.0]
    assert reward([], []) == []
    with pytest.raises(ValueError, match="golds"):
        reward(["\\boxed{1}"], ["1", "2"])


# ------------------------------------------------------------------------------------ tiny model
@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY, local_files_only=True)


def test_tokenizer_round_trip_and_template(tokenizer):
    task = SyntheticTask()
    vocab = tokenizer.get_vocab()
    rng = random.Random(0)
    msgs = [{"role": "user", "content": "17-5+8-12"}]
    prompt = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert prompt == "Q:17-5+8-12\nA:"
    with_system = [{"role": "system", "content": "You are a helpful assistant."}, *msgs]
    assert tokenizer.apply_chat_template(with_system, add_generation_prompt=True, tokenize=False) == prompt
    full = tokenizer.apply_chat_template([*msgs, {"role": "assistant", "content": "1"}], tokenize=False)
    assert full == "Q:17-5+8-12\nA:1<eos>"
    ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert list(ids) == tokenizer(prompt)["input_ids"]
    for i in range(100):
        p = task.train_problem(i)
        for text in (p.question, task.solution(p, rng), prompt):
            ids = tokenizer(text)["input_ids"]
            assert ids == [vocab[c] for c in text]  # one id per character, nothing added
            assert tokenizer.decode(ids) == text
    assert tokenizer.decode(
        tokenizer("1+2=3")["input_ids"] + [tokenizer.eos_token_id], skip_special_tokens=True
    ) == ("1+2=3")
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_shipped_model_loads_offline_and_is_small(tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    files = [f for f in TINY.iterdir() if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 5 * 1024 * 1024
    config = json.loads((TINY / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert (
        json.loads((TINY / "tokenizer_config.json").read_text())["tokenizer_class"]
        == "PreTrainedTokenizerFast"
    )
    model = AutoModelForCausalLM.from_pretrained(TINY, local_files_only=True)
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    assert head_dim >= 32
    assert cfg.eos_token_id == tokenizer.eos_token_id and cfg.pad_token_id == tokenizer.pad_token_id
    gen = model.generation_config
    assert gen.do_sample and gen.temperature == 1.0 and gen.eos_token_id == tokenizer.eos_token_id
    assert cfg.vocab_size == len(tokenizer)
    enc = tokenizer(["Q:17-5+8-12\nA:"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (1, enc["input_ids"].shape[1], len(tokenizer))
    prior = json.loads((TINY / "prior_eval.json").read_text())
    assert prior["heldout_problems"] >= 100 and prior["n"] == 64
    assert 0.2 <= prior["pass_at_k"]["1"] <= 0.6 and prior["pass_at_k"]["64"] >= 0.9


def test_greedy_answer_of_shipped_model_is_well_formed(tokenizer):
    """A smoke test of the prior: greedy decoding produces a chain that ends in a boxed integer."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(TINY, local_files_only=True).eval()
    task = SyntheticTask()
    problems = task.heldout_problems(8)
    tokenizer.padding_side = "left"
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p.question}], add_generation_prompt=True, tokenize=False
        )
        for p in problems
    ]
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=80, pad_token_id=tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    boxed = [extract_boxed(t) for t in texts]
    assert sum(b is not None and re.fullmatch(r"-?\d+", b) is not None for b in boxed) >= 6, texts
