"""Checkpoints that are either complete or absent, and `ckpt_path=last`.

- `AtomicCheckpointIO`: Lightning's checkpoint writer, but each file is written to a temporary
  name in the same folder, flushed and fsync'ed, then renamed over the final name with
  `os.replace` (atomic on POSIX), and the folder is fsync'ed. A crash or SIGKILL mid-write leaves
  at most a `.<name>.tmp-<pid>` file, never a `*.ckpt` that looks complete but is not.
- `periodic_checkpoints`: a `ModelCheckpoint` every `checkpoint.every_n_steps` RL steps that
  keeps the newest `checkpoint.keep`.
- Each checkpoint file gets a `<name>.sha256` beside it once it is in place (`sha256sum -c`
  reads it), removed with the checkpoint; the file is read back in 1 MiB chunks to hash it.
- `find_last`: the newest intact checkpoint under a run folder (by its step). Intact is judged by
  content: a file's zip archive is whole (its central directory reads and every member lies
  inside the file) and its bytes hash to its `.sha256` (a file without one, as written before
  these existed, is judged by its archive only); a newer one that is not is skipped with a line.
- `check_resumable`: a checkpoint's step against `trainer.max_steps`, and the objective and
  model shape it was saved with (`RUN_KEY`) against this run's, each refused in one line.

A sharded checkpoint (FSDP2: a folder of per-rank shards) counts as complete once it holds both
the distributed checkpoint's `.metadata` (itself written by rename, after every shard) and
Lightning's `meta.pt` (written last, by rank 0), and `meta.pt` is intact. Its shards are written
by torch.distributed.checkpoint, not through the checkpoint writer, so they have no `.sha256`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from nsr_lightning.config_rules import check_group
from nsr_lightning.errors import UserError, disk_full_error, is_disk_full

_STEP = re.compile(r"step=(\d+)")
RUN_KEY = "nsr_run"  # {"objective": name, "model": shape}: what a checkpoint was saved with
HASH_SUFFIX = ".sha256"  # beside each checkpoint file: "<hex digest>  <file name>"
_CHUNK = 1 << 20
_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> digest: hashed once per process


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
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, (OSError, RuntimeError)) and is_disk_full(e):
            raise disk_full_error(path, e) from None
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a power cut
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def hash_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + HASH_SUFFIX)


def sha256(path: str | os.PathLike) -> str:
    """The file's sha256, read in chunks (memoised by path, size and modification time)."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves are atomic and hashed (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        hash_path(path).unlink(missing_ok=True)  # never an old hash beside new content
        atomic_torch_save(checkpoint, path)
        line = f"{sha256(path)}  {Path(path).name}\n"
        atomic_write(hash_path(path), lambda f: f.write(line.encode()))

    def remove_checkpoint(self, path) -> None:
        super().remove_checkpoint(path)
        hash_path(path).unlink(missing_ok=True)


class PeriodicCheckpoint(ModelCheckpoint):
    """ModelCheckpoint every N steps that also saves the last step when training ends (Lightning's
    step and epoch triggers are mutually exclusive, and a run stopped by max_steps ends mid-epoch)."""

    def on_train_end(self, trainer, pl_module) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Stopped by SIGTERM (or a first Ctrl-C): Lightning raises between steps, so the state
        is that of the last completed step; save it unless that step is saved already."""
        if isinstance(exception, SIGTERMException) and not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))


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


def damage(path: Path) -> str | None:
    """Why a checkpoint is not whole (None: it is): by its content, not its name."""
    if path.name.startswith("."):
        return "a temporary file"
    if path.is_dir():
        missing = [n for n in (".metadata", "meta.pt") if not (path / n).is_file()]
        if missing:
            return f"a sharded checkpoint without {', '.join(missing)}"
        path = path / "meta.pt"
    elif path.suffix != ".ckpt":
        return "not a .ckpt file"
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.header_offset + info.compress_size > size:
                    return f"its archive is cut short ({info.filename} lies past the end of the file)"
    except (OSError, zipfile.BadZipFile) as e:
        return f"its archive is not whole ({e})"
    return _hash_damage(path)


def _hash_damage(path: Path) -> str | None:
    """Why the file's bytes are not those it was saved with (None: they are, or no hash was saved)."""
    saved = hash_path(path)
    if not saved.is_file():
        return None
    try:
        want = saved.read_text(encoding="ascii").split()[0]
        got = sha256(path)
    except (OSError, UnicodeDecodeError, IndexError) as e:
        return f"its hash file {saved.name} does not read ({e})"
    if got != want:
        return f"its content does not match the sha256 saved with it in {saved.name} (changed or corrupted since)"
    return None


