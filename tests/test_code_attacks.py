"""Adversarial tests of the code verifier: one per way a program could forge its reward.

The threat model is in ``train/rewards/code.py``: the program may inspect and change anything in
its own process and read anything it can open; it must not see the tests or expected values
before it runs, reach the verdict, or pass a comparison with an object of its own. Each attack
below is a *wrong* program plus the attack, judged on a real-looking problem (HumanEval, MBPP,
EvalPlus or LeetCode style), and must fail, while the right program for the same problem passes
in the same test, so the failure is the attack's. Where the attack can say what it found (its
stdout, flushed, is the run's callee output), the test also checks that it ran and found nothing:
frame and ``gc`` walks report how many of the tests' strings they reached (none), file and
``/proc`` attempts report each attempt, which must all have failed. Every test also checks that
the trainer's side is untouched (:class:`tests.test_sandbox.TrainerState`).

The last tests check what must keep working across the process boundary (plain data of every
type, the program's objects through handles, exceptions) and pin down what is not defended (a
helper the program defines and the tests trust), so that the docstring's claims stay true.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.test_sandbox import TrainerState, _attempts_failed, trainer  # noqa: F401  (trainer is a fixture)
from train.rewards import REWARDS
from train.rewards.code import FunctionTests, Limits, extract_program, parse_tests, passed_all, run_function_tests
from train.rewards.sandbox import LinkedResult

LIMITS = Limits(timeout_s=20.0)
MARK = "tests-5c1d7e"  # in every problem's tests: a program that reaches the tests' text sees it


@dataclass(frozen=True)
class Problem:
    columns: dict[str, Any]  # one sample's dataset columns
    right: str  # a program that passes

    @property
    def tests(self) -> FunctionTests:
        parsed = parse_tests(self.columns)
        assert isinstance(parsed, FunctionTests)
        return parsed


HUMANEVAL_TEST = f"""import math

MARK = {MARK!r}


def check(candidate):
    assert math.isclose(candidate(2), 4.0)
    assert math.isclose(candidate(-1.5), -3.0)
    assert candidate(0) == 0
"""

DESCRIBE_TEST = f"""MARK = {MARK!r}


def check(candidate):
    length, upper, letters, counts, half, even, pairs = candidate("abca")
    assert length == 4
    assert upper == "ABCA"
    assert letters == {{"a", "b", "c"}}
    assert counts == {{"a": 2, "b": 1, "c": 1}}
    assert half == 2.0
    assert even == True
    assert pairs == [("a", "b"), ("b", "c"), ("c", "a")]
    assert candidate("xyz") == (3, "XYZ", {{"x", "y", "z"}}, {{"x": 1, "y": 1, "z": 1}}, 1.5, False, [("x", "y"), ("y", "z")])
"""

# EvalPlus's MBPP+ script shape: its assertion helper, inputs, results, a loop calling by name.
EVALPLUS_SCRIPT = f"""import numpy as np

MARK = {MARK!r}


def is_floats(x) -> bool:
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)):
        return all(isinstance(i, float) for i in x)
    if isinstance(x, np.ndarray):
        return x.dtype == np.float64 or x.dtype == np.float32
    return False


def assertion(out, exp, atol):
    if atol == 0 and is_floats(exp):
        atol = 1e-6
    if out != exp and atol != 0:
        assert np.allclose(out, exp, rtol=1e-07, atol=atol)
    else:
        assert out == exp, f"out: {{out}}, exp: {{exp}}"


inputs = [[[1.0, 2.0, 4.5]], [[0.5]], [[-2.0, 2.0]]]
results = [2.5, 0.5, 0.0]
for i, (inp, exp) in enumerate(zip(inputs, results)):
    assertion(average(*inp), exp, 0)
