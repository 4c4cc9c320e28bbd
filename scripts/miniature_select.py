"""Held-out problems with headroom, chosen from the base model's own samples before any training.

Candidates: the first `CANDIDATES` problems of the embedded task's held-out partition with 3 to 7
terms (task seed 0; the training problems come from the other partition, so none is a candidate).
The untrained base model draws `SELECT_N` samples of every candidate through the product's own
`evaluate`, with evaluation seed `SELECT_SEED`, which no later evaluation uses (those use the
training seeds 0, 1, 2, ...). The rule (`select`), on these counts only:

- a *medium* problem has a sample pass rate c / SELECT_N in [MEDIUM_LO, MEDIUM_HI] (5 to 40 %);
- a *hard* problem has no correct sample (c = 0): the base model rarely or never solves it, so
  the set's pass@256 stays below 1 and large k has room to move both ways.

Walking the candidates in order, the first FINAL_MEDIUM medium and FINAL_HARD hard problems form
the final held-out set, the next PILOT_MEDIUM and PILOT_HARD the pilot set (used only to fix the
training budget). Both are written as JSONL files that `evaluate` reads (`data.paths.<name>`).
"""

from __future__ import annotations

import json
from pathlib import Path

CANDIDATES = 480
SELECT_N = 64
SELECT_SEED = 1000
MEDIUM_LO, MEDIUM_HI = 0.05, 0.40
FINAL_MEDIUM, FINAL_HARD = 48, 16  # 64 problems
PILOT_MEDIUM, PILOT_HARD = 24, 8  # 32 problems
TASK = dict(min_terms=3, max_terms=7, max_value=20, seed=0)


DEFAULT = dict(
    candidates=CANDIDATES,
    samples=SELECT_N,
    final=(FINAL_MEDIUM, FINAL_HARD),
    pilot=(PILOT_MEDIUM, PILOT_HARD),
)


def candidates(count: int = CANDIDATES) -> list[dict]:
    """The candidate problems as `evaluate` rows: id, problem, answer."""
    from nsr_lightning.data.synthetic import SyntheticTask

    problems = SyntheticTask(**TASK).heldout_problems(count)
    return [{"id": p.id, "problem": p.question, "answer": p.answer} for p in problems]


def band(c: int, n: int) -> str | None:
    """'medium', 'hard' or None (not selected) for c correct of n base samples."""
    if c == 0:
        return "hard"
    return "medium" if MEDIUM_LO <= c / n <= MEDIUM_HI else None


def select(
    counts: list[tuple[str, int]], n: int, final=(FINAL_MEDIUM, FINAL_HARD), pilot=(PILOT_MEDIUM, PILOT_HARD)
) -> dict[str, list[str]]:
    """{'final': ids, 'pilot': ids} from (id, correct) of every candidate in candidate order;
    `final` and `pilot` are (medium, hard) counts."""
    medium = [i for i, c in counts if band(c, n) == "medium"]
    hard = [i for i, c in counts if band(c, n) == "hard"]
    need = {"medium": final[0] + pilot[0], "hard": final[1] + pilot[1]}
    for name, found in (("medium", medium), ("hard", hard)):
        if len(found) < need[name]:
            raise SystemExit(
                f"problem selection: {len(found)} {name} candidates of {len(counts)}, need {need[name]}: "
                "raise CANDIDATES in scripts/miniature_select.py"
            )
    return {
        "final": medium[: final[0]] + hard[: final[1]],
        "pilot": medium[final[0] : need["medium"]] + hard[final[1] : need["hard"]],
    }


def eval_args(
    run_dir: Path, name: str, path: Path, n: int, seed: int, model: list[str], logger: str
) -> list[str]:
    """`evaluate` of the problems in a JSONL file (the study's one way to score a model)."""
    return [
        "evaluate",
        *model,
        "reward=synthetic",
        "preset=tiny",  # temperature 1.0, top-p 1, 80 tokens: the training sampling
        f"n={n}",
        f"data.datasets=[{name}]",
        f"data.paths.{name}={path}",
        f"seed={seed}",
        f"run_dir={run_dir}",
        f"logger={logger}",
    ]


def write_sets(out: Path, logger: str = "csv", sizes: dict | None = None) -> dict:
    """Run the selection once (skipped when `selection.json` exists) and return it; `sizes`
    replaces DEFAULT's candidates, samples and (medium, hard) counts (the quick mode's)."""
    from nsr_lightning.cli import main

    path = out / "selection.json"
    if path.exists():
        return json.loads(path.read_text())
    sizes = sizes or DEFAULT
    rows = candidates(sizes["candidates"])
    pool = out / "candidates.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = out / "selection_eval"
    if main(eval_args(run, "candidates", pool, sizes["samples"], SELECT_SEED, [], logger)) != 0:
        raise SystemExit(f"problem selection: evaluate failed (see {run})")
    counts = [(r["id"], r["c"]) for r in map(json.loads, (run / "candidates" / "results.jsonl").open())]
    chosen = select(counts, sizes["samples"], sizes["final"], sizes["pilot"])
    by_id = {r["id"]: r for r in rows}
    for name, ids in chosen.items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps(by_id[i]) + "\n" for i in ids))
    result = {
        "rule": {"task": TASK, "seed": SELECT_SEED, "medium": [MEDIUM_LO, MEDIUM_HI], **sizes},
        "counts": dict(counts),
        **chosen,
    }
    path.write_text(json.dumps(result, indent=1))
    return result
