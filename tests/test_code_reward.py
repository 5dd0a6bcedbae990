"""The code verifier on real data: sanitized MBPP (Austin et al. 2021), 427 tasks.

Every reference solution, given as a chat-style completion with a fenced block, must pass its
``test_list`` (with ``test_imports``) in the sandbox; the same function with its body replaced by
``return None`` must fail, for every task (so each task's tests can tell a wrong function); an
empty completion must fail. The data are read from ``shared/data`` beside the repository (never
copied into it); the tests skip when it is absent. Everything goes through ``REWARDS["code"]``,
with its default thread pool over sandbox processes.
"""

from __future__ import annotations

import ast
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