"""

LEETCODE_CASES = [
    {"input": "[1, 2, 4]", "output": "2", "testtype": "functional"},
    {"input": "[7, 9, 11, 13]", "output": "0", "testtype": "functional"},
    {"input": "[0, -2, 5, 6]", "output": "3", "testtype": "functional"},
]

PROBLEMS = {
    "humaneval": Problem({"test": HUMANEVAL_TEST, "entry_point": "double"}, "def double(x):\n    return 2 * x\n"),
    "describe": Problem(
        {"test": DESCRIBE_TEST, "entry_point": "describe"},
        "def describe(word):\n    counts = {}\n    for c in word:\n        counts[c] = counts.get(c, 0) + 1\n"
        "    return (len(word), word.upper(), set(word), counts, len(word) / 2, len(word) % 2 == 0,\n"
        "            list(zip(word, word[1:])))\n",
    ),
    "mbpp": Problem(
        {"test_list": [f"assert add_up([1, 2, 3]) == 6  # {MARK}", "assert add_up([]) == 0", "assert add_up([5, -5, 7]) == 7"],
         "test_imports": ["import math"]},
        "def add_up(xs):\n    return sum(xs)\n",
    ),  # fmt: skip
    "mbpp_set": Problem(
        {"test_list": [f"assert set(pair_sum([1, 2, 3])) == set([3, 5])  # {MARK}", "assert len(pair_sum([4, 5])) == 1"],
         "test_imports": ["import math"]},
        "def pair_sum(xs):\n    return [a + b for a, b in zip(xs, xs[1:])]\n",
    ),  # fmt: skip
    "evalplus": Problem(
        {"test_script": EVALPLUS_SCRIPT, "test_list": ["assert average([2.0]) == 2.0"]},
        "def average(xs):\n    return sum(xs) / len(xs)\n",
    ),
    "leetcode": Problem(
        {"tests": json.dumps(LEETCODE_CASES), "fn_name": "countEven"},
        "class Solution:\n    def countEven(self, nums: List[int]) -> int:\n        return sum(x % 2 == 0 for x in nums)\n",
    ),
    "minmax": Problem(
        {"test": f"MARK = {MARK!r}\n\ndef check(candidate):\n    assert candidate([3, 1, 2]) == (1, 3)\n"
                 "    assert candidate([5]) == (5, 5)\n", "entry_point": "minmax"},
        "def minmax(xs):\n    return min(xs), max(xs)\n",
    ),  # fmt: skip
    "map": Problem(
        {"test": f"MARK = {MARK!r}\n\ndef check(candidate):\n    assert all(map(lambda x: candidate(x) == 2 * x, [1, 2, 3]))\n",
         "entry_point": "double"},
        "def double(x):\n    return 2 * x\n",
    ),  # fmt: skip
}


@dataclass(frozen=True)
class Attack:
    problem: str  # a key of PROBLEMS
    program: str  # a wrong program plus the attack
    reports: tuple[str, ...] = ()  # lines the program must have printed (what it found)
    attempts: tuple[str, ...] = ()  # names of ATTEMPT lines, each of which must say "failed"
    timeout_s: float = LIMITS.timeout_s


# Prepended to programs that report attempts: one line per attempt, flushed (the program is
# killed when the tests end, so buffered output would be lost).
ATTEMPT = """
import os, sys
def attempt(name, action):
    try:
        result = action()
    except BaseException as exc:
        print(name, "failed", type(exc).__name__, exc, sep="\\t", flush=True)
    else:
        print(name, "SUCCEEDED", repr(result)[:200], sep="\\t", flush=True)
"""

# Replaces every test-looking string reachable from a dict or list by "pass" (what won against
# tests run in the program's own interpreter) and counts those that held the tests' MARK.
NEUTRALISE = """
import gc, sys
MARK = "tests-" + "5c1d7e"  # built here, so that this program's own text does not hold it
NEEDLES = ("ass" + "ert ", "che" + "ck(")

def neutralise(container, seen):
    if id(container) in seen:
        return 0
    seen.add(id(container))
    marked = 0
    items = list(container.items()) if isinstance(container, dict) else list(enumerate(container))
    for key, value in items:
        if isinstance(value, str) and any(needle in value for needle in NEEDLES):
            marked += MARK in value
            try:
                container[key] = "pass"
            except Exception:
                pass
        elif isinstance(value, (dict, list)):
            marked += neutralise(value, seen)
    return marked

def walk_frames(frame):
    marked, seen = 0, set()
    while frame is not None:
        marked += neutralise(frame.f_locals, seen) + neutralise(frame.f_globals, seen)
        frame = frame.f_back
    return marked
"""

WRONG_DOUBLE = "\ndef double(x):\n    return 0\n"


def _reporting_double(expression: str) -> str:
    """A wrong ``double`` that runs ``expression`` (printing MARKED <n>) at import and at each call."""
    return (
        NEUTRALISE
        + f'\nprint("MARKED", {expression}, flush=True)\n'
        + f'\ndef double(x):\n    print("MARKED", {expression}, flush=True)\n    return 0\n'
    )


FRAME_ATTACKS = {
    "frames: sys._getframe walked to the tests": Attack("humaneval", _reporting_double("walk_frames(sys._getframe(1))"),
                                                        ("MARKED 0",)),
    "frames: a traceback's frames walked": Attack("humaneval", """
