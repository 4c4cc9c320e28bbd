"""scripts/miniature.py end to end at toy size: every method trained with the product's `fit`,
evaluated with its `evaluate`, and the report's shape and sanity (Table 1, figures, sweep, JSON)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "miniature.py"
METHODS = ["base", "psr", "nsr", "w_reinforce", "reinforce", "grpo", "ppo"]


def test_quick_run_writes_a_sane_report(tmp_path):
    out = tmp_path / "mini"
    args = ["--quick", "--steps", "2", "--every", "1", "--problems", "2", "--dyn-problems", "2", "--n", "8"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # the report alone, again, with its offline W&B run (WANDB_MODE=offline from conftest)
    report = subprocess.run(
        [sys.executable, str(SCRIPT.parent / "miniature_report.py"), str(out), "--wandb"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "WANDB_MODE": "offline"},
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert result["missing_runs"] == []
    ks = [1, 2, 4, 8]
    # Table 1's shape: every method, every k, mean and std; exactly one rank-1 cell per k at least
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert sorted({r["method"] for r in rows}) == sorted(METHODS)
    assert sorted({int(r["k"]) for r in rows}) == ks
    for k in ks:
        assert any(r["rank"] == "1" for r in rows if int(r["k"]) == k)
    table_md = (out / "table.md").read_text()
    assert table_md.count("\n") == len(METHODS) + 2 and "**" in table_md
    for method, by_seed in result["runs"].items():
        for run in by_seed.values():
            values = [run["pass@k"][str(k)] for k in ks]
            assert all(0 <= v <= 1 for v in values), method
            assert values == sorted(values), method  # pass@k never falls as k grows
            assert run["problems"] == 2
            if method != "base":  # dynamics: held-out before training and every step; per-step ratios
                assert [h["step"] for h in run["heldout"]] == [0, 1, 2]
                assert run["train"]["step"] == [0, 1]
                assert all(0 <= v <= 1 for v in run["train"]["rollout/correct_ratio"])
    # base is the shipped model: the same for every method's run only at step 0 of the dynamics
    step0 = {m: r["0"]["heldout"][0]["greedy_accuracy"] for m, r in result["runs"].items() if m != "base"}
    assert len(set(step0.values())) == 1
    # the lambda sweep: 0 (= NSR run), 0.05, 0.1 (= W-REINFORCE run), 0.25, 0.5, 1 (= REINFORCE run)
    sweep = result["lambda_sweep"]
    assert list(sweep) == ["0", "0.05", "0.1", "0.25", "0.5", "1"]
    assert (sweep["0"]["run"], sweep["0.1"]["run"], sweep["1"]["run"]) == ("nsr", "w_reinforce", "reinforce")
    assert sweep["0"]["pass@1"]["mean"] == result["table"]["nsr"]["1"]["mean"]
    for png in ("pass_at_k.png", "dynamics.png", "lambda_sweep.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert list(out.glob("wandb/offline-run-*"))  # the report's offline W&B run
    # W-REINFORCE's lambda reached the objective
    config = (out / "runs" / "w_reinforce_l0.25" / "seed0" / "config.yaml").read_text()
    assert "lambda_pos: 0.25" in config
