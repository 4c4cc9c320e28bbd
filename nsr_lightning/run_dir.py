"""A run folder's life: one run at a time (a lock file), a finished run is not started over by
accident, the final model appears whole or not at all, and the command that resumes a run.

- `RunLock`: `<run_dir>/.lock` holds the owner's pid and host, created with O_EXCL. A lock whose
  pid is dead on this host is stale (a SIGKILLed run) and is taken over with a line; any other
  lock refuses the run. Only the launching process (global rank 0, not one of Lightning's
  child processes) takes the lock; it is removed when that process exits.
- `check_not_finished`: a `fit` into a run_dir that already holds a run (a final model or a
  checkpoint) needs `ckpt_path=last` (continue it) or another run_dir.
- `save_final_model`: written to a temporary folder, then renamed to `final_model/`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import sys
import threading
from pathlib import Path

from nsr_lightning.errors import UserError, disk_full_error, is_disk_full

LOCK = ".lock"
FINAL = "final_model"


def set_signal(signum: int, handler):
    """signal.signal where Python allows it (the main thread): the previous handler, else None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signum, handler)


def is_launcher() -> bool:
    """True in the process that started the run (not a Lightning child rank, not rank > 0)."""
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return False
    return os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class RunLock:
    def __init__(self, run_dir: str) -> None:
        self.path = Path(run_dir) / LOCK
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(2):  # a second try after taking over a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            atexit.register(self.release)
            return
        raise UserError(f"run_dir: could not take the lock {self.path}")

    def _take_over_if_stale(self) -> None:
        try:
            pid_text, host = self.path.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):  # being written right now, or garbage: treat as held
            pid, host = -1, "?"
        if host == socket.gethostname() and pid > 0 and not _alive(pid):
            print(f"run_dir: taking over the stale lock of pid {pid} (no longer running)", file=sys.stderr)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        raise UserError(
            f"run_dir: {self.path.parent} is in use by another run (pid {pid} on {host}, lock file "
            f"{self.path}); wait for it to end, or choose another run_dir"
            + ("" if host == socket.gethostname() else " (if that run is gone, delete the lock file)")
        )

    def release(self) -> None:
        if self.held:
            self.held = False
            with contextlib.suppress(OSError):
                self.path.unlink()


def check_not_finished(cfg) -> None:
    """A fit without ckpt_path into a run_dir that holds a run: refused, naming both choices."""
    from nsr_lightning.checkpoint import find_last

    if cfg.get("ckpt_path") is not None:
        return
    run_dir = Path(cfg.run_dir)
    if (run_dir / FINAL).is_dir():
        what = f"a finished run ({FINAL}/)"
    elif (last := find_last(run_dir, report=None)) is not None:
        what = f"a run's checkpoints ({last.name})"
    else:
        return
    raise UserError(
        f"run_dir: {run_dir} already holds {what}; add ckpt_path=last to continue it, or choose "
        "another run_dir (or delete this one) to start over"
    )


def save_final_model(model, tokenizer, state, run_dir: str) -> str:
    """`model.save_pretrained` + the tokenizer into `<run_dir>/.final_model.tmp-<pid>`, then
    renamed to `final_model/` (an older one is replaced only once the new one is whole)."""
    final = Path(run_dir) / FINAL
    tmp = Path(run_dir) / f".{FINAL}.tmp-{os.getpid()}"
    old = Path(run_dir) / f".{FINAL}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, state_dict=state)
        tokenizer.save_pretrained(tmp)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            os.replace(old, final)
        if is_disk_full(e):
            raise disk_full_error(final, e) from None
        raise
    shutil.rmtree(old, ignore_errors=True)
    return str(final)


def resume_command(command: str, overrides: list[str], run_dir: str) -> str:
    """The command line that continues this run: the same overrides, ckpt_path=last, run_dir."""
    keep = [o for o in overrides if not o.lstrip("+").startswith(("ckpt_path=", "run_dir="))]
    args = (
        [command, *keep]
        + (["ckpt_path=last"] if command == "fit" else [])
        + [f"run_dir={hydra_quote(run_dir)}"]
    )
    return "python -m nsr_lightning " + " ".join(shlex.quote(a) for a in args)


def hydra_quote(value: str) -> str:
    """`value` as a Hydra override value that reads back as exactly this string (spaces, quotes,
    `=`, `,`, brackets, non-ASCII, backslashes, a literal `${`): single-quoted, escaped for
    OmegaConf (a backslash run before `${` doubled, plus one) then for Hydra's quoted strings (the
    same before `${` and `'`, and a trailing backslash run doubled). Shell-quote the override after."""
    value = re.sub(r"(\\*)(\$\{)", lambda m: m.group(1) * 2 + "\\" + m.group(2), value)
    value = re.sub(r"(\\*)(\$\{|')", lambda m: m.group(1) * 2 + "\\" + m.group(2), value)
    value = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, value)
    return f"'{value}'"
