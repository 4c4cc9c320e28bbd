"""One-step arithmetic word problems, generated in code: a task a 135M instruct model can partly solve.

    Mia has 7 marbles. She gets 5 more. How many marbles does Mia have now?
    Put your final answer within \\boxed{}.                                  -> 12

Each problem is one addition or subtraction (results >= 0) of two numbers in 1..max_value, told
as one of a few short stories. The train / held-out split and the problem streams are the
synthetic task's (`SyntheticTask`, keyed hash buckets): only the question text differs.

The verifier (`FinalNumberReward`) reads the final number: the last number inside the last
closed ``\\boxed{...}`` when the response has one, else the last number of the whole response
("12 marbles." -> 12; thousands commas allowed; "12.0" counts as 12). 1 when it equals the gold
integer. So the model is rewarded for the right number before it has learned the box format
(learning the format is part of what RL does here).
"""

from __future__ import annotations

import random
import re

from nsr_lightning.data.datamodule import ProblemDataModule, ProblemDataset
from nsr_lightning.data.synthetic import Problem, SyntheticTask
from nsr_lightning.rewards.extract import extract_boxed

__all__ = ["FinalNumberReward", "WordProblemDataModule", "WordProblemTask", "final_number"]

INSTRUCTION = "Put your final answer within \\boxed{}."
NAMES = (("Mia", "She"), ("Tom", "He"), ("Ana", "She"), ("Sam", "He"), ("Lily", "She"), ("Ben", "He"))
ITEMS = ("apples", "marbles", "books", "stickers", "pencils", "cookies")
STORIES = {
    "+": (
        "{name} has {a} {item}. {pron} gets {b} more. How many {item} does {name} have now?",
        "There are {a} {item} in a box. {name} puts {b} more {item} in the box. How many {item} are in the box now?",
    ),
    "-": (
        "{name} has {a} {item}. {pron} gives {b} of them to a friend. How many {item} does {name} have left?",
        "There are {a} {item} on a table. {name} takes {b} of them. How many {item} are left on the table?",
    ),
}
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")


class WordProblemTask(SyntheticTask):
    """Word problems of one operation; `operations`: any of "+" and "-"."""

    def __init__(self, *, max_value: int = 20, operations: str = "+-", seed: int = 0) -> None:
        super().__init__(min_terms=2, max_terms=2, max_value=max_value, seed=seed)
        if not operations or set(operations) - set(STORIES):
            raise ValueError(f"WordProblemTask: operations must be made of + and -; got {operations!r}")
        self.operations = operations

    def __repr__(self) -> str:
        return (
            f"WordProblemTask(max_value={self.max_value}, operations={self.operations!r}, seed={self.seed})"
        )

    def _draw(self, rng: random.Random) -> tuple[str, str]:
        op = rng.choice(self.operations)
        a, b = rng.randint(1, self.max_value), rng.randint(1, self.max_value)
        if op == "-" and b > a:
            a, b = b, a
        name, pron = rng.choice(NAMES)
        story = rng.choice(STORIES[op]).format(name=name, pron=pron, item=rng.choice(ITEMS), a=a, b=b)
        return f"{story}\n{INSTRUCTION}", str(a + b if op == "+" else a - b)


def final_number(text: str) -> float | None:
    """The verifier's reading of a response (see the module docstring); None: no number."""
    if not isinstance(text, str):
        return None
    boxed = extract_boxed(text)
    numbers = _NUMBER.findall(boxed if boxed is not None else text)
    if not numbers:
        return None
    try:
        return float(numbers[-1].replace(",", ""))
    except ValueError:
        return None


class FinalNumberReward:
    """1.0 when the response's final number equals the gold integer, else 0.0 (never raises on a
    response; ValueError when the lists differ in length)."""

    name = "final_number"

    def __call__(self, responses: list[str], golds: list[str]) -> list[float]:
        if len(responses) != len(golds):
            raise ValueError(f"FinalNumberReward: {len(responses)} responses but {len(golds)} golds")
        out = []
        for response, gold in zip(responses, golds, strict=True):
            try:
                value = final_number(response)
                out.append(1.0 if value is not None and value == float(int(str(gold))) else 0.0)
            except Exception:  # a reward must never crash the training loop
                out.append(0.0)
        return out


class WordProblemDataModule(ProblemDataModule):
    """Word problems (`WordProblemTask`) with a held-out split, like SyntheticDataModule."""

    def __init__(
        self,
        tokenizer,
        *,
        batch_size: int = 4,
        num_train_problems: int = 10_000,
        num_heldout_problems: int = 16,
        template: str = "chat",
        max_value: int = 20,
        operations: str = "+-",
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        if batch_size < 1 or num_train_problems < batch_size or num_heldout_problems < 0:
            raise ValueError(
                "data: need batch_size >= 1, num_train_problems >= batch_size, num_heldout_problems >= 0; got "
                f"{batch_size}, {num_train_problems}, {num_heldout_problems}"
            )
        self.task = WordProblemTask(max_value=max_value, operations=operations, seed=seed)
        super().__init__(
            tokenizer, batch_size=batch_size, template=template, seed=seed, num_workers=num_workers
        )
        self.num_train_problems, self.num_heldout_problems = num_train_problems, num_heldout_problems

    def train_dataset(self) -> ProblemDataset:
        return ProblemDataset(self.task, self.num_train_problems, self.tokenizer, self.template)

    def heldout_problem_sets(self) -> dict[str, list[Problem]]:
        return {"word_problems": self.task.heldout_problems(self.num_heldout_problems)}
