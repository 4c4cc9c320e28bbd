"""Exact verifier for the signed-sum task: last ``\\boxed{...}`` (or ``\\fbox{...}``) must hold the gold
integer.

Pure Python, no imports from outside ``rewards/`` (the extraction is shared), linear time and safe on
hostile input: megabyte strings, thousands of nested braces, lone surrogates never raise.
"""

from __future__ import annotations

from nsr_lightning.rewards.extract import extract_boxed

__all__ = ["SyntheticReward", "extract_boxed", "parse_int_literal"]

_MAX_INT_CHARS = 30
_DIGITS = frozenset("0123456789")


def parse_int_literal(text: str) -> int | None:
    """``int`` of a plain integer literal (optional sign, ASCII digits, <= 30 chars), else None."""
    if not isinstance(text, str):
        return None
    s = text.strip()
    if not s or len(s) > _MAX_INT_CHARS:
        return None
    body = s[1:] if s[0] in "+-" else s
    if not body or not set(body) <= _DIGITS:
        return None
    return int(s)


class SyntheticReward:
    """Binary reward: 1.0 when the last boxed answer equals ``int(gold)``, else 0.0.

    ``reward(responses, golds)`` never raises on any response string; it raises ValueError only
    when the two lists differ in length or a gold is not an integer literal.
    """

    name = "synthetic"

    def __call__(self, responses: list[str], golds: list[str]) -> list[float]:
        if len(responses) != len(golds):
            raise ValueError(
                f"SyntheticReward: got {len(responses)} responses but {len(golds)} golds; they must match"
            )
        out = []
        for response, gold in zip(responses, golds, strict=True):
            gold_int = parse_int_literal(str(gold))
            if gold_int is None:
                raise ValueError(f"SyntheticReward: gold answer {gold!r} is not an integer literal")
            out.append(self.score(response, gold_int))
        return out

    @staticmethod
    def score(response: str, gold: int) -> float:
        """Reward of one response against an integer gold."""
        try:
            boxed = extract_boxed(response)
            if boxed is None:
                return 0.0
            value = parse_int_literal(boxed)
            return 1.0 if value is not None and value == gold else 0.0
        except Exception:  # defensive: a reward must never crash the training loop
            return 0.0
