"""The math-verify worker process: parse + verify one (answer, gold) pair at a time.

Runs in its own interpreter (math-verify's timeouts use SIGALRM, which only works on a process's main
thread, and a hostile answer can spin in C code that no signal interrupts). The parent
(``rewards/pool.py``) enforces the hard per-answer wall-clock bound by killing the process; here a
soft alarm at a fraction of that bound stops pure-Python work early so that most slow answers cost
no restart. math-verify's own timeouts are off and its loggers silenced: on a timeout they log the
whole offending string.

Protocol on the connection: the worker sends ``("ready", pid)``, then receives lists of tasks
``(key, answer, gold)`` and sends one ``(key, score, status)`` per task, status in ``ok``,
``timeout``, ``error``. ``None`` or a closed pipe ends it.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import warnings

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from nsr_lightning.rewards.extract import strip_percent

_EXTRACTION = (LatexExtractionConfig(), ExprExtractionConfig())


class SoftTimeout(BaseException):
    """Raised by the alarm; a BaseException so that math-verify's `except Exception` can't eat it."""


_armed = False


def _on_alarm(signum, frame) -> None:
    if _armed:
        raise SoftTimeout()


def _parse(answer: str) -> list:
    """math-verify's view of a boxed answer's content (sympy objects, then the raw string).

    Percent signs and words are dropped first (`strip_percent`), as a grader reads "25\\%" or
    "25 percent" against a gold of 25; the exact-match shortcut in math.py drops them too.
    """
    answer = strip_percent(answer)
    return parse("\\boxed{" + answer + "}", extraction_config=_EXTRACTION, parsing_timeout=None)


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> list:
    return _parse(gold)


def _undefined(parsed: list) -> bool:
    """Whether a parsed answer divides by zero or holds nan / zoo (`1/0`, `4 0/0`): such an
    answer is never right. Checked on the structure, nothing is evaluated; sympy's simplify
    reads `0 - 4*0/0` as 0 in some runs and nan in others (its candidates' order), so the
    verdict would change from run to run, even under a fixed hash seed."""
    from sympy import Basic, Pow, S

    for x in parsed:
        if isinstance(x, Basic) and (
            x.has(S.NaN, S.ComplexInfinity) or any(p.base.is_zero and p.exp.is_negative for p in x.atoms(Pow))
        ):
            return True
    return False


def score_one(answer: str, gold: str, soft_timeout_s: float) -> tuple[float, str]:
    """(1.0 if math-verify says ``answer`` equals ``gold`` else 0.0, status)."""
    global _armed
    try:
        _armed = True
        if soft_timeout_s > 0:
            signal.setitimer(signal.ITIMER_REAL, soft_timeout_s)
        gold_parsed, parsed = _parse_gold(gold), _parse(answer)
        ok = (
            bool(gold_parsed) and not _undefined(parsed) and verify(gold_parsed, parsed, timeout_seconds=None)
        )
        result = (1.0 if ok else 0.0, "ok")
    except SoftTimeout:
        result = (0.0, "timeout")
    except BaseException:  # RecursionError, MemoryError, anything sympy throws: a wrong answer
        result = (0.0, "error")
    finally:
        _armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
    return result


def _quiet() -> None:
    for name in ("math_verify", "latex2sympy2_extended", "sympy"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    import math_verify.grader
    import math_verify.parser

    math_verify.parser.TIMEOUT_WARNING_SHOWN = True  # "timeout disabled" is deliberate here
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True


def _limit_memory(memory_limit_mb: int) -> None:
    if memory_limit_mb <= 0:
        return
    try:
        import resource

        limit = memory_limit_mb * 1024 * 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or hard > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):  # not on this platform: the parent's kill still bounds time
        pass


def _limit_cpu(seconds: int) -> None:
    """Let the kernel end this process after ``seconds`` more CPU seconds (SIGXCPU needs no GIL).

    The parent kills a stuck worker long before; this bound only matters when the parent is gone
    while the worker spins in C code and cannot notice the closed socket.
    """
    try:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        limit = int(usage.ru_utime + usage.ru_stime) + seconds
        if hard == resource.RLIM_INFINITY or hard > limit:
            resource.setrlimit(resource.RLIMIT_CPU, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass


def serve(conn, soft_timeout_s: float, memory_limit_mb: int) -> None:
    """Worker main loop (the target of the pool's processes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which shuts us down
    signal.signal(signal.SIGALRM, _on_alarm)
    warnings.simplefilter("ignore")  # a warning could echo the offending input
    _quiet()
    _limit_memory(memory_limit_mb)
    cpu_budget = max(30, int(10 * soft_timeout_s) + 1)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            tasks = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if tasks is None:
            return
        for key, answer, gold in tasks:
            _limit_cpu(cpu_budget)
            score, status = score_one(answer, gold, soft_timeout_s)
            try:
                conn.send((key, score, status))
            except (BrokenPipeError, OSError):
                return


if __name__ == "__main__":  # python -m nsr_lightning.rewards.math_worker FD SOFT_TIMEOUT_S MEMORY_MB
    from multiprocessing.connection import Connection

    serve(Connection(int(sys.argv[1])), float(sys.argv[2]), int(sys.argv[3]))
