"""scripts/miniature.py: the problem selection (base-model samples only, deterministic), and the
whole study at `--quick` size end to end (selection, both regimes, every method, the report)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))
import miniature  # noqa: E402
import miniature_select as sel  # noqa: E402

METHODS = ["base", "psr", "nsr", "w_reinforce", "reinforce", "grpo", "ppo"]


def test_selection_rule_by_hand():
    """c of n = 20 base samples: 1/20 = 0.05 and 8/20 = 0.40 are inside the medium band (closed),
    0 is hard, 9/20 and everything else is left out; candidate order decides, final first."""
    counts = [("a", 1), ("b", 0), ("c", 8), ("d", 9), ("e", 0), ("f", 4), ("g", 20), ("h", 0), ("i", 2)]
    chosen = sel.select(counts, 20, final=(2, 1), pilot=(2, 1))
    assert chosen == {"final": ["a", "c", "b"], "pilot": ["f", "i", "e"]}
    assert [sel.band(c, 20) for _, c in counts] == [
        "medium", "hard", "medium", None, "hard", "medium", None, "hard", "medium"
    ]  # fmt: skip
    with pytest.raises(SystemExit, match="hard candidates"):
        sel.select(counts, 20, final=(2, 2), pilot=(2, 2))


def test_selection_uses_the_base_model_and_a_seed_no_evaluation_uses(tmp_path):
    """The selection's evaluate has no model.path (the shipped base model) and the selection seed;
    every evaluation of the study uses a training seed, never that one."""
    args = sel.eval_args(tmp_path, "candidates", tmp_path / "c.jsonl", 64, sel.SELECT_SEED, [], "csv")
    assert not any(a.startswith("model.path=") for a in args) and f"seed={sel.SELECT_SEED}" in args
    cfg = miniature.parse(["--out", str(tmp_path)])
    seeds = {job["seed"] for job in miniature.plan(cfg) + miniature.pilot_jobs(cfg)}
    assert sel.SELECT_SEED not in seeds
    # the candidates are held-out problems of the task: none is a training question
    from nsr_lightning.data.synthetic import SyntheticTask

    task = SyntheticTask(**sel.TASK)
    rows = sel.candidates(50)
    assert all(task.is_heldout(r["problem"]) for r in rows)
    assert rows == sel.candidates(50) and len({r["problem"] for r in rows}) == 50


def test_plan_has_both_regimes_and_the_paper_regime_makes_four_updates(tmp_path):
    cfg = miniature.parse(["--out", str(tmp_path)])
    jobs = miniature.plan(cfg)
    trained = [j for j in jobs if j["fit"]]
    assert {j["regime"] for j in trained} == {"paper", "on_policy"}
    assert len([j for j in jobs if not j["fit"]]) == cfg["seeds"]  # the base model once per seed
    paper = len(METHODS) - 1 + len(cfg["lambdas"])
    assert len(trained) == cfg["seeds"] * (paper + len(cfg["control"]))
    full = miniature.parse(["--out", str(tmp_path), "--full"])
    assert {j["method"] for j in miniature.plan(full) if j["regime"] == "on_policy"} == set(METHODS) - {
        "base"
    }
    # a default's jobs are a subset of --full's: --full on a default's folder only adds runs
    key = lambda j: (j["method"], j["regime"], j["seed"])  # noqa: E731
    assert {key(j) for j in jobs} <= {key(j) for j in miniature.plan(full)}
    rollout = cfg["prompts"] * cfg["responses"]
    args = miniature.fit_args(cfg, trained[0] | {"regime": "paper"}, tmp_path)
    assert f"algo.mini_batch_size={rollout // 4}" in args
    assert "algo.mini_batch_size=0" in miniature.fit_args(cfg, trained[0] | {"regime": "on_policy"}, tmp_path)


def test_quick_run_end_to_end(tmp_path):
    out = tmp_path / "mini"
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "miniature.py"), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert result["missing_runs"] == []
    assert set(result["stats"]) == {"paper", "on_policy"}
    ks = ["1", "2", "4", "8", "16"]
    for regime, methods in result["stats"].items():
        assert list(methods) == METHODS
        for method, s in methods.items():
            values = [s["pass@k"][k]["estimate"] for k in ks]
            assert values == sorted(values) and all(0 <= v <= 1 for v in values), method
            for k in ks:
                iv = s["pass@k"][k]
                assert iv["lo"] - 1e-12 <= iv["estimate"] <= iv["hi"] + 1e-12
            if method != "base":
                diff = s["minus_base"]["1"]["estimate"]
                assert diff == pytest.approx(
                    s["pass@k"]["1"]["estimate"] - methods["base"]["pass@k"]["1"]["estimate"]
                )
                assert s["crossover"]["k"] in (None, 1, 2, 4, 8, 16)
                updates = s["updates_per_step"]
                assert (updates == 1) if regime == "on_policy" else (1 <= updates <= 4)
    assert result["stats"]["paper"]["w_reinforce"]["updates_per_step"] == 4  # keeps every sample
    assert {v["verdict"] for v in result["verdicts"]} <= {"held", "did not hold", "cannot tell at this size"}
    assert list(result["lambda_frontier"]) == ["0", "0.05", "0.1", "0.25", "0.5", "1"]
    for png in ("pass_at_k", "dynamics", "lambda_frontier", "diagnostics"):
        assert (out / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    sets = {
        name: [json.loads(line)["id"] for line in (out / f"{name}.jsonl").open()]
        for name in ("final", "pilot")
    }
    assert not set(sets["final"]) & set(sets["pilot"])
    assert result["machine"]["torch"] and result["wall_s"] > 0
    config = (out / "runs" / "paper" / "w_reinforce_l0.25" / "seed0" / "config.yaml").read_text()
    assert "lambda_pos: 0.25" in config
    # the selection again, in a fresh folder: the same problems
    again = tmp_path / "again"
    again.mkdir()
    assert sel.write_sets(again, "csv", miniature.QUICK_SELECT)["final"] == sets["final"]


def test_pilot_jobs_train_the_asked_method_on_the_pilot_set(tmp_path):
    cfg = miniature.parse(["--out", str(tmp_path), "--pilot"])
    jobs = miniature.pilot_jobs(cfg)
    assert [j["method"] for j in jobs] == ["pilot_base", "pilot_psr_lr2e-05", "pilot_psr_lr5e-05"]
    assert all(j.get("set") == "pilot" and j["seed"] != sel.SELECT_SEED for j in jobs)
    control = miniature.parse(
        ["--out", str(tmp_path), "--pilot", "--pilot-method", "nsr", "--pilot-lrs", "1e-5"]
    )
    assert [j["method"] for j in miniature.pilot_jobs(control)] == ["pilot_base", "pilot_nsr_lr1e-05"]
