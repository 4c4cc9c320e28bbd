"""Check that a `fit` log's pass@k table matches the one in README.md.

    python -m nsr_lightning fit 2>&1 | tee fit.log
    python scripts/check_readme_table.py fit.log [README.md]

Compares the `before` and `after` rows (tag, data set, every pass@k value as printed) of the last table
in the log with those in README.md's fenced block that holds a pass@k table: the same rows, the same
number of values in each, and each value within TOLERANCE of the README's. The last digit depends on
the CPU's floating-point kernels (an AMD EPYC with AVX2 and MKL printed `0.619` where an Intel
machine printed `0.616` for the same code): sampling is a long chain of float operations whose rounding differs between
kernels, so an exact match holds on one kind of CPU only. Exit code 0 when they match, 1 with the
rows that differ when they do not, 2 when a table is missing. The log may hold a progress bar
(carriage returns) and other lines: only rows that start with `before` or `after` are read.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROW = re.compile(r"^(before|after)\s+(\S+)((?:\s+\d+\.\d+)+)\s*$")
HEADER = "pass@k        dataset"
TOLERANCE = 0.005  # absolute, per pass@k value: the README's last digit depends on the CPU


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


def differences(want: dict[str, str], got: dict[str, str], tolerance: float = TOLERANCE) -> list[str]:
    """One line per row that is missing, extra, of another length, or off by more than `tolerance`."""
    out = [f"missing row: {want[k]}" for k in sorted(want.keys() - got.keys())]
    out += [f"extra row:   {got[k]}" for k in sorted(got.keys() - want.keys())]
    for key in sorted(want.keys() & got.keys()):
        a, b = [float(v) for v in want[key].split()[2:]], [float(v) for v in got[key].split()[2:]]
        off = len(a) != len(b) or any(abs(x - y) > tolerance + 1e-9 for x, y in zip(a, b, strict=True))
        if off:
            out.append(f"README: {want[key]}\n   log: {got[key]}")
    return out


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
    problems = differences(want, got)
    if not problems:
        print(
            f"pass@k table of {log_path} matches {readme_path.name}'s ({len(want)} rows, each value within {TOLERANCE})"
        )
        return 0
    print(
        f"error: the pass@k table of {log_path} differs from {readme_path.name}'s (tolerance {TOLERANCE} per value):",
        file=sys.stderr,
    )
    print("\n".join(problems), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
