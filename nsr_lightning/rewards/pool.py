"""A pool of scoring processes with a hard wall-clock bound per task, usable from any thread.

The parent sends chunks of tasks to each worker and receives one result per task. A worker that
has not answered its current task within ``timeout_s`` of starting it (measured here, in the
parent, by the clock) is killed and replaced; that task scores 0 with status ``timeout`` and the
rest of its chunk goes back to the queue. A worker that dies (segfault, out of memory) is treated
the same way, with status ``crash``. No signals are used in the parent, so any thread may call.

Workers are fresh interpreters (``python -m nsr_lightning.rewards.math_worker``) talking over a
socket pair: nothing is forked from a multithreaded torch process, and unlike multiprocessing's
spawn / forkserver they never re-import the caller's ``__main__`` (a script without a main guard,
a script read from stdin). They exit when the socket closes (so also when the parent dies), and
are stopped by ``close()``, by garbage collection of the pool, or at interpreter exit.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from multiprocessing.connection import Connection, wait
from pathlib import Path

__all__ = ["WorkerPool"]

_WORKER_MODULE = "nsr_lightning.rewards.math_worker"
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder that holds nsr_lightning/
_MAX_START_FAILURES = 3
_HASH_SEED = "0"  # every worker's PYTHONHASHSEED, whatever the parent's


class _Worker:
    def __init__(self, args: tuple) -> None:
        parent, child = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        # a fixed hash seed: some verdicts (math-verify on `4 0/0` vs 0) follow set / dict order
        env["PYTHONHASHSEED"] = _HASH_SEED
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", _WORKER_MODULE, str(child.fileno()), *map(str, args)],
                pass_fds=[child.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
            )
        finally:
            child.close()
        self.conn = Connection(parent.detach())
        self.ready = False
        self.chunk: list[int] | None = None  # task indices being worked on
        self.done = 0  # how many of them have been answered
        self.since = time.monotonic()  # start of the current task (or of the process)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()
        self.conn.close()


def _stop_all(workers: list[_Worker]) -> None:
    for w in workers:
        w.stop()
    workers.clear()


class WorkerPool:
    """``run(tasks) -> [(score, status)]`` for tasks ``(answer, gold)``, in order."""

    def __init__(
        self,
        size: int,
        *,
        timeout_s: float,
        soft_timeout_s: float,
        memory_limit_mb: int,
        chunk_size: int = 16,
        startup_timeout_s: float = 120.0,
    ) -> None:
        self.size, self.timeout_s, self.chunk_size = size, timeout_s, chunk_size
        self.startup_timeout_s = startup_timeout_s
        self.args = (soft_timeout_s, memory_limit_mb)
        self.workers: list[_Worker] = []
        self.restarts = 0
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _stop_all, self.workers)

    def close(self) -> None:
        with self._lock:
            _stop_all(self.workers)

    def run(self, tasks: list[tuple[str, str]]) -> list[tuple[float, str]]:
        with self._lock:
            try:
                return self._run(tasks)
            except BaseException:  # Ctrl-C mid-call: busy workers would answer a later call's keys
                for w in [w for w in self.workers if w.chunk is not None or not w.ready]:
                    w.kill()
                    self.workers.remove(w)
                raise

    # ---- the event loop ---------------------------------------------------------------------
    def _run(self, tasks: list[tuple[str, str]]) -> list[tuple[float, str]]:
        results: list[tuple[float, str] | None] = [None] * len(tasks)
        queue = deque(
            list(range(i, min(i + self.chunk_size, len(tasks))))
            for i in range(0, len(tasks), self.chunk_size)
        )
        remaining = len(tasks)
        start_failures = 0
        while remaining:
            while len(self.workers) < min(self.size, remaining):
                self.workers.append(_Worker(self.args))
            now = time.monotonic()
            failed: list[tuple[_Worker, str]] = []
            for w in self.workers:
                if w.ready and w.chunk is None and queue:
                    chunk = queue.popleft()
                    try:
                        w.conn.send([(i, *tasks[i]) for i in chunk])
                        w.chunk, w.done, w.since = chunk, 0, now
                    except (OSError, ValueError):  # died while idle: nothing of it was lost
                        queue.appendleft(chunk)
                        failed.append((w, "crash"))
            deadline = min(
                (
                    w.since + (self.timeout_s if w.ready else self.startup_timeout_s)
                    for w in self.workers
                    if w.chunk is not None or not w.ready
                ),
                default=now + self.timeout_s,
            )
            wait([w.conn for w in self.workers], max(0.0, deadline - now))
            for w in self.workers:
                if any(w is f for f, _ in failed):
                    continue
                try:
                    while w.conn.poll():
                        msg = w.conn.recv()
                        if msg[0] == "ready":
                            w.ready, w.since, start_failures = True, time.monotonic(), 0
                            continue
                        key, score, status = msg
                        results[key] = (score, status)
                        remaining -= 1
                        w.done, w.since = w.done + 1, time.monotonic()
                        if w.done == len(w.chunk):
                            w.chunk = None
                except (EOFError, OSError):
                    failed.append((w, "crash"))
                    continue
                limit = self.timeout_s if w.ready else self.startup_timeout_s
                if not w.alive():
                    failed.append((w, "crash"))
                elif (w.chunk is not None or not w.ready) and time.monotonic() - w.since > limit:
                    failed.append((w, "timeout"))
            for w, status in failed:
                w.kill()
                self.workers.remove(w)
                self.restarts += 1
                if not w.ready:
                    start_failures += 1
                    if start_failures >= _MAX_START_FAILURES:
                        raise RuntimeError(
                            f"math reward: {start_failures} worker processes in a row failed to start "
                            f"(exit code {w.proc.returncode}); is math-verify installed and importable?"
                        )
                if w.chunk is not None and w.done < len(w.chunk):
                    results[w.chunk[w.done]] = (0.0, status)
                    remaining -= 1
                    if w.done + 1 < len(w.chunk):
                        queue.appendleft(w.chunk[w.done + 1 :])
        return results  # type: ignore[return-value]