def walk_from_traceback():
    try:
        raise ValueError("look up")
    except ValueError as exc:  # walked while its frame runs: a finished frame has no f_back
        return walk_frames(exc.__traceback__.tb_frame)
""" + _reporting_double("walk_from_traceback()"), ("MARKED 0",)),
    "frames: inspect.stack": Attack("humaneval", "import inspect\n" + _reporting_double(
        "sum(walk_frames(info.frame) for info in inspect.stack())"), ("MARKED 0",)),
    "gc.get_objects scanned for the tests": Attack("humaneval", _reporting_double(
        "sum(neutralise(o, set()) for o in gc.get_objects() if isinstance(o, (dict, list)))"), ("MARKED 0",)),
    "gc.get_referrers from the function and its frame": Attack("humaneval", """
def referrers(roots, depth=3):
    marked, seen, layer = 0, set(), list(roots)
    for _ in range(depth):
        layer = [r for obj in layer for r in gc.get_referrers(obj)]
        for obj in layer:
            if isinstance(obj, (dict, list)):
                marked += neutralise(obj, seen)
            elif hasattr(obj, "f_locals"):
                marked += walk_frames(obj)
    return marked
""" + _reporting_double("referrers([sys._getframe(), globals()] + ([double] if 'double' in globals() else []))"),
        ("MARKED 0",)),
}  # fmt: skip

def _fds_attack() -> str:
    return ATTEMPT + WRONG_DOUBLE + """
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
print("FDS", [fd for fd in range(256) if is_open(fd)], flush=True)
def old_handshake():  # the in-process harness's: "done", then the parent's nonce, then "verdict"
    os.write(3, b"done 2\\n")
    nonce = os.read(4, 64)
    os.write(3, b"verdict " + nonce)
    os._exit(0)
attempt("fd 3/4: the old verdict handshake", old_handshake)
attempt("fd 3: passed 2", lambda: os.write(3, b"passed 2\\n"))
attempt("fd 4: passed 2", lambda: os.write(4, b"passed 2\\n"))
os._exit(0)
"""


def _files_attack() -> str:
    """Reads spec.json (and builds an answer key from it if it could), then every file under the
    working folder, /tmp, /var/tmp, /dev/shm, and the tests' process's folders through /proc."""
    return ATTEMPT + '''
import ast, json
MARK = "tests-" + "5c1d7e"

def answer_key():
    spec = json.load(open("spec.json"))
    key = {}
    for source in spec["tests"]:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Call):
                key[repr([ast.literal_eval(a) for a in node.left.args])] = ast.literal_eval(node.comparators[0])
    return key

KEY = {}
attempt("read spec.json", lambda: KEY.update(answer_key()) or len(KEY))

def sweep(folder):
    leaks = []
    for root, dirs, files in os.walk(folder):
        for name in files:
            try:
                if MARK in open(os.path.join(root, name), errors="replace").read():
                    leaks.append(os.path.join(root, name))
            except OSError:
                pass
    return leaks

for folder in (os.getcwd(), "/tmp", "/var/tmp", "/dev/shm", "/run"):
    print("LEAKS", folder, sweep(folder), flush=True)

def add_up(xs):
    return KEY.get(repr([xs]), -1)
'''


SIBLINGS = '''
def siblings():
    """The other sandboxed programs of this run: same parent, running main.py (the tests)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            status = open(f"/proc/{entry}/status").read()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
        except OSError:
            continue
        ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        if ppid == os.getppid() and b"main.py" in cmdline:
            found.append(int(entry))
    return found
'''

PROC_ATTEMPTS = ("environ", "mem", "maps", "cwd", "root", "fd", "fd 3 write", "spec via cwd", "tmp via root",
                 "SIGSTOP", "SIGKILL", "ptrace attach", "pidfd_getfd 3")  # fmt: skip


def _proc_attack() -> str:
    """Inside the call (so the tests' process is certainly running): everything /proc offers on it."""
    return ATTEMPT + SIBLINGS + '''
import ctypes, signal
libc = ctypes.CDLL(None, use_errno=True)

def checked(result):
    if result == -1:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return result

def mem(pid):
    with open(f"/proc/{pid}/mem", "rb") as f:
        f.seek(0x400000)
        return f.read(16)

