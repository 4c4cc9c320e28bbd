"""The word-problem task and its final-number verifier (nsr_lightning/data/word_problems.py)."""

import re

import pytest

from nsr_lightning.data import SyntheticTask
from nsr_lightning.data.math_datasets import load_problems
from nsr_lightning.data.word_problems import FinalNumberReward, WordProblemTask, final_number


def hand_answer(question: str) -> int:
    """The answer read off the story by hand: its two numbers, + for 'more', - otherwise."""
    a, b = (int(x) for x in re.findall(r"\d+", question.split("\n")[0]))
    return a + b if " more" in question else a - b


def test_answers_are_the_stories_arithmetic():
    task = WordProblemTask(seed=3)
    problems = task.heldout_problems(40) + [task.train_problem(i) for i in range(40)]
    for p in problems:
        assert int(p.answer) == hand_answer(p.question) and int(p.answer) >= 0
        assert p.question.endswith("Put your final answer within \\boxed{}.")
    assert {"+", "-"} == {"+" if " more" in p.question else "-" for p in problems}


def test_train_and_heldout_are_disjoint_and_deterministic():
    task = WordProblemTask(seed=0)
    heldout = {p.question for p in task.heldout_problems(30)}
    assert not heldout & {task.train_problem(i).question for i in range(300)}
    again = WordProblemTask(seed=0)
    assert [p.question for p in again.heldout_problems(5)] == [p.question for p in task.heldout_problems(5)]
    assert load_problems("word_problems", limit=5) == task.heldout_problems(5)


def test_the_synthetic_task_is_unchanged_by_the_draw_hook():
    """The signed-sum task's problems as the code before the `_draw` hook made them (checked
    against that code for 300 train and 60 held-out problems when the hook came in)."""
    task = SyntheticTask(seed=0)
    assert [(p.question, p.answer) for p in map(task.train_problem, range(2))] == [
        ("9-11+17", "15"),
        ("2+10-15", "-3"),
    ]
    assert [(p.question, p.answer) for p in task.heldout_problems(2)] == [
        ("15+7+7+14", "43"),
        ("19+4+18", "41"),
    ]


@pytest.mark.parametrize(
    "text, value",
    [
        ("Mia has 7 + 5 = 12 marbles.", 12),
        ("The answer is \\boxed{12}. Then she buys 3 more.", 12),  # the box wins over later numbers
        ("\\boxed{x = 12 apples}", 12),  # the last number inside the box
        ("She has 1,200 apples", 1200),
        ("12.0", 12),
        ("-3 is the answer", -3),
        ("no number at all", None),
        ("\\boxed{12", 12),  # an unclosed box is no box: the last number of the text
    ],
)
def test_final_number_rule(text, value):
    assert final_number(text) == value


def test_reward():
    reward = FinalNumberReward()
    assert reward(["so 12.", "\\boxed{11}", "twelve", "12.5"], ["12", "12", "12", "12"]) == [
        1.0,
        0.0,
        0.0,
        0.0,
    ]
    with pytest.raises(ValueError):
        reward(["a"], [])
