"""Per-phase probes of `scripts/bench_step.py`: `--counts` (device-independent work, through
`nsr_lightning.op_counts.OpCounts`) and `--profile` (torch.profiler: what the device and its
driver did), for the `ours` and `raw` sides phase by phase (TRL's as one phase), on the measured
steps only.

Phases: `generate` (ours: the rollout engine's `generate`, i.e. sampling and the RolloutBatch;
raw: the lean decode loop), `update` (ours: `Update.run`, i.e. forward + backward + optimizer
and the update's bookkeeping; raw: its forward + backward passes and the AdamW step) and, ours
only, `log` (the module's `_log_stats`: the step's metrics handed to Lightning). The product is
not edited: its objects' methods are wrapped (`instrument_ours`), the raw side's phases are
`with phase(...)` blocks. A phase inside another phase is attributed to the outer one. TRL's
side has one phase, `step` (its whole optimizer step, generation included), to hold against the
sum of ours' phases.

Every number is per measured step (the sum over `--steps` measured steps, divided by them).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections import Counter
from contextlib import contextmanager, nullcontext

import torch

PROBE: Probe | None = None  # set in a side's process by `start` when --counts or --profile is on
COUNT_KEYS = ("aten_ops", "host_syncs", "flops", "full_vocab_f32", "full_vocab_f32_bytes")
PROFILE_KEYS = (
    "wall_s", "gpu_busy_s", "gpu_busy_share", "kernels", "kernel_launches", "cuda_malloc",
    "cuda_free", "stream_syncs", "device_syncs", "event_syncs", "memcpy_htod", "memcpy_htod_bytes",
    "memcpy_dtoh", "memcpy_dtoh_bytes", "alloc_retries", "peak_allocated_mb", "cpu_ops",
)  # fmt: skip
LAUNCH_NAMES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")


class Probe:
    def __init__(self, kind: str, device: str, vocab_size: int | None, warmup: int) -> None:
        self.kind, self.device, self.vocab_size, self.warmup = kind, device, vocab_size, warmup
        self.totals: dict[str, Counter] = {}
        self.steps: set[int] = set()
        self.active: str | None = None

    @contextmanager
    def phase(self, name: str, step: int):
        if step < self.warmup or self.active is not None:
            yield
            return
        self.active = name
        self.steps.add(step)
        try:
            with self._measure() as found:
                yield
            totals = self.totals.setdefault(name, Counter())
            for key, value in found.items():  # a peak is the largest of the calls, the rest add up
                totals[key] = max(totals[key], value) if key.startswith("peak") else totals[key] + value
        finally:
            self.active = None

    @contextmanager
    def _measure(self):
        found: dict = {}
        if self.kind == "counts":
            from nsr_lightning.op_counts import OpCounts

            with OpCounts(vocab_size=self.vocab_size) as counts:
                yield found
            summary = counts.summary()
            found.update({k: summary[k] for k in COUNT_KEYS})
            found.update({f"sync:{k}": v for k, v in summary["syncs_by_op"].items()})
        else:
            with profiled(self.device, found, self.active):
                yield found

    def result(self) -> dict:
        n = max(1, len(self.steps))
        out = {
            phase: {k: v if k.startswith("peak") else v / n for k, v in sorted(c.items())}
            for phase, c in self.totals.items()
        }
        for phase in out.values():
            if "wall_s" in phase:
                phase["gpu_busy_share"] = phase["gpu_busy_s"] / phase["wall_s"] if phase["wall_s"] else 0.0
        return {"steps": len(self.steps), "phases": out}


def start(a) -> None:
    """In a side's process: a probe for --counts or --profile, none otherwise."""
    global PROBE
    kind = "counts" if getattr(a, "counts", False) else "profile" if getattr(a, "profile", False) else None
    if kind:
        from transformers import AutoConfig

        vocab = AutoConfig.from_pretrained(a.model_path).vocab_size
        PROBE = Probe(kind, a.device, vocab, a.warmup)


def phase(name: str, step: int):
    return PROBE.phase(name, step) if PROBE is not None else nullcontext()


