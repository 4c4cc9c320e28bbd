"""Overlay several runs' pass@k curves in the paper's figure style: one panel per data set, k on a
log2 axis, pass@k on the other, one line per run.

    python scripts/pass_at_k_overlay.py RUN[@TAG][=LABEL] ... [--out pass_at_k_overlay.png]
        [--datasets math500,aime25,amc23]

RUN is what `evaluate` or `fit` wrote (docs/outputs.md): an evaluate run folder or its
summary.json, or a fit run folder or its csv/version_N/pass_at_k.json (the newest version when a
folder is given). A fit file holds several evaluations: @TAG picks one (`@before`: the base model;
`@after`, the default: the trained one; `@step 50` for a periodic one). LABEL names the line
(default: the folder's name, with the tag). Writes the PNG and, beside it, the plotted numbers
as JSON (`<out>.json`: data set -> label -> {k: pass@k}).

    python scripts/pass_at_k_overlay.py runs/eval_base=Base runs/eval_nsr=NSR runs/eval_psr=PSR
    python scripts/pass_at_k_overlay.py runs/fit_nsr@before=Base runs/fit_nsr=NSR runs/fit_psr=PSR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

Curves = dict[str, dict[str, dict[int, float]]]  # data set -> label -> {k: pass@k}


def find_file(path: Path) -> Path:
    """The results file of a run folder: summary.json (evaluate), else the newest
    csv/version_N/pass_at_k.json (fit)."""
    if path.is_file():
        return path
    if (path / "summary.json").is_file():
        return path / "summary.json"
    found = sorted(path.glob("csv/version_*/pass_at_k.json"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not found:
        raise SystemExit(f"error: {path}: no summary.json (evaluate) or csv/version_N/pass_at_k.json (fit)")
    return found[-1]


def read_run(path: Path, tag: str | None = None) -> dict[str, dict[int, float]]:
    """{data set: {k: pass@k}} of one run; `tag` picks an evaluation of a fit run (default: after)."""
    data = json.loads(find_file(path).read_text(encoding="utf-8"))
    if isinstance(data, dict):  # evaluate's summary.json
        if tag:
            raise SystemExit(f"error: {path}: @{tag} applies only to a fit run's pass_at_k.json")
        return {name: _table(d["pass@k"]) for name, d in data["datasets"].items()}
    out: dict[str, dict[int, float]] = {}
    for entry in data:  # fit's history, oldest first: the last entry of the tag wins
        if entry["tag"] == (tag or "after"):
            out[entry["dataset"]] = _table(entry["pass@k"])
    if not out:
        tags = sorted({e["tag"] for e in data})
        raise SystemExit(f"error: {path}: no pass@k tagged {tag or 'after'!r}; it has: {', '.join(tags)}")
    return out


def _table(raw: dict) -> dict[int, float]:
    return {int(k): float(v) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}


def parse_spec(spec: str) -> tuple[Path, str | None, str]:
    """RUN[@TAG][=LABEL] -> (path, tag, label)."""
    run, _, label = spec.partition("=")
    run, _, tag = run.partition("@")
    path = Path(run)
    default = path.name if path.is_dir() else path.parent.name if path.name == "summary.json" else path.stem
    return path, tag or None, label or (f"{default} {tag}" if tag else default)


def collect(specs: list[str], datasets: list[str] | None = None) -> Curves:
    curves: Curves = {}
    for spec in specs:
        path, tag, label = parse_spec(spec)
        for name, table in read_run(path, tag).items():
            if datasets is None or name in datasets:
                curves.setdefault(name, {})[label] = table
    if datasets:
        curves = {name: curves[name] for name in datasets if name in curves}
    return curves


def plot(curves: Curves, out: Path):
    """The figure (one panel per data set), saved to `out`; returns the figure."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.6), dpi=150, squeeze=False)
    for ax, (name, runs) in zip(axes[0], curves.items(), strict=True):
        for label, table in runs.items():
            ks = sorted(table)
            ax.plot(ks, [table[k] for k in ks], marker="o", markersize=3, linewidth=1.5, label=label)
        ks = sorted({k for table in runs.values() for k in table})
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    return fig


def plotted(fig) -> Curves:
    """What the figure's lines hold, read back from it: data set -> label -> {k: pass@k}."""
    return {
        ax.get_title(): {
            line.get_label(): dict(zip(map(int, line.get_xdata()), map(float, line.get_ydata()), strict=True))
            for line in ax.get_lines()
        }
        for ax in fig.axes
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="RUN[@TAG][=LABEL]")
    parser.add_argument("--out", type=Path, default=Path("pass_at_k_overlay.png"))
    parser.add_argument("--datasets", help="comma-separated data sets, in panel order (default: all)")
    a = parser.parse_args(argv)
    curves = collect(a.runs, a.datasets.split(",") if a.datasets else None)
    if not curves:
        print("error: no pass@k curves in the runs given (check --datasets)", file=sys.stderr)
        return 2
    fig = plot(curves, a.out)
    data = plotted(fig)
    a.out.with_suffix(".json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    print(f"wrote {a.out} and {a.out.with_suffix('.json')}: {', '.join(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
