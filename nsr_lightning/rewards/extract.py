"""Answer extraction shared by every verifier: the content of the last ``\\boxed{...}``.

Pure Python, no imports from the rest of the project. Linear time and safe on hostile input
(megabyte strings, thousands of nested braces, lone surrogates): nothing here raises on a str.
"""

from __future__ import annotations

import re

__all__ = [
    "BOX_COMMANDS",
    "extract_all_boxed",
    "extract_boxed",
    "gold_answer",
    "normalize_answer",
    "preview",
    "strip_percent",
]

BOX_COMMANDS = ("\\boxed{", "\\fbox{")  # the paper's answer format, and its plain-TeX cousin

# Pieces a careful grader ignores: spacing commands, sizing, `$`, degrees, a trailing period.
_DROP = (
    "\\left",
    "\\right",
    "\\!",
    "\\,",
    "\\;",
    "\\:",
    "\\ ",
    "$",
    "^{\\circ}",
    "^\\circ",
    "\\circ",
)
_ALIASES = (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\displaystyle", ""))
# a trailing percent word, bare or in \text{} / \mathrm{}: "28 percent", "28\text{ pct.}"
_PERCENT_WORD = re.compile(
    r"\s*(?:\\(?:text|textrm|mathrm|mbox)\s*\{\s*)?(?<![a-z])(?:percentage|percent|pct)\.?\s*\}?\s*$",
    re.IGNORECASE,
)


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` or ``\\fbox{...}`` in ``text``, brace matched.

    Nested braces are allowed (``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``). Returns None when
    there is no box or when the last one is not closed (a truncated response has no answer).
    Runs in time linear in ``len(text)``: one reverse search per command and one forward scan.
    """
    if not isinstance(text, str):
        return None
    start, command = max((text.rfind(c), c) for c in BOX_COMMANDS)
    if start < 0:
        return None
    begin = start + len(command)
    end = _closing_brace(text, begin)
    return None if end is None else text[begin:end]


def _closing_brace(text: str, begin: int) -> int | None:
    """Index of the brace that closes the one opened just before ``begin``; None if unclosed."""
    depth = 1
    # Hop between braces with str.find (C speed on long brace-free runs); each cached position is
    # only recomputed once the scan has passed it, so the total work stays linear.
    pos = begin
    next_open = text.find("{", pos)
    next_close = text.find("}", pos)
    while next_close >= 0:
        if 0 <= next_open < next_close:
            depth += 1
            pos = next_open + 1
            next_open = text.find("{", pos)
        else:
            depth -= 1
            if depth == 0:
                return next_close
            pos = next_close + 1
            next_close = text.find("}", pos)
    return None


def extract_all_boxed(text: str) -> list[str]:
    """Contents of every closed ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``, left to right (a
    box inside a box is part of the outer one); an unclosed box ends the list."""
    found: list[str] = []
    pos = 0
    while isinstance(text, str):
        starts = [(i, c) for c in BOX_COMMANDS if (i := text.find(c, pos)) >= 0]
        if not starts:
            break
        start, command = min(starts)
        begin = start + len(command)
        end = _closing_brace(text, begin)
        if end is None:
            break
        found.append(text[begin:end])
        pos = end + 1
    return found


def gold_answer(text: str) -> str | None:
    """The answer in a gold field: the text itself, or, for a solution with boxes, the contents of
    all its boxes read as one answer (``\\boxed{1}`` and ``\\boxed{-2}``: "1, -2", the set
    math-verify reads in such a gold); None when it has no closed, non-empty box."""
    if "\\boxed" not in text and "\\fbox" not in text:
        return text.strip()
    boxes = [b.strip() for b in extract_all_boxed(text)]
    boxes = [b for b in boxes if b]
    return ", ".join(boxes) if boxes else None


def strip_percent(answer: str) -> str:
    """The answer without its percent sign or trailing percent word (``28\\%``, ``28 percent``,
    ``28 pct``, ``28 percentage`` -> ``28``), as a grader reads them against a gold of 28 or
    ``28\\%`` (math-verify alone reads 28% as 0.28, and the words as the string ``28\\%``)."""
    s = answer.replace("\\%", "").replace("%", "")
    head, tail = s[:-40], s[-40:]  # the word is at the end: a bounded search on hostile input
    return head + _PERCENT_WORD.sub("", tail)


def normalize_answer(answer: str) -> str:
    """A canonical spelling for an exact-match shortcut: no spaces, spacing commands, ``$``,
    degree signs, percent signs, ``\\text{}`` around the whole answer or trailing period;
    ``\\dfrac`` and ``\\tfrac`` read as ``\\frac``. Two answers with equal normal forms are equal;
    unequal forms say nothing (math-verify then decides)."""
    s = strip_percent(answer).strip()
    for old, new in _ALIASES:
        s = s.replace(old, new)
    for piece in _DROP:
        s = s.replace(piece, "")
    s = "".join(s.split())
    if s.startswith(("\\text{", "\\mathrm{", "\\textbf{")) and s.endswith("}"):
        inner = s[s.index("{") + 1 : -1]
        if "{" not in inner and "}" not in inner:
            s = inner
    return s.rstrip(".")


def preview(text: object, limit: int = 60) -> str:
    """A short, log-safe view of a possibly huge or invalid string: repr of its head + its size."""
    if not isinstance(text, str):
        return f"<{type(text).__name__}>"
    head = repr(text[:limit])  # repr escapes lone surrogates and control characters
    return head if len(text) <= limit else f"{head}... ({len(text)} chars)"
