"""scripts/gpu_check.py: its CPU mode end to end (every stage present, its numbers where it ran),
a stage that fails or runs out of time is reported and not fatal, and the CUDA profile summary
read from a hand-made chrome trace (no GPU needed)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
import bench_probe  # noqa: E402
import gpu_check  # noqa: E402


def test_gpu_check_cpu_quick(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "gpu_check.py"), "--device", "cpu", "--quick", "--out-dir", str(out)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    stages = {s["stage"]: s for s in report["stages"]}
    assert list(stages) == ["fit", "fsdp", "bench:tiny", "profile", "vllm"]
    failed = {k: s.get("tail", "")[-1500:] for k, s in stages.items() if s["status"] != "ok" and k != "vllm"}
    assert not failed, failed
    assert stages["vllm"] == {"stage": "vllm", "status": "skipped", "reason": "needs CUDA"}
    fit = stages["fit"]["numbers"]
    assert fit["steps"] == 2 and fit["steps_per_s"] > 0 and fit["median_train_s"] > 0
    fsdp = stages["fsdp"]["numbers"]
    assert fsdp == fsdp | {
        "first_steps": ["0"],
        "resumed_steps": ["1"],
        "sharded_checkpoint": True,
        "final_model": True,
    }
    bench = stages["bench:tiny"]["numbers"]
    assert set(bench["sides"]) == {"ours", "raw"} and bench["rounds"] == 1
    for side in bench["sides"].values():
        assert side["round_min_s"] <= side["step_s"] <= side["round_max_s"] and side["steps"] == 1
    phases = stages["profile"]["numbers"]["phases"]
    assert set(phases["ours"]) == {"generate", "update", "log"} and set(phases["raw"]) == {
        "generate",
        "update",
    }
    assert all(p["wall_s"] > 0 and p["cpu_ops"] > 0 and p["kernels"] == 0 for p in phases["raw"].values())
    table = (out / "gpu_check.md").read_text()
    assert "| stage | status | wall s / limit | result |" in table
    for name, s in stages.items():
        assert f"| {name} | {s['status']} |" in table
    assert "| generate | cpu_ops |" in table


def test_a_failing_or_slow_stage_is_reported(tmp_path):
    slow = gpu_check.run_stage("slow", [sys.executable, "-c", "print('started', flush=True); import time; time.sleep(60)"], 3, tmp_path)  # fmt: skip
    assert (
        slow["status"] == "failed" and slow["reason"] == "timed out after 3 s" and "started" in slow["tail"]
    )
    assert slow["wall_s"] < 30
    bad = gpu_check.run_stage("bad", [sys.executable, "-c", "raise SystemExit('boom')"], 30, tmp_path)
    assert bad["status"] == "failed" and bad["reason"] == "exit 1" and "boom" in bad["tail"]


def test_trace_summary_of_a_cuda_trace():
    def ev(cat, name, ts=0.0, dur=0.0, **args):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "args": args}

    events = [
        ev("cuda_runtime", "cudaLaunchKernel"), ev("cuda_driver", "cuLaunchKernel"),
        ev("cuda_runtime", "cudaMalloc"), ev("cuda_runtime", "cudaFree"), ev("cuda_runtime", "cudaFree"),
        ev("cuda_runtime", "cudaStreamSynchronize"), ev("cuda_runtime", "cudaDeviceSynchronize"),
        ev("cuda_runtime", "cudaEventSynchronize"), ev("cpu_op", "aten::mm"),
        ev("kernel", "gemm", ts=0, dur=2), ev("kernel", "softmax", ts=1, dur=2), ev("kernel", "add", ts=5, dur=1),
        ev("gpu_memcpy", "Memcpy HtoD (Pageable -> Device)", bytes=800),
        ev("gpu_memcpy", "Memcpy DtoH (Device -> Pinned)", bytes=8),
        {"ph": "i", "cat": "kernel", "name": "instant"},
    ]  # fmt: skip
    s = bench_probe.trace_summary(events)
    assert s["kernel_launches"] == 2 and s["kernels"] == 3 and s["cpu_ops"] == 1
    assert (s["cuda_malloc"], s["cuda_free"]) == (1, 2)
    assert (s["stream_syncs"], s["device_syncs"], s["event_syncs"]) == (1, 1, 1)
    assert (s["memcpy_htod"], s["memcpy_htod_bytes"], s["memcpy_dtoh"], s["memcpy_dtoh_bytes"]) == (
        1,
        800,
        1,
        8,
    )
    assert s["gpu_busy_s"] == pytest.approx(4e-6)  # [0, 3] and [5, 6] microseconds


def test_gpu_check_help_names_every_stage():
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "gpu_check.py"), "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    for word in ("fit", "fsdp", "bench:", "profile", "vllm", "--device cpu", "--budget"):
        assert word in proc.stdout
