"""Benchmark: math checks per second, verifier pool at 1 and 2 workers against serial math-verify.

The workload is MATH500's gold solutions, each checked against its own answer (accept) and against
the answer of the problem half the answer-sorted list away (reject, usually the slower verdict):
1000 (gold, extracted answer) pairs, extracted once beforehand. Rows:

- ``math_verify serial``: the reference, ``parse`` + ``parse`` + ``verify`` in this process with
  math-verify's own (signal.alarm) timeouts, as a single-threaded script would call it;
- ``check_equivalent serial``: our check (same parse config, parse cache) in this process, no limit;
- ``pool, N workers``: ``VerifierPool.score`` of that check, as training calls it every step.

Every process is warm, as in training (the pools live across passes, and one untimed pass runs
first), and every pass starts from cold caches: our parse cache and sympy's, which would otherwise
hold the very expressions of the pass before. Rows take turns, so a burst of load elsewhere hits
them alike; each row gives the median of ``--repeats`` passes.

    nice -n 19 python launch/bench_verifiers.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable

from math_verify import LatexExtractionConfig, parse, verify
from sympy.core.cache import clear_cache

from train.rewards import math as math_reward
from train.rewards.pool import VerifierPool

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "math500" / "test.jsonl"


def load_pairs(path: Path) -> list[tuple[str, str]]:
    """(gold answer, extracted answer) pairs: 500 that should match, 500 that should not."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    candidates = [math_reward.extract_answer(r["solution"]) or "" for r in rows]
    by_answer = sorted(range(len(rows)), key=lambda i: rows[i]["answer"])
    other = {by_answer[k]: by_answer[(k + len(rows) // 2) % len(rows)] for k in range(len(rows))}
    own = [(r["answer"], c) for r, c in zip(rows, candidates)]
    mismatched = [(rows[other[i]]["answer"], c) for i, c in enumerate(candidates)]
    return own + mismatched


def reference_check(pair: tuple[str, str]) -> float:
    """Plain math-verify, as a serial script calls it: its defaults, its own timeouts."""
    config = [LatexExtractionConfig(boxed_match_priority=0)]
    gold, candidate = (parse(f"\\boxed{{{text}}}", extraction_config=config) for text in pair)
    return 1.0 if gold and candidate and verify(gold, candidate) else 0.0


def clear_caches(_: object = None) -> float:
    """Empty our parse cache and sympy's (also sent to each pool worker, hence the signature)."""
    math_reward._parse.cache_clear()
    clear_cache()
    return 0.0


def time_serial(check: Callable[[tuple[str, str]], float], pairs: list[tuple[str, str]]) -> tuple[float, float]:
    clear_caches()
    start = time.perf_counter()
    accepted = sum(check(pair) for pair in pairs)
    return time.perf_counter() - start, accepted


def time_pool(pool: VerifierPool, pairs: list[tuple[str, str]]) -> tuple[float, float]:
    # Between calls every worker is idle, and the first dispatch round gives each idle worker one item.
    pool.score(clear_caches, range(pool.workers), timeout_s=60.0)
    start = time.perf_counter()
    verdicts, counts = pool.score(math_reward._check_pair, pairs, timeout_s=math_reward.TIMEOUT_S)
    elapsed = time.perf_counter() - start
    if any(counts.values()):
        print(f"  (pool with {pool.workers} workers: {counts})")
    return elapsed, sum(verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="passes per row; the median is reported")
    parser.add_argument("--data", type=Path, default=DATA, help="MATH500 test.jsonl")
    args = parser.parse_args()
    pairs = load_pairs(args.data)

    one, two = VerifierPool(1, initializer=math_reward.warm_up), VerifierPool(2, initializer=math_reward.warm_up)
    rows: list[tuple[str, Callable[[], tuple[float, float]]]] = [
        ("math_verify serial (reference)", lambda: time_serial(reference_check, pairs)),
        ("check_equivalent serial", lambda: time_serial(math_reward._check_pair, pairs)),
        ("pool, 1 worker", lambda: time_pool(one, pairs)),
        ("pool, 2 workers", lambda: time_pool(two, pairs)),
    ]
    passes: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in rows}
    for repeat in range(1 + args.repeats):
        for name, run in rows:
            result = run()
            if repeat > 0:  # the first pass warms the processes up
                passes[name].append(result)
    one.close()
    two.close()
    results = [(name, statistics.median(t for t, _ in runs), runs[0][1]) for name, runs in passes.items()]
    reference_s = results[0][1]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{len(pairs)} checks (MATH500 solutions vs own and vs other answers), median of {args.repeats};")
    print(f"{os.cpu_count()} CPUs, load average {load} at the end\n")
    print("| verifier | seconds | checks/s | speed-up | accepted |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, seconds, accepted in results:
        rate, speed_up = len(pairs) / seconds, reference_s / seconds
        print(f"| {name} | {seconds:.2f} | {rate:.0f} | {speed_up:.2f}x | {accepted:.0f} |")


if __name__ == "__main__":
    main()
