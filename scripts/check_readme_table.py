"""Check that a `fit` log's pass@k table equals the one in README.md.

    python -m nsr_lightning fit 2>&1 | tee fit.log
    python scripts/check_readme_table.py fit.log [README.md]

Compares the `before` and `after` rows (tag, data set, every pass@k value as printed) of the last table
in the log with those in README.md's fenced block that holds a pass@k table. Exit code 0 when they are
equal, 1 with a diff when they differ, 2 when a table is missing. The log may hold a progress bar
(carriage returns) and other lines: only rows that start with `before` or `after` are read.
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

ROW = re.compile(r"^(before|after)\s+(\S+)((?:\s+\d+\.\d+)+)\s*$")
HEADER = "pass@k        dataset"


def rows(lines: list[str]) -> dict[str, str]:
    """The last `before` / `after` row of each (tag, data set), normalised to single spaces."""
    found: dict[str, str] = {}
    for line in lines:
        m = ROW.match(line.strip())
        if m:
            found[f"{m.group(1)} {m.group(2)}"] = " ".join([m.group(1), m.group(2), *m.group(3).split()])
    return found


def log_rows(text: str) -> dict[str, str]:
    return rows(re.split(r"[\r\n]+", text))


def readme_rows(text: str) -> dict[str, str]:
    """Rows of the first fenced block of the README that holds a pass@k table header."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    for block in blocks:
        if HEADER in block:
            return rows(block.splitlines())
    return {}


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    log_path = Path(argv[0])
    readme_path = Path(argv[1]) if len(argv) == 2 else Path(__file__).resolve().parents[1] / "README.md"
    got = log_rows(log_path.read_text(encoding="utf-8", errors="replace"))
    want = readme_rows(readme_path.read_text(encoding="utf-8"))
    if not want:
        print(f"error: no pass@k table (a fenced block with {HEADER!r}) in {readme_path}", file=sys.stderr)
        return 2
    if not got:
        print(f"error: no `before` / `after` pass@k rows in {log_path}", file=sys.stderr)
        return 2
    a, b = [want[k] for k in sorted(want)], [got[k] for k in sorted(got)]
    if a == b:
        print(f"pass@k table of {log_path} equals {readme_path.name}'s ({len(a)} rows)")
        return 0
    print(f"error: the pass@k table of {log_path} differs from {readme_path.name}'s:", file=sys.stderr)
    diff = difflib.unified_diff(a, b, fromfile=str(readme_path), tofile=str(log_path), lineterm="")
    print("\n".join(diff), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
