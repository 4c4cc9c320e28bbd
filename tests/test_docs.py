"""The README and docs/: short README, links that resolve, no references outside the repository;
CI's README table check on made-up logs; the output filters drop only their own messages."""

import importlib.util
import logging
import re
import shlex
import subprocess
import warnings
from pathlib import Path

import pytest

from nsr_lightning.quiet import silence_known_noise

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _load_check_script():
    spec = importlib.util.spec_from_file_location(
        "check_readme_table", ROOT / "scripts" / "check_readme_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _load_check_script()


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_readme_is_a_five_minute_read():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 300


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_resolves(page):
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.is_file(), f"{page.name}: link to {target!r}: no such file"
        assert ROOT in file.parents, f"{page.name}: link to {target!r} leaves the repository"
        if anchor and file.suffix == ".md":
            assert anchor in _anchors(file), f"{page.name}: link to {target!r}: no such heading"


def _tracked(*suffixes: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [ROOT / f for f in out.stdout.splitlines() if f.endswith(suffixes) and (ROOT / f).is_file()]


def test_no_reference_to_files_or_issues_outside_the_repository():
    missing_file = "REFERENCE" + ".md"  # a file this repository does not have
    own_issue = re.compile(
        r"(?<!'s )\bissue ?#?\d+|\bissue #", re.I
    )  # "the reference code's issue 6" may stay
    for f in _tracked(".py", ".yaml", ".md"):
        text = f.read_text(encoding="utf-8", errors="replace")
        assert missing_file not in text, f
        assert not own_issue.search(text), f"{f}: {own_issue.search(text).group(0)!r}"


def _cli_commands(page: Path) -> list[list[str]]:
    """The arguments of every `python -m nsr_lightning ...` line in the page's bash blocks
    (continuation lines joined, trailing comments dropped, `<placeholders>` made plain)."""
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", page.read_text(encoding="utf-8"), flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            m = re.search(r"python -m nsr_lightning (.*)$", line.split(" # ")[0])
            if m and "&&" not in m.group(1):
                out.append(shlex.split(re.sub(r"<(\w+)>", r"\1", m.group(1))))
    return out


@pytest.mark.parametrize("page", ["README.md", "docs/gpu.md"])
def test_every_command_in_the_page_composes_and_passes_the_config_checks(page, capsys):
    """Commands that cannot run here (GPUs, the hub) are at least composed and checked."""
    from nsr_lightning.cli import main

    commands = _cli_commands(ROOT / page)
    assert len(commands) >= 5, page
    for args in commands:
        flags = [] if "--cfg" in args else ["--cfg", "job"]
        assert main([*args, *flags]) == 0, f"{page}: python -m nsr_lightning {' '.join(args)}"
        capsys.readouterr()


ROWS = [
    "pass@k        dataset          k=1     k=2",
    "------------------------------------------",
    "before        synthetic      0.384   0.574",
    "after         synthetic      0.414   0.604",
]


def _readme_with(tmp_path, rows):
    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n\n```bash\npip install x\n```\n\n```\nobjective: nsr\n" + "\n".join(rows) + "\n```\n"
    )
    return readme


def test_readme_table_check_passes_on_the_same_rows(tmp_path, capsys):
    log = tmp_path / "fit.log"
    log.write_text(
        "GPU available: False\nEpoch 0:  50%|█    | 1/2\rEpoch 0: 100%|██| 2/2\r\n" + "\n".join(ROWS)
    )
    assert check.main([str(log), str(_readme_with(tmp_path, ROWS))]) == 0


def test_readme_table_check_shows_a_diff(tmp_path, capsys):
    log = tmp_path / "fit.log"
    log.write_text("\n".join([*ROWS[:3], "after         synthetic      0.420   0.604"]))  # 0.006 off
    assert check.main([str(log), str(_readme_with(tmp_path, ROWS))]) == 1
    err = capsys.readouterr().err
    assert "README: after synthetic 0.414 0.604" in err and "log: after synthetic 0.420 0.604" in err
    assert "before synthetic" not in err  # only the row that differs


README_TABLE = [
    "pass@k        dataset          k=1     k=2     k=4     k=8    k=16    k=32    k=64",
    "before        synthetic      0.384   0.575   0.752   0.877   0.948   0.984   1.000",
    "after         synthetic      0.422   0.616   0.787   0.900   0.959   0.985   1.000",
]
AMD_AFTER = "after         synthetic      0.422   0.619   0.789   0.900   0.959   0.984   1.000"


def test_readme_table_check_accepts_another_cpus_last_digit(tmp_path, capsys):
    """An AMD EPYC (AVX2, MKL) printed this after row for README's default run: each value is
    within check.TOLERANCE (0.005) of README's, so the check passes."""
    log = tmp_path / "fit.log"
    log.write_text("\n".join([*README_TABLE[:2], AMD_AFTER]))
    assert check.main([str(log), str(_readme_with(tmp_path, README_TABLE))]) == 0
    assert check.TOLERANCE == 0.005
    # exactly the tolerance passes, one thousandth more does not
    assert check.differences({"a s": "a s 0.420"}, {"a s": "a s 0.425"}) == []
    assert check.differences({"a s": "a s 0.420"}, {"a s": "a s 0.426"}) != []


@pytest.mark.parametrize(
    "log_rows",
    [
        [README_TABLE[1], AMD_AFTER.replace("0.959", "0.965")],  # one value 0.006 off
        [README_TABLE[1]],  # the after row missing
        [*README_TABLE[1:], "after         other          0.422   0.616"],  # an extra row
        [README_TABLE[1], AMD_AFTER.rsplit(maxsplit=1)[0]],  # a value missing
    ],
    ids=["off", "missing", "extra", "short"],
)
def test_readme_table_check_refuses_a_value_off_or_a_row_missing_or_extra(log_rows, tmp_path, capsys):
    log = tmp_path / "fit.log"
    log.write_text("\n".join(log_rows))
    assert check.main([str(log), str(_readme_with(tmp_path, README_TABLE))]) == 1
    assert "differs from README.md's (tolerance 0.005 per value)" in capsys.readouterr().err


def test_readme_table_check_needs_both_tables(tmp_path):
    log = tmp_path / "fit.log"
    log.write_text("no table here\n")
    assert check.main([str(log), str(_readme_with(tmp_path, ROWS))]) == 2
    assert check.main([str(log), str(_readme_with(tmp_path, []))]) == 2


def test_the_readme_holds_the_default_runs_table():
    assert set(check.readme_rows(README.read_text(encoding="utf-8"))) == {
        "before synthetic",
        "after synthetic",
    }


def test_known_warnings_are_dropped_and_others_kept():
    messages = [
        ("`past_key_values` is deprecated and will be removed in version 5.40.0", FutureWarning),
        ("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning),
        ("something else is deprecated", FutureWarning),
        ("`past_key_values` is deprecated", UserWarning),  # same text, another category
    ]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        silence_known_noise()
        for message, category in messages:
            warnings.warn(message, category, stacklevel=1)
    assert [str(w.message) for w in seen] == [
        "something else is deprecated",
        "`past_key_values` is deprecated",
    ]


def test_known_log_lines_are_dropped_and_others_kept(caplog):
    silence_known_noise()
    silence_known_noise()  # idempotent
    name = "lightning.pytorch.utilities.rank_zero"
    assert len([f for f in logging.getLogger(name).filters if type(f).__name__ == "_DropMessage"]) == 1
    caplog.set_level(logging.INFO)
    tip = (
        "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](https://...)"
    )
    logging.getLogger(name).info(tip)
    logging.getLogger(name).info(ROWS[0])
    logging.getLogger("transformers.utils.generic").warning(
        "`past_key_values`/`cache_params` are deprecated. Use `cache` instead."
    )
    logging.getLogger("transformers.utils.generic").warning("another warning")
    assert [r.getMessage() for r in caplog.records] == [ROWS[0], "another warning"]
