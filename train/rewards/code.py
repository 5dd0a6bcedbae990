"""Verifier for code: 1.0 when the completion's program passes every test, run in the sandbox.

Test formats, chosen per sample by the dataset columns it has (the first one present):

- stdin/stdout (LiveCodeBench style): ``tests``, a list (or its JSON text) of
  ``{"input": ..., "output": ...}``, plus ``private_tests`` (more cases, e.g. LiveCodeBench's
  hidden ones). The program runs once per case (in its own sandbox, as ``__main__``, with
  ``exit``/``quit`` defined as ``site`` would); it passes a case when it exits 0 and its stdout
  equals the expected output after normalising trailing whitespace (of each line and of the whole).
- functional (LiveCodeBench's LeetCode problems): the same columns with ``fn_name`` and cases of
  ``"testtype": "functional"``; each case calls ``Solution().<fn_name>`` (:func:`functional_tests`).
- MBPP+ style: ``test_script``, a script of asserts (EvalPlus's ``test``), ``test_imports`` first.
- MBPP style: ``test_list``, assert statements, with the optional ``test_imports`` run first.
- HumanEval style: ``test`` defines ``check(candidate)``, called with the function ``entry_point``;
  ``test_setup`` (the prompt: imports and the helpers the tests call) runs first, as trusted code.

In the function formats (all but stdin/stdout) the program runs as module ``__solution__``, so its
``if __name__ == "__main__":`` block (examples, ``input()``) does not run; it must define the tested
function itself (HumanEval's prompt is not prepended, so it needs its own imports, e.g. ``from
typing import List``). Programs and tests may import the standard library and numpy (EvalPlus's
tests compare floats with it), shared read-only by the sandbox; nothing else installed.

The program is the last ```python (or ```py, or bare ```) fenced block of the completion, or the
whole completion when it has no closed fence (:func:`extract_program`).

Threat model
------------
The program is hostile (a policy keeps whatever earns reward). It may inspect and change anything
in its own process (frames, ``gc``, modules, builtins, file descriptors) and read anything it can
open. It must not be able to see the tests or expected values before it runs, reach the verdict,
or pass a comparison with an object of its own. How:

- Stdin/stdout tests: the program runs alone, once per case (:func:`train.rewards.sandbox.run_program`),
  and the parent compares its stdout with the expected output: the expected output never enters
  the sandbox.
- Function tests: two sandbox processes (:func:`train.rewards.sandbox.run_linked`; the programs
  are :mod:`train.rewards.code_harness`). The program runs alone in one (the *solution*), as a
  callee: it reports its top-level names and answers calls. The tests run in the other, with
  another uid, other namespaces and their own private folder; only there is ``spec.json`` (tests,
  expected values). For each of the program's names the tests get a proxy (a :class:`Remote
  <train.rewards.code_harness.Remote>`), or the value itself when it is plain data, or, for a
  module, their own import of it. A call sends its arguments and gets back plain data only: a JSON
  encoding of ``None``/``bool``/``int``/``float``/``str``/``bytes``/``complex`` and the builtin
  containers (and a few standard ones: Counter, deque, Fraction, numeric numpy arrays), decoded
  in the tests' process into objects of exactly those types. Anything else comes back as an opaque
  handle that equals only itself, which the tests can call, pass back, or fetch a plain attribute
  of (``Solution().method``, MBPP's ``Pair(5, 24)``); an iterator comes back drawn out. So every
  ``==`` the tests evaluate runs the tests' own code on genuine values: an ``__eq__`` that always
  returns True, a ``float`` or ``str`` subclass, a patched ``math.isclose`` (in the program's
  process, not the tests') or a walk up the frames (they hold only the server) changes nothing.
  An exception of the program's re-raises in the tests as the builtin class of that name (never
  ``StopIteration``) or a generic error.
- The verdict: the tests' process writes ``passed <n>`` on the control channel, which only it
  holds, after every test ran without raising, then exits 0; a sample passes only when that line
  is exactly ``passed <number of tests>`` and the exit status is 0. The program cannot signal,
  trace or read the tests' process (another uid), reach its files (another mount namespace) or
  write on its channel; its stdout/stderr are not read for the verdict. A broken message on the
  link, one over 32 MiB, nesting over 100, or the program's end mid-call end the tests' process
  at once, failed, where no test's ``except`` can catch it; when the tests end, the program is
  killed.

Each of these is attacked in ``tests/test_code_attacks.py`` (a wrong program plus the attack
scores 0.0; the right program scores 1.0 on the same problem).

This needs the sandbox's full isolation (root: fresh uids and namespaces). Under its fallbacks
(logged once each, see :mod:`train.rewards.sandbox`) the two processes share the trainer's uid,
and the program could read or trace the tests' process: the verdict is then not protected.

Helpers the tests call come from the dataset, not from the program, when the ``test_setup``
column carries them: HumanEval/32 checks ``find_zero`` with the prompt's ``poly``, and HumanEval/38
and /50 pass the expected string to ``encode_cyclic`` / ``encode_shift``. The HumanEval presets map
``test_setup`` to the row's prompt, which runs in the tests' namespace before the program's names
arrive, and a name it defines is never taken from the program (the entry point aside). Without
that column the program's own helpers would be trusted, and one that remembers the string it was
handed would pass (``tests/test_code_attacks.py`` checks both).

Not defended: what the tests themselves hand to the program or take from it. The program sees each call's arguments
(not the expected values, which stay in the tests). A test whose assertion accepts any truthy
value accepts a handle. A module the program holds becomes the tests' own import of the module of
that name (standard library or shared packages only), so, as in one process, the program chooses
which genuine module a name the tests use unimported refers to.

What differs from running the tests in the program's process (none of it matters for HumanEval's
164 canonical solutions, sanitized MBPP's 427 references or the format fixtures, which all pass):
arguments are copies (a test that checks an argument mutated in place would fail); two of the
program's objects compare by identity only; instances of subclasses of builtin types arrive as the
base type (a namedtuple as a tuple); objects the program returns support only call and plain
attribute fetch, and its exception classes cannot be caught by name (the tests see the nearest
builtin one); a result over 32 MiB of JSON, an iterator of over 2**20 items, or a value nested over
100 deep fails the call; the program's top-level data are a snapshot taken after it ran; and a
test's own functions or objects cannot be passed to the program (a TypeError in that test).

Pure Python: no torch, no trainer; the program itself runs only inside the sandbox.
"""

