"""The numbers and the markdown report of `scripts/gpu_check.py`."""

from __future__ import annotations

import platform
import statistics
from importlib.metadata import PackageNotFoundError, version

import bench_probe

SIDES = ("ours", "trl", "raw")


def versions() -> dict:
    import torch

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("torch", "transformers", "lightning", "trl", "vllm"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    out["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    out["cuda"] = torch.version.cuda
    return out


def step_of(record: dict) -> float:
    """A record's step time; the raw side's is its generate + update (as bench_step's summary)."""
    return record["step_s"] if "step_s" in record else record["generate_s"] + record["update_s"]


def bench_numbers(s: dict) -> dict:
    """Per side: median step, the min-max of the per-round medians, phases and peak memory."""
    out: dict = {"rounds": s.get("rounds_done"), "sides": {}}
    for side in SIDES:
        if side not in s:
            continue
        rounds = [statistics.median(step_of(r) for r in run["records"]) for run in s["raw_runs"][side]]
        out["sides"][side] = {
            "step_s": s[side]["step_s"], "round_min_s": min(rounds), "round_max_s": max(rounds),
            "generate_s": s[side].get("generate_s"), "hf_generate_s": s[side].get("hf_generate_s"),
            "update_s": s[side].get("update_s"),
            "peak_mb": s[side].get("peak_gpu_mb", s[side].get("peak_rss_mb")), "steps": s[side]["steps"],
        }  # fmt: skip
    for key in ("ratio_ours_to_trl", "ratio_per_round", "overhead_share", "overhead_share_per_round"):
        if key in s:
            out[key] = s[key]
    return out


def line(result: dict) -> str:
    """One stage's result in a table cell."""
    if result["status"] != "ok":
        return result.get("reason", "")
    n, name = result.get("numbers", {}), result["stage"]
    if name in ("fit", "vllm"):
        text = f"{n['steps']} steps, {n['steps_per_s']:.2f} steps/s (wall, start-up included)"
        gen, train = n.get("median_generate_s"), n.get("median_train_s")
        return text + (f"; median generate {gen:.3f} s, train {train:.3f} s" if gen and train else "")
    if name == "fsdp":
        return (
            f"steps {n['first_steps']}, sharded checkpoint: {_yes(n['sharded_checkpoint'])}, "
            f"resumed steps {n['resumed_steps']}, final model: {_yes(n['final_model'])}"
        )
    if name.startswith("bench"):
        parts = [f"{side} {v['step_s']:.3f} s" for side, v in n["sides"].items()]
        if "ratio_ours_to_trl" in n:
            parts.append(f"ours / TRL {n['ratio_ours_to_trl']:.2f}")
        if "overhead_share" in n:
            parts.append(f"overhead {100 * n['overhead_share']:.0f} %")
        return f"{n['rounds']} round(s): " + ", ".join(parts)
    if name == "profile":
        return "per phase, below"
    return ""


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _per_round(values: list[float], percent: bool = False) -> str:
    return ", ".join(f"{100 * v:.0f} %" if percent else f"{v:.2f}" for v in values)


def markdown(report: dict) -> str:
    v = report["versions"]
    head = ", ".join(
        f"{k} {v[k]}" for k in ("gpu", "cuda", "torch", "transformers", "lightning", "trl", "vllm")
    )
    lines = [
        f"# gpu_check ({report['device']}{', quick' if report['quick'] else ''}): {report['wall_s']} s",
        "",
        head,
        "",
        *(
            ["`--quick`: no warm-up, one step, one round: its timings only show that the stages run.", ""]
            if report["quick"]
            else []
        ),
        "| stage | status | wall s / limit | result |",
        "|---|---|---:|---|",
    ]
    for r in report["stages"]:
        wall = f"{r['wall_s']} / {r['limit_s']}" if "wall_s" in r else ""
        lines.append(f"| {r['stage']} | {r['status']} | {wall} | {line(r)} |")
    for r in report["stages"]:
        if r["status"] != "ok":
            continue
        n = r["numbers"]
        if r["stage"].startswith("bench"):
            lines += ["", f"## {r['stage']}: median s per step (min-max of the round medians)", ""]
            lines += [
                "| side | step | rounds min-max | generate | transformers generate | update | peak MB | steps |"
            ]
            lines += ["|---|---:|---:|---:|---:|---:|---:|---:|"]
            for side, s in n["sides"].items():
                phases = [
                    f"{s[k]:.3f}" if s.get(k) is not None else ""
                    for k in ("generate_s", "hf_generate_s", "update_s")
                ]
                lines.append(
                    f"| {side} | {s['step_s']:.3f} | {s['round_min_s']:.3f}-{s['round_max_s']:.3f} | "
                    f"{' | '.join(phases)} | {s['peak_mb']:.0f} | {s['steps']} |"
                )
            if "ratio_per_round" in n:
                lines += ["", f"ours / TRL per round: {_per_round(n['ratio_per_round'])}"]
            if "overhead_share_per_round" in n:
                lines += ["", f"overhead per round: {_per_round(n['overhead_share_per_round'], True)}"]
        elif r["stage"] == "profile":
            lines += ["", "## profile: per side and phase, per measured step", ""]
            lines.append(bench_probe.table(n["phases"], "profile"))
    for r in report["stages"]:
        if r["status"] == "failed":
            lines += ["", f"## {r['stage']}: {r.get('reason')}", "", "```", r.get("tail", "")[-1500:], "```"]
    return "\n".join(lines) + "\n"
