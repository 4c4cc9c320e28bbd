"""Evaluation as in the paper (section 3): n samples per problem, unbiased pass@k per data set.

``evaluate(...)`` samples n responses for every problem of each data set, scores them with the
reward, and writes under ``out_dir``::

    settings.json              what was evaluated, how (checked again on resume)
    <dataset>/results.jsonl    one line per problem: id, gold, n, c (correct), distinct (distinct
                               correct responses: a diversity measure), extracted answers
    <dataset>/pass_at_k.csv    k, pass@k for k = 1, 2, 4, ..., n
    pass_at_k.png              the curves, one line per data set
    summary.json               everything above in one file, plus timings and reward counters

Problems go to the engine in fixed chunks, each with a seed that depends only on (seed, data
set, chunk index), and a chunk's lines are appended to results.jsonl when it is done. So an
interrupted evaluation, re-run with the same out_dir, skips the finished chunks and ends with the
same results as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from nsr_lightning.config_rules import check
from nsr_lightning.errors import UserError
from nsr_lightning.metrics import pass_at_k_table
from nsr_lightning.metrics.report import format_table, plot_pass_at_k
from nsr_lightning.rewards.extract import extract_boxed
from nsr_lightning.rollout import SamplingConfig
from nsr_lightning.streams import Stream, stream_seed

log = logging.getLogger(__name__)
_ANSWER_CHARS = 200  # extracted answers are stored cut to this length


def sample_and_score(engine, model, reward, rows: list[dict], *, n: int, sampling: SamplingConfig, seed: int):
    """n responses for each row's ``prompt_ids``, scored against its ``answer``.

    Returns (texts, scores): both of length len(rows) * n, row-major (row i's samples together).
    Shared by ``evaluate`` and the validation callback (``PassAtKCallback``).
    """
    batch = engine.generate(model, [r["prompt_ids"] for r in rows], n=n, sampling=sampling, seed=seed)
    golds = [r["answer"] for r in rows for _ in range(n)]
    return batch.texts, [float(s) for s in reward(batch.texts, golds)]


def chunk_seed(seed: int, dataset: str, chunk: int) -> int:
    """Seed of one chunk of problems: a function of (seed, data set, chunk index) only."""
    return stream_seed(seed, Stream.EVALUATE, step=chunk, index=dataset)


def read_results(path: str, n: int) -> dict[str, dict]:
    """Finished problems of a results file by id. A torn last line (a write cut short by an
    interruption) is dropped from the file; a record with another n is an error."""
    if not os.path.exists(path):
        return {}
    done, good_bytes = {}, 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
                if not line.endswith(b"\n"):
                    raise ValueError("torn line")
            except ValueError:
                break
            if record.get("n") != n:
                raise UserError(f"{path}: line {number} has n={record.get('n')}, this evaluation n={n}")
            done[str(record["id"])] = record
            good_bytes += len(line)
    if good_bytes < os.path.getsize(path):
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
    return done


def check_settings(out_dir: str, settings: dict) -> None:
    """Write settings.json, or check that a previous (interrupted) run used the same settings."""
    path = os.path.join(out_dir, "settings.json")
    if os.path.exists(path):
        with open(path) as f:
            before = json.load(f)
        changed = [k for k in settings if k in before and before[k] != settings[k]]
        if changed:
            diffs = "; ".join(f"{k}: {before[k]!r} before, {settings[k]!r} now" for k in changed)
            raise UserError(
                f"{out_dir} holds an evaluation with other settings ({diffs}); "
                "resume with the same settings or choose another run_dir"
            )
    os.makedirs(out_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(settings, f, indent=1)


class _Progress:
    """A tqdm bar on a terminal, else a log line at most every 10 s (and at the end)."""

    def __init__(self, name: str, total: int, done: int) -> None:
        self.name, self.total, self.done, self.last = name, total, done, 0.0
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=name, unit="problem", leave=True)
        elif done:
            print(f"[{name}] resuming: {done}/{total} problems already done", file=sys.stderr, flush=True)

    def update(self, count: int, correct: int, samples: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            self.bar.set_postfix(correct=f"{correct / max(samples, 1):.3f}")
        elif time.monotonic() - self.last > 10 or self.done == self.total:
            self.last = time.monotonic()
            print(
                f"[{self.name}] {self.done}/{self.total} problems, correct ratio {correct / max(samples, 1):.3f}",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def evaluate_dataset(
    name: str,
    rows: list[dict],
    *,
    engine,
    model,
    reward,
    n: int,
    sampling,
    seed: int,
    chunk_size: int,
    out_dir: str,
) -> list[dict]:
    """Per-problem records of one data set, in problem order; resumes from results.jsonl."""
    os.makedirs(os.path.join(out_dir, name), exist_ok=True)
    path = os.path.join(out_dir, name, "results.jsonl")
    done = read_results(path, n)
    ids = [str(r["id"]) for r in rows]
    stale = set(done) - set(ids)
    if stale:
        raise UserError(f"{path} has problems that are not in data set {name} (e.g. {sorted(stale)[0]!r})")
    progress = _Progress(name, len(rows), len(done))
    correct = samples = 0
    try:
        for index, start in enumerate(range(0, len(rows), chunk_size)):
            chunk = rows[start : start + chunk_size]
            if all(str(r["id"]) in done for r in chunk):
                continue
            texts, scores = sample_and_score(
                engine, model, reward, chunk, n=n, sampling=sampling, seed=chunk_seed(seed, name, index)
            )
            lines = []
            for i, row in enumerate(chunk):
                mine = range(i * n, (i + 1) * n)
                answers = [extract_boxed(texts[j]) for j in mine]
                record = {
                    "id": str(row["id"]),
                    "gold": row["answer"],
                    "n": n,
                    "c": sum(scores[j] > 0 for j in mine),
                    "distinct": len({texts[j].strip() for j in mine if scores[j] > 0}),
                    "answers": [a if a is None else a[:_ANSWER_CHARS] for a in answers],
                }
                done[record["id"]] = record
                lines.append(json.dumps(record) + "\n")  # ASCII: lone surrogates stay escaped
                correct += record["c"]
            samples += n * len(chunk)
            with open(path, "a", encoding="utf-8") as f:
                f.write("".join(lines))
            progress.update(len(chunk), correct, samples)
    finally:
        progress.close()
    return [done[i] for i in ids]


def evaluate(
    datasets: dict[str, list[dict]],
    *,
    engine,
    model,
    reward,
    n: int,
    sampling: SamplingConfig,
    seed: int,
    out_dir: str,
    chunk_size: int,
    settings: dict,
    loggers: tuple = (),
) -> dict:
    """Evaluate every data set (name -> encoded rows) and write the outputs; returns the summary."""
    check("n", n)
    check("chunk_size", chunk_size)
    check_settings(out_dir, settings)
    engine.sync_weights(model)
    t0 = time.perf_counter()
    summary = {"settings": settings, "datasets": {}}
    results = {}
    for name, rows in datasets.items():
        if not rows:
            raise UserError(f"data set {name} has no problems")
        records = evaluate_dataset(
            name, rows, engine=engine, model=model, reward=reward, n=n, sampling=sampling,
            seed=seed, chunk_size=chunk_size, out_dir=out_dir,
        )  # fmt: skip
        table = pass_at_k_table([(r["n"], r["c"]) for r in records])
        results[name] = table
        with open(os.path.join(out_dir, name, "pass_at_k.csv"), "w") as f:
            f.write("k,pass@k\n" + "".join(f"{k},{v:.6f}\n" for k, v in table.items()))
        summary["datasets"][name] = {
            "problems": len(records),
            "samples": sum(r["n"] for r in records),
            "correct": sum(r["c"] for r in records),
            "pass@k": {str(k): v for k, v in table.items()},
            "results": os.path.join(name, "results.jsonl"),
        }
    summary["elapsed_s"] = round(time.perf_counter() - t0, 3)
    summary["reward"] = {"timeouts": getattr(reward, "timeouts", 0), **getattr(reward, "stats", {})}
    title = f"pass@k, n={n}, T={sampling.temperature}"
    if plot_pass_at_k(results, os.path.join(out_dir, "pass_at_k.png"), title=title):
        summary["plot"] = "pass_at_k.png"
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    _log(loggers, results, os.path.join(out_dir, "pass_at_k.png"))
    print(
        format_table([{"tag": "evaluate", "dataset": k, "pass@k": v} for k, v in results.items()]), flush=True
    )
    return summary


def _log(loggers, results: dict[str, dict[int, float]], plot: str) -> None:
    from nsr_lightning.metrics.report import log_wandb_curve

    metrics = {f"eval/{name}/pass@{k}": v for name, table in results.items() for k, v in table.items()}
    for logger in loggers:
        logger.log_metrics(metrics, step=0)
        if type(logger).__name__ == "WandbLogger":
            log_wandb_curve(logger, results, step=0, prefix="eval")
            if os.path.exists(plot):
                import wandb

                logger.experiment.log({"eval/pass@k_plot": wandb.Image(plot)})
        logger.save()
        logger.finalize("success")
