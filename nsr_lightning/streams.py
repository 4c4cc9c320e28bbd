"""Every random stream of a run, named in one table.

A stream's seed is a hash of (run seed, stream, rank, step, index), so two purposes never share
a seed (a stream is a name, not a small integer salt that a round counter can run into), and a
run resumed at step s draws exactly what an uninterrupted run draws there.
"""

from __future__ import annotations

import hashlib
from enum import Enum


class Stream(str, Enum):
    """One member per purpose; its value is mixed into the seed."""

    ROLLOUT = "rollout"  # the engine's sampling of a step; index = dynamic-sampling round (0 = first)
    PROMPTS = "prompts"  # fresh prompts drawn by dynamic sampling; index = round
    GLOBAL = "global"  # torch / random / numpy global state at the start of a step
    MINIBATCH_ORDER = "minibatch-order"  # the shuffle of kept samples into mini-batches; index = epoch
    TRAIN_ORDER = "train-order"  # the training set's order; step = epoch, rank unused (0)
    EVAL = "eval"  # pass@k sampling (step 0: the same draws before and after training)
    HELDOUT = "heldout"  # the held-out dynamics callback's samples
    EVALUATE = "evaluate"  # `evaluate`'s chunks of problems; step = chunk, index = data set name


def stream_seed(seed: int, stream: Stream, rank: int = 0, step: int = 0, index: int | str = 0) -> int:
    """A reproducible 63-bit seed for one draw of `stream` (a torch.Generator / manual_seed value)."""
    key = f"{int(seed)}|{Stream(stream).value}|{int(rank)}|{int(step)}|{index}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