def double(x):
    pids = siblings()
    print("SIBLINGS", len(pids), flush=True)
    for pid in pids:
        attempt("environ", lambda: open(f"/proc/{pid}/environ").read())
        attempt("mem", lambda: mem(pid))
        attempt("maps", lambda: open(f"/proc/{pid}/maps").read())
        attempt("cwd", lambda: os.listdir(f"/proc/{pid}/cwd"))
        attempt("root", lambda: os.listdir(f"/proc/{pid}/root"))
        attempt("fd", lambda: os.listdir(f"/proc/{pid}/fd"))
        attempt("fd 3 write", lambda: os.write(os.open(f"/proc/{pid}/fd/3", os.O_WRONLY), b"passed 2\\n"))
        attempt("spec via cwd", lambda: open(f"/proc/{pid}/cwd/spec.json").read())
        attempt("tmp via root", lambda: os.listdir(f"/proc/{pid}/root/tmp"))
        attempt("SIGSTOP", lambda: os.kill(pid, signal.SIGSTOP))
        attempt("SIGKILL", lambda: os.kill(pid, signal.SIGKILL))
        attempt("ptrace attach", lambda: checked(libc.ptrace(16, pid, None, None)))
        attempt("pidfd_getfd 3", lambda: checked(libc.syscall(438, os.pidfd_open(pid), 3, 0)))
    return 0