def instrument_ours(trainer, module) -> None:
    """Wraps the product's phase methods on these objects (not their classes); the step of a
    call is the trainer's global step when the step began (the update's optimizer step bumps it)."""
    if PROBE is None:
        return
    import lightning as L

    step = {"now": 0}

    class StepStart(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            step["now"] = trainer.global_step

    trainer.callbacks.insert(0, StepStart())  # before the rollout callback's generate
    engine = next(c.engine for c in trainer.callbacks if hasattr(c, "engine"))
    for name, owner, method in (
        ("generate", engine, "generate"),
        ("update", module.update, "run"),
        ("log", module, "_log_stats"),
    ):
        setattr(owner, method, _wrapped(name, getattr(owner, method), step))


def instrument_trl(trainer) -> None:
    """TRL's whole optimizer step (generation included) as the phase `step`."""
    if PROBE is None:
        return
    from transformers import TrainerCallback

    class Step(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.phase = phase("step", state.global_step)
            self.phase.__enter__()

        def on_step_end(self, args, state, control, **kw):
            self.phase.__exit__(None, None, None)

    trainer.add_callback(Step())


def _wrapped(name: str, original, step: dict):
    def run(*args, **kwargs):
        with phase(name, step["now"]):
            return original(*args, **kwargs)

    return run


# ---- torch.profiler --------------------------------------------------------------------------
@contextmanager
def profiled(device: str, found: dict, name: str):
    """Profiles the block (CPU, and CUDA on a GPU) and fills `found` with its summary."""
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize()
        retries = torch.cuda.memory_stats().get("num_alloc_retries", 0)
        torch.cuda.reset_peak_memory_stats()
    with profile(activities=activities) as prof, record_function(f"phase/{name}"):
        t0 = time.perf_counter()
        yield
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f).get("traceEvents", [])
    found.update(trace_summary(events), wall_s=wall)
    if cuda:
        stats = torch.cuda.memory_stats()
        found["alloc_retries"] = stats.get("num_alloc_retries", 0) - retries
        found["peak_allocated_mb"] = stats.get("allocated_bytes.all.peak", 0) / 2**20


def trace_summary(events: list[dict]) -> dict:
    """Counts and times of a chrome trace's complete events (durations in microseconds)."""
    out = Counter({k: 0 for k in PROFILE_KEYS if k not in ("wall_s", "gpu_busy_share")})
    kernels = []
    for e in events:
        if e.get("ph") != "X":
            continue
        cat, name = e.get("cat", ""), e.get("name", "")
        if cat == "cpu_op":
            out["cpu_ops"] += 1
        elif cat == "kernel":
            out["kernels"] += 1
            kernels.append((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0))))
        elif cat == "gpu_memcpy":
            for kind in ("htod", "dtoh"):
                if kind in name.lower().replace(" ", ""):
                    out[f"memcpy_{kind}"] += 1
                    out[f"memcpy_{kind}_bytes"] += int(e.get("args", {}).get("bytes", 0))
        elif cat in ("cuda_runtime", "cuda_driver"):
            if name in LAUNCH_NAMES:
                out["kernel_launches"] += 1
            elif name in ("cudaMalloc", "cudaMallocAsync", "cuMemAlloc_v2"):
                out["cuda_malloc"] += 1
            elif name in ("cudaFree", "cudaFreeAsync", "cuMemFree_v2"):
                out["cuda_free"] += 1
            elif name == "cudaStreamSynchronize":
                out["stream_syncs"] += 1
            elif name == "cudaDeviceSynchronize":
                out["device_syncs"] += 1
            elif name == "cudaEventSynchronize":
                out["event_syncs"] += 1
    out["gpu_busy_s"] = merged_length(kernels) / 1e6
    return dict(out)


def merged_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by the intervals (overlaps counted once)."""
    total, end = 0.0, float("-inf")
    for lo, hi in sorted(intervals):
        if hi > end:
            total += hi - max(lo, end)
            end = hi
    return total


# ---- the driver's side ------------------------------------------------------------------------
def summarise(runs: dict[str, list[dict]], kind: str) -> dict:
    """{side: {phase: {key: median over rounds}}} of the sides that carry the probe's result."""
    out = {}
    for side, results in runs.items():
        rounds = [r[kind]["phases"] for r in results if kind in r]
        if rounds:
            phases = {p: sorted({k for r in rounds for k in r.get(p, {})}) for p in rounds[0]}
            out[side] = {
                p: {k: statistics.median(r[p].get(k, 0) for r in rounds if p in r) for k in keys}
                for p, keys in phases.items()
            }
    return out


def table(probed: dict, kind: str) -> str:
    """A markdown table, phase by metric: ours | raw (| TRL) | ours / raw (| ours / TRL). The `step`
    row is the sum of the probed phases for ours and raw, TRL's whole optimizer step for TRL."""
    keys = COUNT_KEYS if kind == "counts" else PROFILE_KEYS
    sides = [side for side in ("ours", "raw", "trl") if side in probed]
    data = {side: with_step(probed[side]) for side in sides}
    head = " | ".join(["ours", "raw", *(["TRL"] if "trl" in sides else [])])
    ratios = ["ours / raw", *(["ours / TRL"] if "trl" in sides else [])]
    lines = [f"| phase | {kind} per step | {head} | {' | '.join(ratios)} |"]
    lines.append("|---|---|" + "---:|" * (len(head.split(" | ")) + len(ratios)))
    for ph in ("generate", "update", "log", "step"):
        for key in keys:
            row = [data.get(side, {}).get(ph, {}).get(key) for side in ("ours", "raw", "trl")]
            if not any(row):  # absent or zero everywhere (e.g. the CUDA keys on a CPU)
                continue
            o, r, t = row
            cells = [_fmt(o), _fmt(r), *([_fmt(t)] if "trl" in sides else [])]
            cells += [f"{o / r:.3f}" if o is not None and r else ""]
            cells += [f"{o / t:.3f}" if o is not None and t else ""] if "trl" in sides else []
            lines.append(f"| {ph} | {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def with_step(phases: dict) -> dict:
    """The phases and their sum as `step` (peaks: the largest), unless the side has a step."""
    if "step" in phases or not phases:
        return phases
    step: dict = {}
    for values in phases.values():
        for key, value in values.items():
            step[key] = max(step.get(key, 0), value) if key.startswith("peak") else step.get(key, 0) + value
    if step.get("wall_s"):
        step["gpu_busy_share"] = step["gpu_busy_s"] / step["wall_s"]
    return {**phases, "step": step}


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{int(v):,}"
