"""What the evaluation callbacks share: finding the RolloutCallback, writing their JSON files."""

from __future__ import annotations

import json
import os

import lightning as L
from nsr_lightning.callbacks.rollout import RolloutCallback

from nsr_lightning.checkpoint import atomic_write


def rollout_callback(trainer: L.Trainer, needed_by: str) -> RolloutCallback:
    """The trainer's RolloutCallback (its engine and reward); `needed_by` names the asker in the error."""
    for cb in trainer.callbacks:
        if isinstance(cb, RolloutCallback):
            return cb
    raise RuntimeError(f"{needed_by} needs the RolloutCallback (its engine and reward)")


def write_json(path: str | os.PathLike, data) -> None:
    """`data` as indented JSON at `path` (folders made), atomically: a temporary file, fsync and
    os.replace, so a reader or a crash never sees half a file."""
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=1).encode()))


def rank_rows(trainer: L.Trainer, rows: list) -> tuple[list, bool]:
    """This rank's share of `rows` (every world_size-th, from its rank), and whether it is real.
    A rank left without a row (fewer rows than ranks) gets the first row as a stand-in whose
    results the caller drops: it still joins every generate and forward, which are collectives
    under FSDP2 (a rank that skipped them would hang the others)."""
    mine = rows[trainer.global_rank :: trainer.world_size]
    return (mine, True) if mine or not rows else (rows[:1], False)
