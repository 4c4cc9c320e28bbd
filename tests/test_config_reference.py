"""docs/config.md is generated (scripts/config_reference.py) from the shipped configs and the rule
table: it must equal what the script writes now, and give every key a meaning."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "config.md"


def _script():
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "scripts" / "config_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = _script()


@pytest.fixture(scope="module")
def rendered() -> str:
    return reference.render()


def test_config_reference_is_up_to_date(rendered):
    assert PAGE.read_text(encoding="utf-8") == rendered, (
        f"docs/config.md is out of date: run `{reference.COMMAND}` and commit docs/config.md"
    )


def _rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in text.splitlines()
            if line.startswith("| `")]  # fmt: skip


def test_every_key_of_the_commands_and_groups_has_a_meaning(rendered):
    """Rows of the commands' and groups' tables (the presets' and experiments' list only what they set)."""
    body = rendered.split("### `preset`")[0]
    rows = _rows(body)
    keys = {row[0].strip("`") for row in rows}
    for key in ("seed", "algo.lr", "n", "sampling.max_new_tokens", "objective.lambda_pos",
                "model.evaluation.n", "rollout.engine.gpu_memory_utilization", "trainer.max_steps"):  # fmt: skip
        assert key in keys, key
    assert [row[0] for row in rows if not row[3]] == []  # a key without a meaning: comment it in its YAML


def test_the_yaml_parser_reads_block_inline_and_continued_comments(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(
        "# the file\n_target_: a.B\n\n# above\nalpha: 1   # inline\n           # continued\n"
        "beta:\n  gamma: [1, 2]  # nested\n  delta: 3\n"
    )
    assert reference.yaml_comments(path, "grp") == {
        "grp._target_": "",
        "grp.alpha": "above inline continued",
        "grp.beta": "",
        "grp.beta.gamma": "nested",
        "grp.beta.delta": "",
    }
    assert reference.file_description(path) == "the file"


def test_a_changed_comment_makes_the_page_stale(monkeypatch, rendered):
    before = rendered
    original = reference.yaml_comments

    def changed(path, prefix):
        out = original(path, prefix)
        return {k: (v + " (changed)" if k == "seed" else v) for k, v in out.items()}

    monkeypatch.setattr(reference, "yaml_comments", changed)
    assert reference.render() != before