def is_complete(path: Path) -> bool:
    return damage(path) is None


def checkpoint_step(path: Path) -> int:
    """The RL step a checkpoint was taken after, from its name (`epoch=0-step=20.ckpt`)."""
    match = _STEP.search(path.name)
    return int(match.group(1)) if match else -1


def _report(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def find_last(run_dir: str | os.PathLike, report: Callable[[str], object] | None = _report) -> Path | None:
    """The newest intact checkpoint (highest step, then newest file) anywhere under run_dir; each
    newer one that is not intact is skipped with a line through `report`."""
    paths = [p for p in Path(run_dir).rglob("*.ckpt") if not p.name.startswith(".")]
    for path in sorted(paths, key=lambda p: (checkpoint_step(p), p.stat().st_mtime_ns), reverse=True):
        why = damage(path)
        if why is None:
            return path
        if report is not None:
            report(f"ckpt_path=last: skipping {path}: {why}; falling back to the newest intact one")
    return None


def resolve_ckpt_path(
    ckpt_path: str | None, run_dir: str, report: Callable[[str], object] | None = None
) -> str | None:
    """`last` -> the newest intact checkpoint of run_dir (None when there is none yet)."""
    if ckpt_path is None or str(ckpt_path) != "last":
        if ckpt_path is not None:
            path = Path(ckpt_path)
            if not path.exists():
                raise UserError(
                    f"ckpt_path: no checkpoint at {ckpt_path} (or ckpt_path=last: the newest of run_dir)"
                )
            if path.is_file() and path.suffix in (".yaml", ".json", ".safetensors", ".bin"):
                raise UserError(
                    f"ckpt_path: {ckpt_path} is a {path.suffix} file, not a training checkpoint; give a "
                    "*.ckpt file or folder of a fit run (or ckpt_path=last); to start from a model's "
                    "weights instead, set model.path to its folder"
                )
            why = damage(path)
            if why is not None:
                raise UserError(f"ckpt_path: {ckpt_path} is not a whole checkpoint: {why}")
        return ckpt_path
    last = find_last(run_dir, report)
    return str(last) if last is not None else None


def read_meta(ckpt_path: str) -> dict:
    """The checkpoint's plain entries (its step, what it was saved with), tensors left on disk;
    weights-only (pickle.UnpicklingError for a file holding other objects)."""
    path = Path(ckpt_path)
    path = path / "meta.pt" if path.is_dir() else path
    return torch.load(path, map_location="cpu", mmap=True, weights_only=True)


def check_resumable(meta: dict, ckpt_path: str, max_steps: int, run: dict) -> None:
    """Refuse a checkpoint past trainer.max_steps, or one saved by another objective or model."""
    step = int(meta.get("global_step", 0))
    if max_steps != -1 and step > max_steps:
        raise UserError(
            f"trainer.max_steps={max_steps} is below the step of the checkpoint {ckpt_path} ({step}); "
            f"set trainer.max_steps >= {step} to continue it, or start a new run_dir"
        )
    saved = meta.get(RUN_KEY)
    if saved is None:
        return
    for what in ("objective", "model"):
        if saved.get(what) != run.get(what):
            raise UserError(
                f"ckpt_path: {ckpt_path} was saved by objective {saved.get('objective')} with model "
                f"{describe(saved.get('model'))}; this run is objective {run.get('objective')} with model "
                f"{describe(run.get('model'))}: use that run's objective= and model=, or another run_dir"
            )


def describe(shape: dict | None) -> str:
    if not shape:
        return "?"
    return ", ".join(f"{k}={v}" for k, v in shape.items())
