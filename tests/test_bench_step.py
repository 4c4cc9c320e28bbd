"""scripts/bench_step.py on tiny shapes: it runs, its sides see the same samples, and its summary
numbers follow from its per-step records (no timing is asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "scripts" / "bench_step.py"
TINY = ["--rounds", "1", "--steps", "1", "--warmup", "1", "--prompts", "2", "--n", "2"]
TINY += ["--max-new-tokens", "8", "--micro-batch", "2", "--lr", "1e-12", "--passk-problems", "0"]


def bench(tmp_path, sides: str) -> dict:
    out = tmp_path / "bench.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, "--sides", sides, "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "phase (median s/step)" in proc.stdout
    return json.loads(out.read_text())


def test_bench_ours_and_raw(tmp_path):
    s = bench(tmp_path, "ours,raw")
    ours, raw = s["ours"], s["raw"]
    # the raw side replays our prompts and seeds on (nearly) the same weights: the same samples
    assert ours["gen_tokens"] == raw["gen_tokens"] and ours["train_tokens"] == raw["train_tokens"]
    assert raw["step_s"] == pytest.approx(raw["generate_s"] + raw["update_s"])
    assert s["overhead_s"] == pytest.approx(ours["step_s"] - raw["step_s"])
    assert ours["gen_tokens_per_s"] == pytest.approx(ours["gen_tokens"] / ours["generate_s"])
    assert ours["peak_rss_mb"] > 0 and s["settings"]["micro_batch"] == 2


def test_bench_trl_side(tmp_path):
    pytest.importorskip("trl")
    s = bench(tmp_path, "ours,trl")
    assert s["trl"]["steps"] == 1
    assert s["ratio_ours_to_trl"] == pytest.approx(s["ours"]["step_s"] / s["trl"]["step_s"])


def test_bench_counts_ours_and_raw_side_by_side(tmp_path):
    """--counts: per phase, ours and raw count the same kinds of work on the same samples; the
    arithmetic (FLOPs) of the generate and update phases agrees within a few percent."""
    out = tmp_path / "counts.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, "--sides", "ours,raw", "--counts", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| phase | counts per step | ours | raw | ours / raw |" in proc.stdout
    s = json.loads(out.read_text())
    ours, raw = s["counts"]["ours"], s["counts"]["raw"]
    assert set(ours) == {"generate", "update", "log"} and set(raw) == {"generate", "update"}
    keys = {"aten_ops", "host_syncs", "flops", "full_vocab_f32", "full_vocab_f32_bytes"}
    for phase in ("generate", "update"):
        assert keys <= set(ours[phase]) and keys <= set(raw[phase])
        assert ours[phase]["aten_ops"] > 0 and raw[phase]["aten_ops"] > 0
        assert ours[phase]["flops"] == pytest.approx(raw[phase]["flops"], rel=0.03)
        assert ours[phase]["full_vocab_f32"] > 0  # the tiny vocabulary's logits
    assert ours["log"]["flops"] == 0 and ours["log"]["host_syncs"] > 0  # metrics read, nothing computed
    assert s["raw_runs"]["ours"][0]["counts"]["steps"] == 1  # the one measured step, not the warm-up
