"""Bad input is refused before any expensive work with one clear error (UserError), never
another exception: property-based (hypothesis) over config values and data file rows."""

import json
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from nsr_lightning.cli import compose, load_config, main
from nsr_lightning.config_rules import RULES
from nsr_lightning.data import load_problems
from nsr_lightning.errors import UserError

DEFAULT_FIT = compose("fit", ["run_dir=/tmp/unused"])
KEYS = [key for key, _, _ in RULES if OmegaConf.select(DEFAULT_FIT, key, default=KeyError) is not KeyError]
VALUES = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(string.printable, max_size=6),
    st.lists(st.floats(-2, 2), max_size=3),
)


def render(value) -> str:
    """A value as a Hydra command-line override value (text is passed raw: parser errors too)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    return str(value)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=3))
@example({"algo.mini_batch_size": 129})  # one more than 16 prompts x 8 samples
@example({"rollout.n": 0, "algo.lr": -1.0})
@example({"algo.betas": [0.9]})
def test_any_config_value_is_accepted_or_one_clear_error(overrides):
    args = [f"{key}={render(value)}" for key, value in overrides.items()]
    try:
        cfg = load_config("fit", args)
    except UserError as e:
        assert str(e).strip()
        return
    for key, _, ok in RULES:  # accepted: every rule holds
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            assert ok(list(value) if key == "algo.betas" else value), (key, value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("algo.mini_batch_size=129", "algo.mini_batch_size (129) is larger than the batch"),
        ("algo.lr=abc", "algo.lr must be a number > 0; got 'abc'"),
        ("rollout.sampling.top_p=2", "rollout.sampling.top_p must be a number in (0, 1]"),
        ("checkpoint.keep=0", "checkpoint.keep must be an integer >= 1"),
        ("data.max_terms=2", "data.max_terms must be an integer >= data.min_terms (3)"),
        ("objective.kl_estimator=k9", "kl_estimator"),
    ],
)
def test_bad_values_name_the_key_before_loading_anything(override, message, tmp_path, capsys, monkeypatch):
    import nsr_lightning.cli as cli

    monkeypatch.setattr(cli, "build_fit", lambda cfg: pytest.fail("went on to load models and data"))
    assert main(["fit", override, f"run_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
ROWS = st.dictionaries(st.sampled_from(["problem", "answer", "id", "x"]), JSON_VALUES, max_size=4)
LINES = st.one_of(ROWS.map(lambda r: json.dumps(r).encode()), st.binary(max_size=40))


@settings(max_examples=100, deadline=None)
@given(st.lists(LINES, max_size=5))
@example([b'{"problem": "1+1", "answer": ' + b"9" * 5000 + b"}"])  # beyond Python's int digits
@example([b"[" * 100_000 + b"]" * 100_000])  # nesting deeper than the recursion limit
@example([json.dumps({"problem": "x" * 200_000, "answer": "1"}).encode()])  # a huge line
@example([b'{"problem": "1+1", "answer": "\xff\xfe"}'])  # invalid UTF-8
@example([b'{"problem": "1+1", "answer": 2}', b'{"problem": "1+2", "answer": 3}'])  # good rows
def test_any_data_file_is_loaded_or_one_clear_error(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("data") / "rows.jsonl"
    path.write_bytes(b"\n".join(lines))
    try:
        problems = load_problems("mine", path=str(path))
    except UserError as e:
        assert str(path) in str(e)  # names the file (and the line, for a row)
        return
    assert problems and all(p.question.strip() and p.answer for p in problems)
