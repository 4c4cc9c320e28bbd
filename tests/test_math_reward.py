"""The math reward: extraction, equivalence classes, hostile input, threads, worker replacement."""

import threading
import time

import pytest

from nsr_lightning.rewards import MathVerifyReward, SyntheticReward, extract_boxed, normalize_answer
from nsr_lightning.rewards.extract import extract_all_boxed, gold_answer
from nsr_lightning.rewards.pool import WorkerPool

BOUND_S = 1.0  # per-answer bound in these tests (the default is 5 s)


@pytest.fixture(scope="module")
def reward():
    with MathVerifyReward(num_workers=2, timeout_s=BOUND_S) as r:
        yield r


# ---- extraction ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{a{b{c}}d} tail", "a{b{c}}d"),
        ("\\fbox{7}", "7"),
        ("\\boxed{1} and \\fbox{x=5}", "x=5"),
        ("\\fbox{1} and \\boxed{ 3 }", " 3 "),
        ("\\boxed{}", ""),
        ("no box here", None),
        ("\\boxed{unclosed {", None),
        ("", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_extract_boxed_is_linear_on_hostile_text():
    deep = "\\boxed{" + "{" * 100_000 + "}" * 100_000 + "}"
    start = time.perf_counter()
    assert extract_boxed(deep) == "{" * 100_000 + "}" * 100_000
    assert extract_boxed("x" * 5_000_000 + "\\boxed{" + "{" * 50_000) is None
    assert time.perf_counter() - start < 1.0


def test_synthetic_reward_shares_extraction():
    assert SyntheticReward()(["\\fbox{8}", "\\boxed{7} \\fbox{8}", "\\fbox{8} \\boxed{7}"], ["8"] * 3) == [
        1,
        1,
        0,
    ]


def test_normalize_answer():
    assert normalize_answer("\\dfrac{1}{2} ") == normalize_answer("\\frac{1}{2}")
    assert normalize_answer("\\text{ Evelyn }") == "Evelyn"
    assert normalize_answer("30^\\circ") == "30" == normalize_answer("$30$.")


# ---- equivalence -----------------------------------------------------------------------------
SAME = [
    ("0.5", "\\frac{1}{2}"),  # fraction vs decimal
    ("\\frac{3}{4}", "\\dfrac{3}{4}"),
    ("\\frac{1}{3}", "0.3333333"),
    ("2\\sqrt{3}", "\\sqrt{12}"),  # radicals
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
    ("[1,3)", "[1, 3)"),  # intervals
    ("(-\\infty, 2]", "(-\\infty,2]"),
    ("\\{1,2,3\\}", "\\{3,1,2\\}"),  # sets
    ("(1,2)", "(1, 2)"),  # tuples
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),  # matrices
    ("5", "x=5"),  # equations
    ("x=5", "5"),
    ("30^\\circ", "30"),  # degrees
    ("30", "30^{\\circ}"),
    ("\\text{Evelyn}", "Evelyn"),  # text
    ("\\text{(C)}", "C"),
    ("10\\%", "10"),
    ("12.5\\%", "12.50"),
    ("1000", "1,000"),
    ("x^2+1", "1+x^2"),
]
DIFFERENT = [
    ("\\frac{1}{3}", "0.333"),
    ("[1,3)", "[1,3]"),
    ("\\{1,2\\}", "\\{1,3\\}"),
    ("(1,2)", "(2,1)"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\3\\end{pmatrix}"),
    ("x=5", "x=6"),
    ("\\text{Monday}", "Tuesday"),
    ("-8", "8"),
    ("2\\sqrt{3}", "3\\sqrt{2}"),
]


def test_equivalent_answers_score_one(reward):
    responses = [f"... so the answer is \\boxed{{{answer}}}." for _, answer in SAME]
    assert reward(responses, [gold for gold, _ in SAME]) == [1.0] * len(SAME)


def test_different_answers_score_zero(reward):
    responses = [f"\\boxed{{{answer}}}" for _, answer in DIFFERENT]
    assert reward(responses, [gold for gold, _ in DIFFERENT]) == [0.0] * len(DIFFERENT)


def test_no_answer_and_odd_golds(reward):
    responses = ["no box", "\\boxed{}", "\\boxed{7}", "\\boxed{7}", "\\boxed{\\frac{1}{2}}"]
    golds = ["1", "1", 7, "The solution gives \\boxed{7}.", "\\boxed{0.5}"]
    assert reward(responses, golds) == [0.0, 0.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="2 golds"):
        reward(["a"], ["1", "2"])


PERCENT = [  # (answer, gold): words a grader reads as %, against 28\\% and 28
    *[(f"28 {word}", gold) for word in ("percent", "pct", "percentage") for gold in ("28\\%", "28")],
    ("28.0 percent", "28\\%"),  # not an exact match: through math-verify
    ("28.0\\text{ pct.}", "28"),
    ("28\\,\\%", "28.0"),
]


def test_percent_words_read_as_a_grader_does(reward):
    responses = [f"\\boxed{{{answer}}}" for answer, _ in PERCENT] + [
        "\\boxed{29 percent}",
        "\\boxed{28 dollars}",
    ]
    golds = [gold for _, gold in PERCENT] + ["28\\%", "28"]
    assert reward(responses, golds) == [1.0] * len(PERCENT) + [0.0, 0.0]


def test_all_boxes_of_a_gold_are_one_answer(reward):
    """A gold with several boxes is the set math-verify reads in it ({1, -2}), not its last box."""
    gold = "The roots are $\\boxed{1}$ and $\\boxed{-2}$."
    assert gold_answer(gold) == "1, -2" and gold_answer(" 7 ") == "7" and gold_answer("\\boxed{ }") is None
    responses = ["\\boxed{-2, 1}", "\\boxed{1, -2}", "\\boxed{\\{1,-2\\}}", "\\boxed{1}", "\\boxed{-2}"]
    assert reward(responses, [gold] * 5) == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert extract_all_boxed("\\boxed{a{b}} x \\fbox{c} \\boxed{\\boxed{d}} \\boxed{e") == [
        "a{b}",
        "c",
        "\\boxed{d}",
    ]


def test_the_verdict_does_not_follow_the_hash_seed(monkeypatch):
    """math-verify scores `4 0/0` against 0 as 1.0 in some runs and 0.0 in others (sympy's
    simplify, even under one hash seed); the workers (real subprocesses) run with a fixed hash
    seed whatever the parent's PYTHONHASHSEED and score an answer that divides by zero 0: the
    same verdict for 8 seeds, 0 (4 * 0 / 0 is undefined)."""
    verdicts = []
    for seed in range(1, 9):
        monkeypatch.setenv("PYTHONHASHSEED", str(seed))
        with MathVerifyReward(num_workers=1, cache_size=0) as r:
            verdicts.append(r(["\\boxed{4 0/0}"], ["0"])[0])
    assert verdicts == [0.0] * 8


# ---- hostile input ---------------------------------------------------------------------------
HOSTILE = {
    "tower of powers": "2^{2^{2^{2^{2^{2^{2^{2}}}}}}}",
    "huge factorial": "9999999!",
    "factorial of a power": "(10^{10^{10}})!",
    "huge power": "10^{10^{9}}",
    "nested braces": "{" * 3000 + "1" + "}" * 3000,
    "deep but short nesting": "\\frac{" * 150 + "1" + "}{2}" * 150,
    "megabyte string": "1+" * 500_000 + "1",
    "invalid unicode": "\ud800 1",
    "long power chain": "x^" * 300 + "x",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_answers_score_zero_within_the_bound(reward, name, caplog):
    start = time.perf_counter()
    assert reward(["\\boxed{" + HOSTILE[name] + "}"], ["1"]) == [0.0]
    assert time.perf_counter() - start < BOUND_S + 1.5  # the bound, plus a kill and a restart
    assert all(len(r.getMessage()) < 300 for r in caplog.records)  # no flood of the input


def test_hostile_answers_in_one_batch_with_good_ones(reward):
    responses = ["\\boxed{" + h + "}" for h in HOSTILE.values()] + ["\\boxed{\\frac{2}{4}}"] * 3
    before = reward.timeouts
    start = time.perf_counter()
    scores = reward(responses, ["1"] * len(HOSTILE) + ["0.5"] * 3)
    assert scores == [0.0] * len(HOSTILE) + [1.0] * 3
    assert time.perf_counter() - start < len(HOSTILE) * (BOUND_S + 0.5)
    assert reward.timeouts >= before  # repeats come from the cache: no new timeouts needed


def test_called_from_a_thread(reward):
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("s", reward(["\\boxed{0.25}"], ["\\frac14"])))
    thread.start()
    thread.join(timeout=30)
    assert out["s"] == [1.0]


def test_stuck_worker_is_killed_replaced_and_counted():
    """No soft alarm in the worker: only the parent's hard bound can stop the C-level power."""
    pool = WorkerPool(1, timeout_s=0.5, soft_timeout_s=0, memory_limit_mb=4096)
    try:
        results = pool.run([("3", "3"), ("10^{10^{9}}", "1"), ("\\frac{1}{2}", "0.5")])
        assert results == [(1.0, "ok"), (0.0, "timeout"), (1.0, "ok")]
        assert pool.restarts == 1
        (worker,) = pool.workers
        worker.proc.kill()  # a worker that dies between calls is replaced too
        worker.proc.wait()
        assert pool.run([("2", "2")]) == [(1.0, "ok")]
        assert pool.restarts == 2
        procs = [w.proc for w in pool.workers]
    finally:
        pool.close()
    assert all(p.poll() is not None for p in procs)  # no orphans


def test_timeouts_counted_on_the_reward():
    with MathVerifyReward(num_workers=1, timeout_s=0.5) as r:
        assert r(["\\boxed{2^{2^{2^{2^{2^{2^{2^{2}}}}}}}}", "\\boxed{4}"], ["1", "4"]) == [0.0, 1.0]
        assert r.timeouts == 1
        assert r(["\\boxed{2^{2^{2^{2^{2^{2^{2^{2}}}}}}}}"], ["1"]) == [0.0]  # cached: not re-run
        assert r.timeouts == 1 and r.stats["cached"] == 1


def test_constructor_errors():
    with pytest.raises(ValueError, match="timeout_s"):
        MathVerifyReward(timeout_s=0)
    with pytest.raises(ValueError, match="num_workers"):
        MathVerifyReward(num_workers=0)


def test_worker_that_dies_mid_answer_is_counted_as_a_crash():
    pool = WorkerPool(1, timeout_s=30, soft_timeout_s=0, memory_limit_mb=4096)
    try:
        pool.run([("1", "1")])  # started
        (worker,) = pool.workers
        threading.Timer(0.5, worker.proc.kill).start()  # an out-of-memory kill, a segfault, ...
        start = time.perf_counter()
        assert pool.run([("10^{10^{9}}", "1"), ("2", "2")]) == [(0.0, "crash"), (1.0, "ok")]
        assert time.perf_counter() - start < 10 and pool.restarts == 1
    finally:
        pool.close()


def test_an_interrupted_call_leaves_no_stale_answers(monkeypatch):
    import nsr_lightning.rewards.pool as pool_module

    pool = WorkerPool(1, timeout_s=30, soft_timeout_s=0, memory_limit_mb=4096)
    try:
        pool.run([("1", "1")])
        real_wait = pool_module.wait
        monkeypatch.setattr(pool_module, "wait", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            pool.run([("\\frac{1}{2}", "0.5"), ("3", "4")])
        monkeypatch.setattr(pool_module, "wait", real_wait)
        assert pool.run([("5", "6"), ("7", "7")]) == [(0.0, "ok"), (1.0, "ok")]
    finally:
        pool.close()
