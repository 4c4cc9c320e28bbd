"""Answer extraction shared by every verifier: the content of the last ``\\boxed{...}``.

Pure Python, no imports from the rest of the project. Linear time and safe on hostile input
(megabyte strings, thousands of nested braces, lone surrogates): nothing here raises on a str.
"""

from __future__ import annotations

__all__ = ["BOX_COMMANDS", "extract_boxed", "normalize_answer", "preview"]

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
    "\\%",
    "%",
)
_ALIASES = (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\displaystyle", ""))


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
                return text[begin:next_close]
            pos = next_close + 1
            next_close = text.find("}", pos)
    return None


def normalize_answer(answer: str) -> str:
    """A canonical spelling for an exact-match shortcut: no spaces, spacing commands, ``$``,
    degree signs, percent signs, ``\\text{}`` around the whole answer or trailing period;
    ``\\dfrac`` and ``\\tfrac`` read as ``\\frac``. Two answers with equal normal forms are equal;
    unequal forms say nothing (math-verify then decides)."""
    s = answer.strip()
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
