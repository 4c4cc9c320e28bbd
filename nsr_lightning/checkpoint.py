"""Checkpoints that are either complete or absent, and `ckpt_path=last`.

- `AtomicCheckpointIO`: Lightning's checkpoint writer, but each file is written to a temporary
  name in the same folder, flushed and fsync'ed, then renamed over the final name with
  `os.replace` (atomic on POSIX), and the folder is fsync'ed. A crash or SIGKILL mid-write leaves
  at most a `.<name>.tmp-<pid>` file, never a `*.ckpt` that looks complete but is not.
- `periodic_checkpoints`: a `ModelCheckpoint` every `checkpoint.every_n_steps` RL steps that
  keeps the newest `checkpoint.keep`.
- `find_last`: the newest complete checkpoint under a run folder (by its step).

A sharded checkpoint (FSDP2: a folder of per-rank shards) counts as complete once it holds both
the distributed checkpoint's `.metadata` (itself written by rename, after every shard) and
Lightning's `meta.pt` (written last, by rank 0).
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from nsr_lightning.config_rules import check_group
from nsr_lightning.errors import UserError

_STEP = re.compile(r"step=(\d+)")


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """torch.save(obj, path) through a temporary file, fsync and os.replace."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """`write(f)` into a temporary file beside `path` (opened "wb"), fsync, os.replace over
    `path`, fsync the folder: `path` is the old file or the new one, never part of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a power cut
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves are atomic (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_torch_save(checkpoint, path)


class PeriodicCheckpoint(ModelCheckpoint):
    """ModelCheckpoint every N steps that also saves the last step when training ends (Lightning's
    step and epoch triggers are mutually exclusive, and a run stopped by max_steps ends mid-epoch)."""

    def on_train_end(self, trainer, pl_module) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


def periodic_checkpoints(every_n_steps: int, keep: int) -> ModelCheckpoint:
    """A checkpoint every `every_n_steps` RL steps (and at the end); the newest `keep` stay."""
    check_group("checkpoint", {"every_n_steps": every_n_steps, "keep": keep})
    # Lightning's note that a manual-optimization checkpoint holds the state after the step's
    # updates: that is the state a resumed run must continue from.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    return PeriodicCheckpoint(
        every_n_train_steps=every_n_steps or None,
        save_top_k=keep,
        monitor="step",  # the newest `keep` by step
        mode="max",
    )


def is_complete(path: Path) -> bool:
    if path.is_file():
        return path.suffix == ".ckpt" and not path.name.startswith(".")
    return (path / ".metadata").is_file() and (path / "meta.pt").is_file()


def checkpoint_step(path: Path) -> int:
    """The RL step a checkpoint was taken after, from its name (`epoch=0-step=20.ckpt`)."""
    match = _STEP.search(path.name)
    return int(match.group(1)) if match else -1


def find_last(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint (highest step, then newest file) anywhere under run_dir."""
    candidates = [p for p in Path(run_dir).rglob("*.ckpt") if is_complete(p)]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (checkpoint_step(p), p.stat().st_mtime_ns))


def resolve_ckpt_path(ckpt_path: str | None, run_dir: str) -> str | None:
    """`last` -> the newest complete checkpoint of run_dir (None when there is none yet)."""
    if ckpt_path is None or str(ckpt_path) != "last":
        if ckpt_path is not None and not Path(ckpt_path).exists():
            raise UserError(
                f"ckpt_path: no checkpoint at {ckpt_path} (or ckpt_path=last: the newest of run_dir)"
            )
        return ckpt_path
    last = find_last(run_dir)
    return str(last) if last is not None else None
