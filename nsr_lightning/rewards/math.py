"""MathVerifyReward: the paper's verifier. Last ``\\boxed{}`` answer vs gold, via math-verify.

1.0 when the content of the response's last ``\\boxed{...}`` (or ``\\fbox{...}``) is
mathematically equal to the gold answer (paper, section 3: fractions, decimals, radicals,
intervals, sets, tuples, matrices, equations such as ``x=5``, degrees, text), else 0.0.

Safety: scoring runs in worker processes (``rewards/pool.py``) with a hard wall-clock bound per
answer; a stuck worker is killed and replaced, its answer scores 0 and is counted in
``timeouts``. Answers longer than ``max_answer_chars`` or not valid Unicode score 0 without being
parsed. Logs show at most a short, escaped head of an offending answer, never the whole string.

Speed: identical (answer, gold) pairs are scored once (n samples of a problem often agree), an
exact match after normalisation (or two integers) skips the workers, and tasks travel to workers in chunks.
"""

from __future__ import annotations

import logging
import os
import re

from nsr_lightning.config_rules import check_group
from nsr_lightning.rewards.extract import extract_boxed, gold_answer, normalize_answer, preview
from nsr_lightning.rewards.pool import WorkerPool

__all__ = ["MathVerifyReward"]

log = logging.getLogger(__name__)
_INT = re.compile(r"[+-]?[0-9]{1,30}")  # ASCII digits only: str.isdigit accepts more
_MAX_WARNINGS = 10  # per reward object; later events are only counted


def _shortcut(answer: str, gold: str) -> float | None:
    """1.0 for equal normal forms, a plain comparison for two integer literals, else None."""
    a, g = normalize_answer(answer), normalize_answer(gold)
    if a == g != "":
        return 1.0
    if _INT.fullmatch(a) and _INT.fullmatch(g):
        return 1.0 if int(a) == int(g) else 0.0
    return None


def _valid_text(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


class MathVerifyReward:
    """``reward(responses, golds) -> list[float]``.

    Args (keyword only):
        num_workers: scoring processes (default: CPU count, at most 4).
        timeout_s: hard wall-clock bound per answer, enforced by killing the worker.
        max_answer_chars: longer boxed answers (and golds) score 0 unparsed.
        chunk_size: answers sent to a worker at a time.
        cache_size: (answer, gold) results kept; 0 disables the cache.
        memory_limit_mb: address-space limit of each worker (Linux; 0 = none).
    """

    name = "math"

    def __init__(
        self,
        *,
        num_workers: int | None = None,
        timeout_s: float = 5.0,
        max_answer_chars: int = 1000,
        chunk_size: int = 16,
        cache_size: int = 100_000,
        memory_limit_mb: int = 4096,
    ) -> None:
        check_group("reward", locals())
        self.num_workers = num_workers or max(1, min(4, os.cpu_count() or 1))
        self.timeout_s = float(timeout_s)
        self.max_answer_chars = int(max_answer_chars)
        self.chunk_size = int(chunk_size)
        self.cache_size = int(cache_size)
        self.memory_limit_mb = int(memory_limit_mb)
        self.stats = {"answers": 0, "cached": 0, "exact": 0, "verified": 0, "too_long": 0, "errors": 0}
        self.timeouts = 0  # answers that hit the time bound or whose worker died; scored 0
        self._warned = 0
        self._cache: dict[tuple[str, str], float] = {}
        self._pool: WorkerPool | None = None

    # ---- public -----------------------------------------------------------------------------
    def __call__(self, responses: list[str], golds: list[str]) -> list[float]:
        if len(responses) != len(golds):
            raise ValueError(f"MathVerifyReward: got {len(responses)} responses but {len(golds)} golds")
        return self.score_answers([extract_boxed(r) for r in responses], golds)

    def score_answers(self, answers: list[str | None], golds: list[str]) -> list[float]:
        """Scores of already extracted answers (None = no answer) against golds."""
        scores = [0.0] * len(answers)
        todo: dict[tuple[str, str], list[int]] = {}  # unique pair -> positions
        for i, (answer, gold) in enumerate(zip(answers, golds, strict=True)):
            self.stats["answers"] += 1
            gold = self._gold_text(gold)
            if answer is None or gold is None or not answer.strip():
                continue
            if len(answer) > self.max_answer_chars or not _valid_text(answer):
                self.stats["too_long"] += 1
                continue
            key = (answer, gold)
            if key in self._cache:
                self.stats["cached"] += 1
                scores[i] = self._cache[key]
            elif (shortcut := _shortcut(answer, gold)) is not None:
                self.stats["exact"] += 1
                scores[i] = self._remember(key, shortcut)
            else:
                todo.setdefault(key, []).append(i)
        if todo:
            keys = list(todo)
            for key, (score, status) in zip(keys, self._workers().run(keys), strict=True):
                self.stats["verified"] += 1
                if status in ("timeout", "crash"):
                    self.timeouts += 1
                    self._warn(status, key[0])
                elif status == "error":
                    self.stats["errors"] += 1
                for i in todo[key]:
                    scores[i] = self._remember(key, score)
        return scores

    @property
    def restarts(self) -> int:
        """Worker processes replaced after a timeout or a crash."""
        return self._pool.restarts if self._pool is not None else 0

    def close(self) -> None:
        """Stops the worker processes (they also stop at exit or when this object is collected)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> MathVerifyReward:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:  # copies and pickles get their own workers, lazily
        state = dict(self.__dict__)
        state["_pool"] = None
        return state

    # ---- helpers ----------------------------------------------------------------------------
    def _gold_text(self, gold) -> str | None:
        if isinstance(gold, bool) or not isinstance(gold, (str, int, float)):
            return None
        gold = gold_answer(str(gold))  # a full solution: all its boxes, as one answer
        if gold is None or len(gold) > self.max_answer_chars or not _valid_text(gold):
            return None
        return gold

    def _remember(self, key: tuple[str, str], score: float) -> float:
        if self.cache_size:
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[key] = score
        return score

    def _workers(self) -> WorkerPool:
        if self._pool is None:
            self._pool = WorkerPool(
                self.num_workers,
                timeout_s=self.timeout_s,
                soft_timeout_s=0.7 * self.timeout_s,
                memory_limit_mb=self.memory_limit_mb,
                chunk_size=self.chunk_size,
            )
        return self._pool

    def _warn(self, status: str, answer: str) -> None:
        self._warned += 1
        if self._warned <= _MAX_WARNINGS:
            what = "took longer than" if status == "timeout" else "crashed its worker within"
            log.warning(
                "math reward: an answer %s %.1f s and scored 0 (%s)%s",
                what,
                self.timeout_s,
                preview(answer),
                "; further ones are only counted (reward.timeouts)" if self._warned == _MAX_WARNINGS else "",
            )
