"""Signed-sum chains: a synthetic, exactly verifiable reasoning task generated in code.

A problem is an expression of ``n_terms`` positive integers joined by ``+`` and ``-``, e.g.
``17-5+8-12``; its answer is the integer value (possibly negative). A solution accumulates the
signed terms in any order, one step per term, and ends with the answer in ``\\boxed{}``::

    17+8=25 25-5=20 20-12=8 \\boxed{8}
    -5+17=12 12-12=0 0+8=8 \\boxed{8}

Every permutation of the signed terms is a valid solution path, so each problem has several
correct chains (and a model trained on them has a diverse prior).

Train / held-out split: a question is *held out* when a keyed hash of it falls in a fixed
bucket (1 in ``HELDOUT_BUCKETS``). Held-out problems are drawn from their own stream and kept
only when they are in the held-out bucket; train problems are redrawn with a salt whenever they
land in it. So no train question ever equals a held-out question, whatever ``count`` is asked for.

Pure Python, no torch; every result is a deterministic function of the constructor arguments.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from nsr_lightning.config_rules import check, check_group

__all__ = ["HELDOUT_BUCKETS", "Problem", "SyntheticTask"]

HELDOUT_BUCKETS = 8  # one question in 8 belongs to the held-out partition
_MAX_TRIES = 10_000
_QUESTION_RE = re.compile(r"[+-]?\d+(?:[+-]\d+)+")
_TERM_RE = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Problem:
    """One task instance. ``answer`` is the decimal integer string of the expression's value."""

    id: str
    question: str
    answer: str


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class SyntheticTask:
    """Generator of signed-sum-chain problems with a difficulty dial.

    Args (keyword only):
        min_terms: fewest terms in an expression (>= 2).
        max_terms: most terms in an expression (>= min_terms).
        max_value: terms are drawn uniformly from 1..max_value (>= 1).
        seed: selects the problem streams and the train / held-out partition.
    """

    def __init__(self, *, min_terms: int = 3, max_terms: int = 5, max_value: int = 20, seed: int = 0):
        check_group("data", {"min_terms": min_terms, "max_terms": max_terms, "max_value": max_value})
        check("seed", seed)
        self.min_terms = min_terms
        self.max_terms = max_terms
        self.max_value = max_value
        self.seed = seed

    def __repr__(self) -> str:
        return (
            f"SyntheticTask(min_terms={self.min_terms}, max_terms={self.max_terms}, "
            f"max_value={self.max_value}, seed={self.seed})"
        )

    # ---------------------------------------------------------------- generation
    def _random_question(self, rng: random.Random) -> str:
        n = rng.randint(self.min_terms, self.max_terms)
        parts = [str(rng.randint(1, self.max_value))]
        for _ in range(n - 1):
            parts.append(rng.choice("+-") + str(rng.randint(1, self.max_value)))
        return "".join(parts)

    def is_heldout(self, question: str) -> bool:
        """Whether ``question`` belongs to the held-out partition (keyed by ``seed``)."""
        digest = hashlib.sha256(f"{self.seed}|{question}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % HELDOUT_BUCKETS == 0

    def _draw(self, rng: random.Random) -> tuple[str, str]:
        """(question, answer) of one random problem: the hook a task with other questions
        overrides (data/word_problems.py); the split and the streams stay these."""
        question = self._random_question(rng)
        return question, str(self.answer_of(question))

    def train_problem(self, index: int) -> Problem:
        """The ``index``-th training problem; never a held-out question."""
        if not _is_int(index) or index < 0:
            raise ValueError(f"train_problem: index must be a non-negative int, got {index!r}")
        for salt in range(_MAX_TRIES):
            rng = random.Random(f"synthetic-train|{self.seed}|{index}|{salt}")
            question, answer = self._draw(rng)
            if not self.is_heldout(question):
                return Problem(id=f"train-{index}", question=question, answer=answer)
        raise ValueError(f"train_problem: problem space of {self!r} is too small to avoid the held-out set")

    def heldout_problems(self, count: int) -> list[Problem]:
        """The first ``count`` distinct held-out problems (a prefix-stable, deterministic list)."""
        if not _is_int(count) or count < 0:
            raise ValueError(f"heldout_problems: count must be a non-negative int, got {count!r}")
        rng = random.Random(f"synthetic-heldout|{self.seed}")
        problems: list[Problem] = []
        seen: set[str] = set()
        misses = 0
        while len(problems) < count:
            question, answer = self._draw(rng)
            if question in seen or not self.is_heldout(question):
                misses += 1
                if misses > _MAX_TRIES * max(1, count):
                    raise ValueError(
                        f"heldout_problems: {self!r} has fewer than {count} distinct held-out questions"
                    )
                continue
            seen.add(question)
            problems.append(Problem(id=f"heldout-{len(problems)}", question=question, answer=answer))
        return problems

    # ---------------------------------------------------------------- solutions
    @staticmethod
    def terms_of(question: str) -> list[int]:
        """The signed terms of ``question``; ValueError when it is not a signed-sum expression."""
        if not isinstance(question, str) or _QUESTION_RE.fullmatch(question) is None:
            raise ValueError(f"not a signed-sum expression: {question!r}")
        return [int(t) for t in _TERM_RE.findall(question)]

    @staticmethod
    def answer_of(question: str) -> int:
        """Integer value of a signed-sum expression such as ``17-5+8-12`` (-> 8)."""
        return sum(SyntheticTask.terms_of(question))

    @staticmethod
    def chain(terms: list[int]) -> str:
        """The solution text that accumulates ``terms`` in the given order."""
        if len(terms) < 2:
            raise ValueError(f"chain needs at least 2 terms, got {terms!r}")
        acc = terms[0]
        steps = []
        for term in terms[1:]:
            new = acc + term
            steps.append(f"{acc}{'+' if term >= 0 else '-'}{abs(term)}={new}")
            acc = new
        steps.append(f"\\boxed{{{acc}}}")
        return " ".join(steps)

    def solution(self, problem: Problem, rng: random.Random) -> str:
        """A uniformly random valid solution path (random order of the signed terms)."""
        terms = self.terms_of(problem.question)
        rng.shuffle(terms)
        return self.chain(terms)
