"""Benchmark of the math reward: answers scored per second on a realistic mix.

    python scripts/bench_reward.py [--answers 2000] [--workers 2] [--out bench_reward.json]

The mix (seeded, generated here): gold answers of the kinds MATH has (integers, fractions,
decimals, radicals, intervals, sets, tuples, matrices, equations, degrees, text, expressions);
responses that are right in the gold's spelling, right in another spelling (0.5 for 1/2,
\\dfrac, x = ..., ...), wrong, without a box, and a few hostile ones (towers of powers, huge
factorials, deep nesting, 100 k-character answers). Runs three settings: every answer distinct
with the cache off, the same without the hostile answers, and an evaluation-like batch (problems x
n samples that often agree, cache on). Prints a table and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time

from nsr_lightning.rewards import MathVerifyReward

# (gold, equal spellings, wrong answers)
KINDS = [
    (
        lambda r: str(r.randint(-999, 9999)),
        lambda g, r: [g, f"{g}.0"],
        lambda g, r: [str(int(g) + r.choice([-2, -1, 1, 10]))],
    ),
    (
        lambda r: f"\\frac{{{r.randint(1, 40)}}}{{{r.randint(41, 97)}}}",
        lambda g, r: [
            g.replace("\\frac", "\\dfrac"),
            g.replace("\\frac{", "").replace("}{", "/").rstrip("}"),
        ],
        lambda g, r: [g.replace("\\frac{", "\\frac{1+")],
    ),
    (lambda r: f"{r.randint(1, 9)}.{r.randint(10, 99)}", lambda g, r: [g, g + "0"], lambda g, r: [g + "1"]),
    (
        lambda r: f"{r.randint(2, 9)}\\sqrt{{{r.choice([2, 3, 5, 7])}}}",
        lambda g, r: [g, g.replace("\\sqrt{", "\\sqrt ").replace("}", "")],
        lambda g, r: [g.replace("sqrt", "sqrt[3]")],
    ),
    (
        lambda r: f"[{r.randint(-9, 0)}, {r.randint(1, 9)})",
        lambda g, r: [g.replace(" ", "")],
        lambda g, r: [g.replace(")", "]")],
    ),
    (
        lambda r: f"\\{{{r.randint(1, 4)}, {r.randint(5, 9)}\\}}",
        lambda g, r: [g[::1]],
        lambda g, r: [g.replace("\\}", ", 10\\}")],
    ),
    (
        lambda r: f"({r.randint(1, 9)}, {r.randint(-9, -1)})",
        lambda g, r: [g.replace(" ", "")],
        lambda g, r: [g[::-1].replace(")", "(", 1)],
    ),
    (
        lambda r: f"\\begin{{pmatrix}} {r.randint(1, 9)} \\\\ {r.randint(1, 9)} \\end{{pmatrix}}",
        lambda g, r: [g.replace(" ", "")],
        lambda g, r: [g.replace("\\\\", "&")],
    ),
    (
        lambda r: f"x={r.randint(1, 99)}",
        lambda g, r: [g[2:], g.replace("=", " = ")],
        lambda g, r: [f"x={int(g[2:]) + 1}"],
    ),
    (
        lambda r: f"{r.choice([30, 45, 60, 120])}^\\circ",
        lambda g, r: [g.split("^")[0], g.replace("^\\circ", "^{\\circ}")],
        lambda g, r: ["15"],
    ),
    (
        lambda r: f"\\text{{{r.choice(['Monday', 'Evelyn', 'odd', 'even'])}}}",
        lambda g, r: [g[6:-1]],
        lambda g, r: ["\\text{Friday}"],
    ),
    (
        lambda r: f"{r.randint(2, 9)}x^2 + {r.randint(1, 9)}",
        lambda g, r: [" + ".join(g.split(" + ")[::-1])],
        lambda g, r: [g.replace("x^2", "x^3")],
    ),
]
HOSTILE = [
    "2^{2^{2^{2^{2^{2^{2^{2}}}}}}}",
    "9999999!",
    "(10^{10^{10}})!",
    "\\frac{" * 150 + "1" + "}{2}" * 150,
    "1+" * 50_000 + "1",
    "x^" * 300 + "x",
]


def response(answer: str | None, r: random.Random) -> str:
    steps = " ".join(
        f"step {i}: we compute {r.randint(1, 99)} + {r.randint(1, 99)}." for i in range(r.randint(2, 8))
    )
    return steps + ("" if answer is None else f" So the answer is $\\boxed{{{answer}}}$.")


def make_mix(count: int, seed: int, hostile_share: float) -> tuple[list[str], list[str], list[float]]:
    """Responses, golds, and the score each response is meant to get."""
    r = random.Random(seed)
    responses, golds, labels = [], [], []
    for _ in range(count):
        gold_fn, same_fn, wrong_fn = r.choice(KINDS)
        gold = gold_fn(r)
        u = r.random()
        if u < hostile_share:
            answer = r.choice(HOSTILE)
        elif u < 0.30:
            answer = gold
        elif u < 0.50:
            answer = r.choice(same_fn(gold, r))
        elif u < 0.95:
            answer = r.choice(wrong_fn(gold, r))
        else:
            answer = None
        responses.append(response(answer, r))
        golds.append(gold)
        labels.append(1.0 if u >= hostile_share and u < 0.50 else 0.0)
    return responses, golds, labels


def run(name: str, responses: list[str], golds: list[str], labels: list[float], **kwargs) -> dict:
    with MathVerifyReward(**kwargs) as reward:
        reward(["\\boxed{\\frac{1}{2}}"], ["0.5"])  # start the workers outside the timing
        reward.stats = dict.fromkeys(reward.stats, 0)
        start = time.perf_counter()
        scores = reward(responses, golds)
        elapsed = time.perf_counter() - start
    return {
        "setting": name,
        "answers": len(responses),
        "seconds": round(elapsed, 3),
        "answers_per_s": round(len(responses) / elapsed, 1),
        "correct_share": round(sum(scores) / len(scores), 3),
        "agreement_with_labels": round(
            sum(s == y for s, y in zip(scores, labels, strict=True)) / len(scores), 4
        ),
        "timeouts": reward.timeouts,
        "worker_restarts": reward.restarts,
        "stats": reward.stats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--hostile-share", type=float, default=0.005)
    parser.add_argument("--out", default="bench_reward.json")
    args = parser.parse_args()
    common = {"num_workers": args.workers}
    mixed = make_mix(args.answers, 0, args.hostile_share)
    clean = make_mix(args.answers, 0, 0.0)
    # evaluation-like: problems x n samples drawn from a few candidate answers per problem
    n = 16
    eval_r, eval_g, eval_y = [], [], []
    for p in range(args.answers // n):
        cand_r, cand_g, cand_y = make_mix(4, 1000 + p, args.hostile_share)
        for _ in range(n):  # n samples of one problem: a few distinct answers, all against one gold
            i = random.Random(p * n + len(eval_r)).randrange(4)
            eval_r.append(cand_r[i])
            eval_g.append(cand_g[i])
            eval_y.append(cand_y[i])
    results = [
        run("distinct, cache off", *mixed, cache_size=0, **common),
        run("distinct, no hostile, cache off", *clean, cache_size=0, **common),
        run(f"{len(eval_r) // n} problems x n={n}, cache on", eval_r, eval_g, eval_y, **common),
    ]
    print(
        f"math reward benchmark: {args.workers} workers, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    )
    print(
        f"{'setting':<36}{'answers':>8}{'seconds':>9}{'answers/s':>11}{'via workers':>13}{'timeouts':>10}{'agree':>7}"
    )
    for r in results:
        cells = (
            f"{r['answers']:>8}{r['seconds']:>9.2f}{r['answers_per_s']:>11.1f}{r['stats']['verified']:>13}"
        )
        print(f"{r['setting']:<36}{cells}{r['timeouts']:>10}{r['agreement_with_labels']:>7.3f}")
    with open(args.out, "w") as f:
        json.dump({"workers": args.workers, "cpus": os.cpu_count(), "results": results}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
