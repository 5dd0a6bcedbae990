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
- HumanEval style: ``test`` defines ``check(candidate)``, called with the function ``entry_point``.

In the function formats (all but stdin/stdout) the program runs as module ``__solution__``, so its
``if __name__ == "__main__":`` block (examples, ``input()``) does not run; it must define the tested
function itself (HumanEval's prompt is not prepended, so it needs its own imports, e.g. ``from
typing import List``). Programs and tests may import the standard library and numpy (EvalPlus's
tests compare floats with it), shared read-only by the sandbox; nothing else installed.

The program is the last ```python (or ```py, or bare ```) fenced block of the completion, or the
whole completion when it has no closed fence (:func:`extract_program`).

Faked success. In the function formats the tests run in the program's own interpreter, so the
harness (:data:`HARNESS`) trusts nothing the program can write. A sample passes only when the
sandbox run exits 0 *and* the control channel carries exactly ``done <number of tests>`` followed by
``verdict <nonce>``, where the nonce is a fresh random value the parent sends only in reply to
``done``: it is not in the program's process while its code or the tests run. The harness says
``done`` only after every test ran without raising. This defeats, each tested in
``tests/test_sandbox.py``: exiting early with status 0 (``sys.exit(0)``, ``os._exit(0)``,
``raise SystemExit`` inside a test; the harness catches BaseException and ``os._exit`` skips the
verdict), redefining ``exit``, ``print`` or ``AssertionError`` (the harness uses none of them; an
``assert`` raises the real AssertionError), patching builtins the tests use (``builtins.set = ...``;
the tests see a copy of the builtins taken before the program ran, names the program defines do not
shadow them, and the modules the tests import are imported before the program runs and put back in
``sys.modules`` after it), and printing a fake success line
(stdout is not read). Stdin/stdout tests are compared by the parent, out of the program's reach.

Not defeated, by design of in-process tests: a program that returns objects which compare equal
to anything (``__eq__`` returning True), that patches attributes of modules the tests use (e.g.
``math.isclose``), or that is written against this harness (speaking its protocol on fd 3/4 or
reading its frames). The first two are classic reward hacks to watch for in samples. (Modules
are put back once, after the program ran; its functions, called by the tests, could replace them
again before an import inside a test function.)

Pure Python: no torch, no trainer; the program itself runs only inside the sandbox.
"""

from __future__ import annotations

import ast
import builtins
import json
import logging
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

from train.rewards.sandbox import run_program

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Limits of one sandbox run (a stdin/stdout sample makes one run per case)."""

    timeout_s: float = 10.0  # wall clock; higher tolerates slow machines, lower bounds a batch's scoring time
    memory_mb: int = 1024  # address space; the interpreter alone takes about 30 MB
    max_output_bytes: int = 1 << 20  # per stream; more kills the program (and fails it)
    packages: tuple[str, ...] = ("numpy",)  # installed packages programs and tests may import (EvalPlus's tests use numpy)


DEFAULT_LIMITS = Limits()
WORKERS = 4  # sandbox runs at a time; each is a process, the threads only wait on them


@dataclass(frozen=True)
class FunctionTests:
    """Tests run by the harness in the program's interpreter, after the program (MBPP, HumanEval)."""

    setup: tuple[str, ...]  # run before the program, in the tests' namespace (imports)
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


# Runs inside the sandbox as main.py, next to spec.json. It keeps its own references to everything
# it needs before the program runs, and after the tests it switches off every hook the program
# could have installed (trace, profile, gc callbacks, signals, timers) before asking for the nonce.
HARNESS = r'''
import builtins, gc, json, os, signal, sys

def main():
    write, read, exit_now, compile_, exec_, enumerate_, range_ = os.write, os.read, os._exit, compile, exec, enumerate, range
    sys_modules = sys.modules
    settrace, setprofile, gc_callbacks, gc_disable = sys.settrace, sys.setprofile, gc.callbacks, gc.disable
    setitimer, sigmask, all_signals = signal.setitimer, signal.pthread_sigmask, signal.valid_signals()
    monitoring = getattr(sys, "monitoring", None)  # Python 3.12+
    with open("spec.json", encoding="utf-8") as f:
        spec = json.load(f)
    pristine_builtins = dict(builtins.__dict__)
    test_ns = {"__name__": "__tests__", "__builtins__": pristine_builtins}
    program_ns = {"__name__": "__solution__", "__builtins__": builtins}
    passed = 0
    try:
        for source in spec["setup"]:
            exec_(compile_(source, "<setup>", "exec", dont_inherit=True, optimize=0), test_ns)
        for name in spec["modules"]:  # what the tests import, genuine, before the program can fake it
            try:
                __import__(name)
            except Exception:
                pass
        modules = dict(sys_modules)
        exec_(compile_(spec["program"], "<solution>", "exec", dont_inherit=True, optimize=0), program_ns)
        for name, value in program_ns.items():
            if name == spec["entry_point"] or not (name in test_ns or name in pristine_builtins or name.startswith("__")):
                test_ns[name] = value
        for name, module in modules.items():
            sys_modules[name] = module
        for i, source in enumerate_(spec["tests"]):
            exec_(compile_(source, f"<test {i}>", "exec", dont_inherit=True, optimize=0), test_ns)
            passed += 1
    except BaseException as exc:
        write(2, f"harness: {passed} test(s) passed, then {type(exc).__name__}\n".encode(errors="replace"))
        exit_now(1)
    settrace(None)
    setprofile(None)
    del gc_callbacks[:]
    gc_disable()
    for timer in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF):
        setitimer(timer, 0)
    sigmask(signal.SIG_BLOCK, all_signals)
    if monitoring is not None:
        for tool in range_(6):
            for event in range_(32):
                try:
                    monitoring.register_callback(tool, 1 << event, None)
                except Exception:
                    pass
    write(3, b"done %d\n" % passed)
    nonce = b""
    while not nonce.endswith(b"\n"):
        chunk = read(4, 64)
        if not chunk:
            exit_now(1)
        nonce += chunk
    write(3, b"verdict " + nonce)
    exit_now(0)

main()
'''

# stdin/stdout programs run as __main__; -S leaves out site's exit() and quit(), which they use.
_STDIO_BOOT = r'''
import builtins, sys
builtins.exit = builtins.quit = sys.exit
with open("solution.py", encoding="utf-8") as f:
    source = f.read()
namespace = {"__name__": "__main__", "__file__": "solution.py", "__builtins__": builtins}
exec(compile(source, "solution.py", "exec", dont_inherit=True), namespace)
'''


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
    result = run_program(_STDIO_BOOT, files={"solution.py": program}, stdin=stdin, timeout_s=limits.timeout_s,
                         memory_mb=limits.memory_mb, max_output_bytes=max_output, packages=limits.packages)  # fmt: skip
    return result.status == "ok" and normalise_output(result.stdout) == normalise_output(expected)


def _passes_function_tests(program: str, tests: FunctionTests, limits: Limits) -> bool:
    nonce = secrets.token_hex(16).encode()
    replies = [nonce + b"\n"]

    def answer(line: bytes) -> bytes | None:  # the nonce, once, and only for "done"
        return replies.pop() if line.startswith(b"done") and replies else None

    spec = {"program": tests.prelude + program, "setup": list(tests.setup), "tests": list(tests.tests), "entry_point": tests.entry_point,
            "modules": imported_modules([*tests.setup, *tests.tests])}  # fmt: skip
    result = run_program(HARNESS, files={"spec.json": json.dumps(spec)}, control=answer, timeout_s=limits.timeout_s,
                         memory_mb=limits.memory_mb, max_output_bytes=limits.max_output_bytes,
                         packages=limits.packages)  # fmt: skip
    expected = (b"done %d" % len(tests.tests), b"verdict " + nonce)
    return result.status == "ok" and result.returncode == 0 and result.control == expected


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
        return FunctionTests((), (sample["test"], f"check({sample['entry_point']})"), sample["entry_point"])
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
    r"""LiveCodeBench's functional (LeetCode) cases as harness tests, graded as lcb_runner does: the
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


def imported_modules(sources: Sequence[str]) -> list[str]:
    """The absolute imports anywhere in ``sources`` (unparsable ones contribute nothing).

    >>> imported_modules(["import math\\ndef check(c):\\n    from os.path import join\\n    import a.b as c", "x = ("])
    ['math', 'os.path', 'a.b']
    """
    names: list[str] = []
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.append(node.module)
    return list(dict.fromkeys(names))


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


_COLUMNS = ("tests", "private_tests", "fn_name", "test_script", "test_list", "test", "entry_point", "test_imports")


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