from __future__ import annotations

import ast
import builtins
import functools
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from train.rewards.sandbox import LinkedResult, Program, run_linked, run_program

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Limits of one sandbox run (a stdin/stdout sample makes one run per case; a function-test run
    is two processes, the program's and the tests', each under the memory and output limits)."""

    timeout_s: float = 10.0  # wall clock; higher tolerates slow machines, lower bounds a batch's scoring time
    memory_mb: int = 1024  # address space of each process; the interpreter alone takes about 30 MB
    max_output_bytes: int = 1 << 20  # per stream; more kills the program (and fails it)
    packages: tuple[str, ...] = ("numpy",)  # installed packages programs and tests may import (EvalPlus's tests use numpy)


DEFAULT_LIMITS = Limits()
WORKERS = 4  # sandbox runs at a time (a function-test run is two processes); the threads only wait on them


@dataclass(frozen=True)
class FunctionTests:
    """Tests run in their own process against the program's names (MBPP, HumanEval, EvalPlus, LeetCode)."""

    setup: tuple[str, ...]  # run before the program's names arrive, in the tests' namespace (imports)
    tests: tuple[str, ...]  # statements; each must run without raising
    entry_point: str | None = None  # a name the tests use even if it shadows a builtin
    prelude: str = ""  # source run before the program, in its namespace (LiveCodeBench's imports)


@dataclass(frozen=True)
class StdioTests:
    cases: tuple[tuple[str, str], ...]  # (stdin, expected stdout)


CodeTests = FunctionTests | StdioTests

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_program(completion: str) -> str:
    """The last closed ```python (or ```py, or bare ```) block, else the whole completion.

    >>> extract_program("Try:\\n```python\\nx = 1\\n```\\nBetter:\\n```python\\nx = 2\\n```\\n")
    'x = 2\\n'
    >>> extract_program("def f():\\n    return 1\\n")
    'def f():\\n    return 1\\n'
    >>> extract_program("```text\\nnot code\\n```")  # a fence of another language is no program
    '```text\\nnot code\\n```'
    """
    blocks = _FENCE.findall(completion)
    return blocks[-1] if blocks else completion


def normalise_output(text: str) -> str:
    """Output without trailing whitespace on each line and at the end.

    >>> normalise_output("1 2 \\r\\n3\\n\\n") == normalise_output("1 2\\n3")
    True
    """
    return "\n".join(line.rstrip() for line in text.rstrip().splitlines())


HARNESS = Path(__file__).with_name("code_harness.py")  # function tests: the program's and the tests' processes
STDIO_BOOT = Path(__file__).with_name("code_stdio.py")  # stdin/stdout programs


@functools.cache
def harness_source(role: str) -> str:
    """The sandbox's ``main.py`` for ``role`` of :mod:`train.rewards.code_harness`: that file plus its call."""
    return f"{HARNESS.read_text(encoding='utf-8')}\n\nmain({role!r})\n"


@functools.cache
def _stdio_boot() -> str:
    return STDIO_BOOT.read_text(encoding="utf-8")


