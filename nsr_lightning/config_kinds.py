"""What a config rule accepts, as (text said in the message, test): the value kinds of the
table in nsr_lightning/config_rules.py (integer(low), number(low), between(low, high), one of
names, or null, true / false, a device, ...)."""

from __future__ import annotations

import math
from collections.abc import Callable


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _note(text: str, note: str) -> str:
    return f"{text} ({note})" if note else text


def integer(low: int, note: str = "") -> tuple[str, Callable]:
    return _note(f"an integer >= {low}", note), lambda v: is_int(v) and v >= low


def number(low: float, *, above: bool = False, note: str = "", noun: str = "a number"):
    text = f"{noun} {'>' if above else '>='} {low:g}"
    return _note(text, note), lambda v: is_number(v) and (v > low if above else v >= low)


def between(low: float, high: float, brackets: str = "[]", noun: str = "a number"):
    """A number in [low, high], (low, high], [low, high) as `brackets` says."""
    lo_ok = (lambda v: v >= low) if brackets[0] == "[" else (lambda v: v > low)
    hi_ok = (lambda v: v <= high) if brackets[1] == "]" else (lambda v: v < high)
    text = f"{noun} in {brackets[0]}{low:g}, {high:g}{brackets[1]}"
    return text, lambda v: is_number(v) and lo_ok(v) and hi_ok(v)


def or_null(rule: tuple[str, Callable], note: str) -> tuple[str, Callable]:
    text, ok = rule
    return f"{text}, or null ({note})", lambda v: v is None or ok(v)


def one_of(*names) -> tuple[str, Callable]:
    text = "one of " + ", ".join(map(str, names))
    return text, lambda v: isinstance(v, (str, int)) and not isinstance(v, bool) and v in names


BOOL = ("true or false", lambda v: isinstance(v, bool))


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def device_ok(v) -> bool:
    if v in ("auto", "cpu"):
        return True
    name, _, index = str(v).partition(":")
    return name == "cuda" and (not index or index.isdigit()) and cuda_available()


def float16_on_cpu(dtype, where) -> bool:  # where: trainer.accelerator (fit) or device (evaluate)
    return dtype == "float16" and (where == "cpu" or (where == "auto" and not cuda_available()))


BETAS = ("two numbers in [0, 1)", lambda v: len(v) == 2 and all(is_number(b) and 0 <= b < 1 for b in v))
PATH_OR_NULL = ("a path, or null (the policy's)", lambda v: v is None or isinstance(v, str))
FINITE = "a finite number"  # the objectives' wording
SAMPLING = {  # rollout.sampling.* (fit), sampling.* (evaluate), callbacks.pass_at_k.*
    "temperature": number(0, note="0 = greedy"),
    "top_p": between(0, 1, "(]"),
    "top_k": integer(0, "0 = off"),
    "max_new_tokens": integer(1),
}


def under(prefix: str, rules: dict) -> list[tuple]:
    return [(f"{prefix}.{name}", *rule) for name, rule in rules.items()]