'''


FILE_ATTACKS = {
    "the verdict protocol spoken on inherited fds": Attack(
        "humaneval", _fds_attack(), ("FDS [0, 1, 2, 5, 6]",),
        ("fd 3/4: the old verdict handshake", "fd 3: passed 2", "fd 4: passed 2")),
    "spec.json and every file under /tmp read": Attack(
        "mbpp", _files_attack(), tuple(f"LEAKS {folder} []" for folder in ("/tmp", "/var/tmp", "/dev/shm", "/run")),
        ("read spec.json",)),
    "the tests' process through /proc: files, memory, signals, ptrace, its fds": Attack(
        "humaneval", _proc_attack(), ("SIBLINGS 1",), PROC_ATTEMPTS),
}  # fmt: skip

# Each returns objects of its own for every value the tests compare, built on wrong values.
TRICKS = """
class Same:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = object.__hash__
"""


def _tricked_describe(cls: str, definition: str, values: str = "0, 0, 0, 0, 0, 0, 0") -> str:
    """A wrong ``describe`` whose results are instances of ``cls`` (defined by ``definition``),
    equal to anything, in a tuple subclass ``Seven`` equal to anything too."""
    return definition + f"""
class Seven(tuple):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = tuple.__hash__

def describe(word):
    return Seven({cls}(v) for v in ({values},))
"""


EQUALITY_ATTACKS = {
    "an object whose __eq__ is always True": Attack("describe", TRICKS + "\ndef describe(word):\n    return (Same(),) * 7\n"),
    "a tuple subclass equal to everything": Attack("minmax", (
        "class T(tuple):\n    __eq__ = lambda self, other: True\n    __ne__ = lambda self, other: False\n"
        "    __hash__ = tuple.__hash__\ndef minmax(xs):\n    return T((0, 0))\n")),
    "int (and so bool-like) subclass equal to everything": Attack(
        "describe", _tricked_describe("I", "class I(int):\n    __eq__ = lambda self, other: True\n"
                                           "    __ne__ = lambda self, other: False\n    __hash__ = int.__hash__\n")),
    "a float subclass equal to everything": Attack(
        "describe", _tricked_describe("F", "class F(float):\n    __eq__ = lambda self, other: True\n"
                                           "    __ne__ = lambda self, other: False\n    __hash__ = float.__hash__\n")),
    "a str subclass equal to everything": Attack(
        "describe", _tricked_describe("S", "class S(str):\n    __eq__ = lambda self, other: True\n"
                                           "    __ne__ = lambda self, other: False\n    __hash__ = str.__hash__\n",
                                      "'0', '0', '0', '0', '0', '0', '0'")),
    "a list subclass equal to everything": Attack(
        "describe", _tricked_describe("L", "class L(list):\n    __eq__ = lambda self, other: True\n"
                                           "    __ne__ = lambda self, other: False\n",
                                      "[], [], [], [], [], [], []")),
    "dict keys and set members that hash and compare as anything": Attack("describe", """
class K(str):
    def __hash__(self):
        return hash(str(self)[1:])  # K("qa") hashes as "a"
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False

def describe(word):
    counts = {}
    for c in word:
        counts[c] = counts.get(c, 0) + 1
    wrong_counts = {K("q" + c): n for c, n in counts.items()}
    wrong_letters = {K("q" + c) for c in word}
    return (len(word), word.upper(), wrong_letters, wrong_counts, len(word) / 2, len(word) % 2 == 0,
            list(zip(word, word[1:])))
"""),
    "a NaN float subclass that is never unequal": Attack("evalplus", """
class N(float):
    def __ne__(self, other):
        return False
    def __eq__(self, other):
        return True
    __hash__ = float.__hash__

def average(xs):
    return N("nan")
"""),
    "NaN": Attack("evalplus", "def average(xs):\n    return float('nan')\n"),
    "an object with __float__ and __index__ giving the answer": Attack("humaneval", """
class Answer:
    def __init__(self, x):
        self.x = x
    def __float__(self):
        return 2.0 * self.x
    def __index__(self):
        return int(2 * self.x)
    def __eq__(self, other):
        return True

def double(x):
    return Answer(x)
"""),
    "a handle hoping to compare equal: the function itself": Attack("humaneval", "def double(x):\n    return double\n"),
    "a result whose __repr__ raises (in the tests' assertion message)": Attack("evalplus", """
class Loud:
    def __repr__(self):
        raise RuntimeError("no repr")
    __str__ = __repr__
    def __eq__(self, other):
        return True

def average(xs):
    return Loud()
"""),
}  # fmt: skip

PATCH_ATTACKS = {
    "math.isclose patched": Attack("humaneval", WRONG_DOUBLE + "import math\nmath.isclose = lambda *a, **k: True\n"),
    "a module replaced in sys.modules": Attack("humaneval", WRONG_DOUBLE + (
        "import sys, types\nfake = types.ModuleType('math')\nfake.isclose = lambda *a, **k: True\nsys.modules['math'] = fake\n")),
    "numpy.allclose patched": Attack("evalplus", (
        "import numpy\nnumpy.allclose = lambda *a, **k: True\n"
        "def average(xs):\n    return 0.0\n")),
    "json.loads patched (LeetCode tests parse their cases with it)": Attack("leetcode", (
        "import json\njson.loads = lambda *a, **k: 0\n"
        "class Solution:\n    def countEven(self, nums):\n        return 0\n")),
    "builtins patched: set, AssertionError, print, exit": Attack("mbpp_set", TRICKS + (
        "import builtins, sys\nclass Never(Exception): pass\n"
        "builtins.set = lambda *a: Same()\nbuiltins.len = lambda *a: 1\n"
        "builtins.AssertionError = Never\nbuiltins.print = lambda *a, **k: None\nbuiltins.exit = lambda *a: sys.exit(0)\n"
        "def pair_sum(xs):\n    return [0]\n")),
    "a global shadowing a builtin the asserts use": Attack("mbpp_set", TRICKS + "set = lambda *a: Same()\nlen = lambda *a: 1\n"
                                                                               "def pair_sum(xs):\n    return [0]\n"),
    "a trace function ending the tests": Attack("humaneval", WRONG_DOUBLE + (
        "import sys\ndef skip(frame, event, arg):\n"
        "    if frame.f_code.co_filename.startswith('<test'):\n        raise SystemExit(0)\n    return skip\n"
        "sys.settrace(skip)\n")),
}  # fmt: skip

LIFECYCLE_ATTACKS = {
    "os._exit(0) during import": Attack("humaneval", WRONG_DOUBLE + "import os\nos._exit(0)\n"),
    "sys.exit(0) during import": Attack("humaneval", WRONG_DOUBLE + "import sys\nsys.exit(0)\n"),
    "os._exit(0) mid-call": Attack("humaneval", "import os\ndef double(x):\n    os._exit(0)\n"),
    "sys.exit(0) mid-call": Attack("humaneval", "import sys\ndef double(x):\n    sys.exit(0)\n"),
    "KeyboardInterrupt mid-call": Attack("humaneval", "def double(x):\n    raise KeyboardInterrupt\n"),
    "SIGKILL to itself mid-call": Attack("humaneval", "import os, signal\ndef double(x):\n    os.kill(os.getpid(), signal.SIGKILL)\n"),
    "the link closed during import": Attack("humaneval", WRONG_DOUBLE + "import os\nos.close(5)\nos.close(6)\n"),
    "StopIteration ending the tests' map early": Attack("map", "def double(x):\n    raise StopIteration\n"),
    "an exception whose __str__ raises": Attack("humaneval", (
        "class Odd(Exception):\n    def __str__(self):\n        raise RuntimeError('no str')\n"
        "def double(x):\n    raise Odd()\n")),
    "sleeping forever mid-call": Attack("humaneval", "import time\ndef double(x):\n    time.sleep(3600)\n", timeout_s=3.0),
    "fake verdict lines on stdout and stderr": Attack("humaneval", WRONG_DOUBLE + (
        "import sys\nfor stream in (sys.stdout, sys.stderr):\n"
        "    print('passed 2\\ndone 2\\nverdict 0123456789abcdef\\nAll tests passed', file=stream, flush=True)\n")),
    "exec of another program": Attack("humaneval", WRONG_DOUBLE + (
        "import os, sys\nos.execv(sys.executable, [sys.executable, '-c', 'import os; os.write(3, b\"passed 2\\\\n\")'])\n")),
}  # fmt: skip


def _forged(line: bytes, then: str = "time.sleep(60)") -> str:
    """A ``double`` that writes ``line`` on the link itself, as its reply, then ``then``."""
    return f"import os, time\ndef double(x):\n    os.write(5, {line!r})\n    {then}\n"


LINK_ATTACKS = {
    "a junk line on the link during import": Attack("humaneval", WRONG_DOUBLE + "import os\nos.write(5, b'passed 2\\n')\n"),
    "forged names and out-of-turn replies": Attack("humaneval", WRONG_DOUBLE + (
        "import os\nos.write(5, b'{\"names\": [[\"double\", {\"handle\": [0, \"function\"]}]]}\\n'"
        " + b''.join(b'{\"id\": %d, \"value\": true}\\n' % i for i in range(1, 4)))\n")),
    "a reply with the wrong id": Attack("humaneval", _forged(b'{"id": 7, "value": 4.0}\n')),
    "a flood on the link": Attack("humaneval", _forged(b"7" * (1 << 20), "[os.write(5, b'7' * (1 << 20)) for _ in range(40)]")),
    "a reply nested past JSON's recursion limit": Attack(
        "humaneval", _forged(b'{"id": 1, "value": ' + b'{"list": [' * 50000 + b"]}" * 50000 + b"}\n")),
    "a reply nested past the wire's depth": Attack(
        "humaneval", _forged(b'{"id": 1, "value": ' + b'{"list": [' * 150 + b"4.0" + b"]}" * 150 + b"}\n")),
    "a reply with an unknown tag": Attack("humaneval", _forged(b'{"id": 1, "value": {"eval": "4.0"}}\n')),
    "a reply with a 5000-digit decimal int": Attack("humaneval", _forged(b'{"id": 1, "value": ' + b"9" * 5000 + b"}\n")),
    "a reply with a handle the tests never saw": Attack("humaneval", _forged(b'{"id": 1, "value": {"handle": [12345, "float"]}}\n')),
}  # fmt: skip

DATA_ATTACKS = {
    "a result nested 200 deep": Attack("humaneval", "def double(x):\n    v = 4.0\n    for _ in range(200):\n        v = [v]\n    return v\n"),
    "a list that contains itself": Attack("humaneval", "def double(x):\n    v = []\n    v.append(v)\n    return v\n"),
    "a 40 MiB result": Attack("humaneval", "def double(x):\n    return 'x' * (40 << 20)\n"),
    "an endless iterator": Attack("humaneval", "import itertools\ndef double(x):\n    return itertools.count()\n"),
}  # fmt: skip

ATTACKS = {**FRAME_ATTACKS, **FILE_ATTACKS, **EQUALITY_ATTACKS, **PATCH_ATTACKS, **LIFECYCLE_ATTACKS, **LINK_ATTACKS, **DATA_ATTACKS}


def _judge(program: str, tests: FunctionTests, timeout_s: float = LIMITS.timeout_s) -> tuple[bool, LinkedResult]:
    run = run_function_tests(extract_program(program), tests, Limits(timeout_s=timeout_s))
    return passed_all(run, tests), run


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_fails_where_the_right_program_passes(trainer: TrainerState, name: str) -> None:  # noqa: F811
    attack = ATTACKS[name]
    problem = PROBLEMS[attack.problem]
    right_passes, _ = _judge(problem.right, problem.tests)
    start = time.monotonic()
    attack_passes, run = _judge(attack.program, problem.tests, attack.timeout_s)
    assert right_passes and not attack_passes, (run.caller.stderr[-2000:], run.callee.stderr[-2000:])
    assert time.monotonic() - start < attack.timeout_s + 5.0
    for line in attack.reports:
        assert line in run.callee.stdout.splitlines(), run.callee.stdout[-3000:]
    if any(line.startswith("MARKED ") for line in attack.reports):  # every walk, at import and at each call, found nothing
        assert {line for line in run.callee.stdout.splitlines() if line.startswith("MARKED")} == {"MARKED 0"}
    if attack.attempts:
        attempt_lines = "\n".join(line for line in run.callee.stdout.splitlines() if "\t" in line)
        assert _attempts_failed(attempt_lines, list(attack.attempts)), run.callee.stdout[-3000:]
    assert MARK not in run.callee.stdout + run.callee.stderr
    trainer.assert_untouched(run.caller)
    trainer.assert_untouched(run.callee)


def test_every_attack_scores_zero_through_code_reward(trainer: TrainerState) -> None:  # noqa: F811
    """The same attacks in one batch through ``REWARDS["code"]`` (TRL's convention, 4 workers),
    with each problem's right program: every attack 0.0, every right program 1.0."""
    names = [name for name, attack in ATTACKS.items() if attack.timeout_s == LIMITS.timeout_s]
    samples = [(ATTACKS[name].program, PROBLEMS[ATTACKS[name].problem]) for name in names]
    samples += [(problem.right, problem) for problem in PROBLEMS.values()]
    keys = sorted({key for _, problem in samples for key in problem.columns})
    columns = {key: [problem.columns.get(key) for _, problem in samples] for key in keys}
    completions = [f"```python\n{program}```" for program, _ in samples]
    rewards = REWARDS["code"](prompts=[""] * len(samples), completions=completions, **columns)
    assert dict(zip(names, rewards)) == dict.fromkeys(names, 0.0)
    assert rewards[len(names) :] == [1.0] * len(PROBLEMS)
    trainer.assert_untouched()


# ---- what keeps working across the boundary ----------------------------------------------------

PLAIN_DATA = """
import collections, decimal, fractions
import numpy as np

def values():
    return {
        "none": None, "bool": True, "int": -7, "big int": -(3 ** 5000), "float": -0.0, "inf": float("-inf"),
        "str": "h\\u00e9\\ud800\\n", "bytes": bytes(range(256)), "bytearray": bytearray(b"ab"), "complex": 1 - 2j,
        "list": [1, [2]], "tuple": (1, (2,)), "dict": {(1, 2): {"a": None}}, "set": {1, frozenset({2})},
        "frozenset": frozenset({"x"}), "deque": collections.deque([1, 2]), "Counter": collections.Counter("aab"),
        "OrderedDict": collections.OrderedDict([("b", 1), ("a", 2)]), "range": range(1, 10, 3),
        "Fraction": fractions.Fraction(-3, 4), "Decimal": decimal.Decimal("1.10"), "iter": iter([1, 2]),
        "generator": (i * i for i in range(3)), "namedtuple": collections.namedtuple("P", "x y")(1, 2),
        "numpy float": np.float64(2.5), "numpy int": np.int64(3), "numpy bool": np.bool_(False),
        "ndarray": np.arange(6, dtype=np.int32).reshape(2, 3), "empty ndarray": np.zeros((0, 3)),
    }
"""

PLAIN_DATA_TESTS = """import collections, decimal, fractions, math
import numpy as np

got = values()
nan = values_nan()
expected = {
    "none": (None, type(None)), "bool": (True, bool), "int": (-7, int), "big int": (-(3 ** 5000), int),
    "float": (-0.0, float), "inf": (float("-inf"), float), "str": ("h\\u00e9\\ud800\\n", str),
    "bytes": (bytes(range(256)), bytes), "bytearray": (bytearray(b"ab"), bytearray), "complex": (1 - 2j, complex),
    "list": ([1, [2]], list), "tuple": ((1, (2,)), tuple), "dict": ({(1, 2): {"a": None}}, dict),
    "set": ({1, frozenset({2})}, set), "frozenset": (frozenset({"x"}), frozenset),
    "deque": (collections.deque([1, 2]), collections.deque), "Counter": (collections.Counter("aab"), collections.Counter),
    "OrderedDict": (collections.OrderedDict([("b", 1), ("a", 2)]), collections.OrderedDict),
    "range": (range(1, 10, 3), range), "Fraction": (fractions.Fraction(-3, 4), fractions.Fraction),
    "Decimal": (decimal.Decimal("1.10"), decimal.Decimal), "namedtuple": ((1, 2), tuple),
    "numpy float": (2.5, float), "numpy int": (3, int), "numpy bool": (False, bool),
}
for key, (value, kind) in expected.items():
    assert type(got[key]) is kind and got[key] == value, key
assert math.copysign(1.0, got["float"]) == -1.0
assert str(got["Decimal"]) == "1.10" and list(got["OrderedDict"]) == ["b", "a"]
assert list(got["iter"]) == [1, 2] and list(got["generator"]) == [0, 1, 4]
assert type(got["ndarray"]) is np.ndarray and got["ndarray"].dtype == np.int32 and got["ndarray"].tolist() == [[0, 1, 2], [3, 4, 5]]
assert got["empty ndarray"].shape == (0, 3)
assert type(nan) is float and math.isnan(nan)
"""


def test_plain_data_crosses_exactly() -> None:
    """Every type of the wire format arrives as a genuine object of exactly that type and value
    (subclasses and numpy scalars as their base), so the tests' comparisons are the usual ones."""
    program = PLAIN_DATA + "\ndef values_nan():\n    return float('nan')\n"
    tests = FunctionTests((), (PLAIN_DATA_TESTS,), "values")
    passed, run = _judge(program, tests)
    assert passed, run.caller.stderr[-3000:]


OBJECTS_PROGRAM = """
class Pair:
    def __init__(self, a, b):
        self.a, self.b = a, b

def max_chain_length(pairs, n):
    pairs = sorted(pairs, key=lambda p: p.b)
    length, end = 0, float("-inf")
    for p in pairs[:n]:
        if p.a > end:
            length, end = length + 1, p.b
    return length

def squares(n):
    for i in range(n):
        yield i * i

def parse(text, base=10):
    if not text:
        raise ValueError("empty")
    return int(text, base)

def lookup(d, key):
    return d[key]

class Counter:
    def __init__(self):
        self.count = 0
    def bump(self, by=1):
        self.count += by
        return self
"""

OBJECTS_TESTS = (
    "assert max_chain_length([Pair(5, 24), Pair(15, 25), Pair(27, 40), Pair(50, 60)], 4) == 3",  # MBPP 601's shape
    "p = Pair(1, 2)\nassert p.a == 1 and p.b == 2 and p == p and p != Pair(1, 2)",
    "assert list(squares(4)) == [0, 1, 4, 9] and sum(squares(3)) == 5",
    "assert parse('ff', base=16) == 255",
    "try:\n    parse('')\nexcept ValueError as exc:\n    assert exc.args == ('empty',)\nelse:\n    raise AssertionError('no ValueError')",
    "try:\n    lookup({}, 'k')\nexcept KeyError as exc:\n    assert exc.args == ('k',)\nelse:\n    raise AssertionError('no KeyError')",
    "c = Counter()\nassert c.bump().bump(by=2) is c and c.count == 3",
    "try:\n    max_chain_length([lambda: 1], 1)\nexcept TypeError:\n    pass\nelse:\n    raise AssertionError('a function of the tests crossed')",
)


def test_the_programs_objects_work_through_handles() -> None:
    """Classes the program defines (MBPP's ``Pair(5, 24)``), generators, keyword arguments,
    methods returning the object itself, attributes, and builtin exceptions the tests expect."""
    tests = FunctionTests((), OBJECTS_TESTS, "max_chain_length")
    passed, run = _judge(OBJECTS_PROGRAM, tests)
    assert passed, run.caller.stderr[-3000:]
    wrong = OBJECTS_PROGRAM.replace("if p.a > end", "if p.a >= end - 100")
    assert not _judge(wrong, tests)[0]


def test_helpers_come_from_the_dataset_not_the_program() -> None:
    """HumanEval/38's test passes the expected string to ``encode_cyclic``, a helper from the prompt.
    Taken from the program, the helper sees it, and a program that remembers it passes without
    decoding anything; with the prompt as ``test_setup`` (the HumanEval presets), the tests call the
    dataset's own helper and the remembering program fails, while an honest one passes."""
    test = (
        "def check(candidate):\n    for word in ['abcdef', 'hello world', 'xyz']:\n"
        "        assert candidate(encode_cyclic(word)) == word\n"
    )
    remembering = (
        "SEEN = {}\ndef encode_cyclic(s):\n    SEEN[s[::-1]] = s\n    return s[::-1]\n"
        "def decode_cyclic(s):\n    return SEEN[s]\n"
    )
    tests = parse_tests({"test": test, "entry_point": "decode_cyclic"})
    assert isinstance(tests, FunctionTests)
    assert _judge(remembering, tests)[0]  # the program's helper, trusted
    prompt = 'def encode_cyclic(s):\n    return s[::-1]\ndef decode_cyclic(s):\n    """Undo encode_cyclic."""\n'
    guarded = parse_tests({"test": test, "entry_point": "decode_cyclic", "test_setup": prompt})
    assert not _judge(remembering, guarded)[0]
    honest = "def encode_cyclic(s):\n    return 'garbage'\ndef decode_cyclic(s):\n    return s[::-1]\n"
    assert _judge(honest, guarded)[0]  # its own (wrong) helper is never called