def passes(program: str, tests: CodeTests, limits: Limits = DEFAULT_LIMITS) -> bool:
    """Whether ``program`` passes all of ``tests`` in the sandbox; never when there are none.

    >>> passes("print(1)", StdioTests(())), passes("", FunctionTests((), ()))
    (False, False)
    """
    if not (tests.cases if isinstance(tests, StdioTests) else tests.tests):
        return False  # nothing ran, so nothing passed
    if isinstance(tests, StdioTests):
        return all(_passes_case(program, stdin, expected, limits) for stdin, expected in tests.cases)
    return _passes_function_tests(program, tests, limits)


def _passes_case(program: str, stdin: str, expected: str, limits: Limits) -> bool:
    max_output = max(limits.max_output_bytes, 2 * len(expected))
    result = run_program(_stdio_boot(), files={"solution.py": program}, stdin=stdin, timeout_s=limits.timeout_s,
                         memory_mb=limits.memory_mb, max_output_bytes=max_output, packages=limits.packages)  # fmt: skip
    return result.status == "ok" and normalise_output(result.stdout) == normalise_output(expected)


def run_function_tests(program: str, tests: FunctionTests, limits: Limits = DEFAULT_LIMITS) -> LinkedResult:
    """The sandbox run of ``tests`` (caller) against ``program`` (callee); :func:`passed_all` judges it."""
    spec = {"setup": list(tests.setup), "tests": list(tests.tests), "entry_point": tests.entry_point,
            "packages": list(limits.packages)}  # fmt: skip
    return run_linked(
        Program(harness_source("tests"), {"spec.json": json.dumps(spec)}),
        Program(harness_source("solution"), {"solution.py": tests.prelude + program}),
        control=True, timeout_s=limits.timeout_s, memory_mb=limits.memory_mb,
        max_output_bytes=limits.max_output_bytes, packages=limits.packages,
    )  # fmt: skip


def passed_all(run: LinkedResult, tests: FunctionTests) -> bool:
    """The verdict: the tests' process exited 0 after saying exactly ``passed <number of tests>``."""
    tests_process = run.caller
    return tests_process.status == "ok" and tests_process.returncode == 0 and tests_process.control == (b"passed %d" % len(tests.tests),)


def _passes_function_tests(program: str, tests: FunctionTests, limits: Limits) -> bool:
    return passed_all(run_function_tests(program, tests, limits), tests)


def parse_tests(sample: dict[str, Any]) -> CodeTests | None:
    r"""The tests of one sample (a row of dataset columns), or None when it has none.

    >>> parse_tests({"test_list": ["assert f(1) == 2"], "test_imports": ["import math"]})
    FunctionTests(setup=('import math',), tests=('assert f(1) == 2',), entry_point='f', prelude='')
    >>> parse_tests({"tests": '[{"input": "1\\n", "output": "2\\n"}]', "private_tests": [{"input": "2", "output": "3"}]})
    StdioTests(cases=(('1\n', '2\n'), ('2', '3')))
    >>> parse_tests({"test": "def check(candidate):\n    assert candidate(1) == 2\n", "entry_point": "f"}).tests[1]
    'check(f)'
    >>> parse_tests({"test_script": "assert f(1) == 2", "test_list": ["assert f(0) == 1"]}).tests
    ('assert f(1) == 2',)
    """
    if sample.get("tests") is not None:
        cases = [*_cases(sample["tests"]), *_cases(sample.get("private_tests"))]
        if sample.get("fn_name") and any(case.get("testtype") == "functional" for case in cases):
            return functional_tests(sample["fn_name"], cases)
        return StdioTests(tuple((str(case["input"]), str(case["output"])) for case in cases))
    if sample.get("test_script") is not None:  # MBPP+: one script of its own asserts, after the program
        tests = (sample["test_script"],)
        return FunctionTests(tuple(sample.get("test_imports") or ()), tests, mbpp_entry_point(sample.get("test_list") or tests))
    if sample.get("test_list") is not None:
        setup, tests = tuple(sample.get("test_imports") or ()), tuple(sample["test_list"])
        return FunctionTests(setup, tests, mbpp_entry_point(tests))
    if sample.get("test") is not None and sample.get("entry_point"):
        setup = (sample["test_setup"],) if sample.get("test_setup") else ()  # the prompt's helpers, trusted
        return FunctionTests(setup, (sample["test"], f"check({sample['entry_point']})"), sample["entry_point"])
    return None


def _cases(value: Any) -> list[dict[str, Any]]:
    """Test cases given as a list or as its JSON text; None is none."""
    if value is None:
        return []
    return list(json.loads(value) if isinstance(value, str) else value)


# What lcb_runner puts before a LeetCode solution (lcb_runner/evaluation/testing_util.py, import_string):
# starter code uses List, Optional, ... unimported, and solutions lean on the standard library's names.
LIVECODEBENCH_PRELUDE = "".join(
    f"from {m} import *\n" for m in ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math",
                                     "random", "statistics", "itertools", "functools", "operator", "io", "typing")
) + "import string, re, datetime, collections, heapq, bisect, copy, math, random, statistics, itertools, functools, operator, io, sys, json\n"  # fmt: skip


def functional_tests(fn_name: str, cases: Sequence[dict[str, Any]]) -> FunctionTests:
    r"""LiveCodeBench's functional (LeetCode) cases as function tests, graded as lcb_runner does: the
    method ``fn_name`` of ``Solution()`` (or a plain function of that name) is called with one JSON
    value per input line; a tuple result counts as a list; it must equal the JSON output.

    >>> functional_tests("add", [{"input": "1\n2", "output": "3"}]).tests[0].splitlines()[1]
    "_result = _call(*[json.loads(line) for line in '1\\n2'.split('\\n')])"
    """
    tests = tuple(
        f"_call = Solution().{fn_name} if 'Solution' in globals() else {fn_name}\n"
        f"_result = _call(*[json.loads(line) for line in {str(case['input'])!r}.split('\\n')])\n"
        f"assert (list(_result) if isinstance(_result, tuple) else _result) == json.loads({str(case['output'])!r})"
        for case in cases
    )
    return FunctionTests(("import json",), tests, fn_name, prelude=LIVECODEBENCH_PRELUDE)


def mbpp_entry_point(tests: Sequence[str]) -> str | None:
    """The function MBPP's asserts test: the first called name that is not a builtin, else the first.

    >>> mbpp_entry_point(["assert set(similar_elements((3, 4), (4, 5))) == set((4,))"])
    'similar_elements'
    >>> mbpp_entry_point(["assert sum(10, 15) == 6"])  # task 126 names its function sum
    'sum'
    """
    try:
        trees = [ast.parse(source) for source in tests]
    except SyntaxError:  # the sandbox will fail such a test anyway
        return None
    calls = [node for tree in trees for node in ast.walk(tree) if isinstance(node, ast.Call)]
    called = [call.func.id for call in calls if isinstance(call.func, ast.Name)]
    return next((name for name in called if not hasattr(builtins, name)), called[0] if called else None)


_COLUMNS = ("tests", "private_tests", "fn_name", "test_script", "test_list", "test", "entry_point", "test_imports", "test_setup")


def code_reward(prompts: list[str], completions: list[str], **columns: Any) -> list[float | None]:
    """1.0 per completion whose program passes all of its sample's tests, else 0.0 (None: no tests).

    TRL's reward-function convention: dataset columns arrive as keyword arguments; those named in
    the module docstring are used, any other is ignored. Samples run in parallel, each under
    :data:`DEFAULT_LIMITS`; a failure of the sandbox scores 0.0 and never raises.

    >>> code_reward(["Add one."] * 2, ["```python\\ndef f(x):\\n    return x + 1\\n```", "def f(x): return x"],
    ...             test_list=[["assert f(1) == 2"]] * 2)
    [1.0, 0.0]
    """
    if not any(name in columns for name in ("tests", "test_script", "test_list", "test")):
        raise ValueError(
            "code_reward needs test columns, one of: tests (stdin/stdout or, with fn_name, functional), test_script"
            f" (MBPP+), test_list (MBPP), test + entry_point (HumanEval); got {sorted(columns)}"
        )
    lengths = {name: len(columns[name]) for name in _COLUMNS if name in columns} | {"prompts": len(prompts)}
    if set(lengths.values()) != {len(completions)}:
        raise ValueError(f"columns differ in length from the {len(completions)} completions: {lengths}")
    samples = [{name: columns[name][i] for name in _COLUMNS if name in columns} for i in range(len(completions))]
    return score(completions, [_tests_or_none_that_pass(sample) for sample in samples])


def _tests_or_none_that_pass(sample: dict[str, Any]) -> CodeTests | None:
    """:func:`parse_tests`, except that unreadable tests (a data bug) are logged and fail every program."""
    try:
        return parse_tests(sample)
    except (ValueError, KeyError, TypeError) as exc:
        logger.error("code_reward: unreadable tests, the sample scores 0.0: %s: %s", type(exc).__name__, exc)
        return FunctionTests((), ())


def score(
    completions: Sequence[str], tests: Sequence[CodeTests | None], limits: Limits = DEFAULT_LIMITS, workers: int = WORKERS
) -> list[float | None]:
    """1.0 / 0.0 per completion against its tests (None where a sample has no tests), in parallel."""

    def one(pair: tuple[str, CodeTests | None]) -> float | None:
        completion, sample_tests = pair
        if sample_tests is None:
            return None
        try:
            return 1.0 if passes(extract_program(completion), sample_tests, limits) else 0.0
        except Exception:  # noqa: BLE001  a broken sample scores 0, the batch goes on
            return 0.0

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, zip(completions, tests)))
