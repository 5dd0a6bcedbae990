"""Adversarial tests of the code sandbox: one per property its module docstring claims.

Each test runs an attack in the sandbox and checks two things: the attack failed (the program
reports every attempt, so a test cannot pass because the attempts never ran), and the trainer's
side is as it was (:class:`TrainerState`: the working folder's and the repository's listings, a
canary file, the environment, no process left behind). A property the machine cannot enforce
(no root, a kernel refusing namespaces) skips its test with the launcher's reason.

Then the properties of two linked programs (:func:`run_linked`): they share the link and nothing
else (not files, /proc entries, signals, ptrace, descriptors or the control channel; their uids
differ), the callee is stopped when the caller ends, the caller reads EOF when the callee dies or
floods, each keeps its own limits, and they share one wall clock.

The last tests are the code verifier's: each way of faking success scores 0.0, and correct
programs in each of the three test formats score 1.0 (its full adversarial suite, against tests run
in their own process, is ``tests/test_code_attacks.py``).
"""

from __future__ import annotations

import doctest
import json
import os
import signal
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import train.rewards.code as code_module
import train.rewards.code_harness as code_harness
import train.rewards.sandbox as sandbox_module
from train.rewards import REWARDS
from train.rewards.sandbox import REPO_ROOT, Isolation, Program, probe_isolation, run_linked, run_program

LIMITS = {"timeout_s": 20.0, "memory_mb": 256}
SLACK_S = 5.0  # start-up of two interpreters on a loaded machine

# Prepended to attack programs: every attempt prints one line: its name, a tab, SUCCEEDED or failed.
ATTEMPT = """
def attempt(name, action):
    try:
        result = action()
    except BaseException as exc:
        print(name, "failed", type(exc).__name__, exc, sep="\t")
    else:
        print(name, "SUCCEEDED", repr(result)[:200], sep="\t")
"""


def _attempts_failed(stdout: str, names: list[str]) -> bool:
    outcomes = dict(line.split("\t")[:2] for line in stdout.splitlines() if "\t" in line)
    return sorted(outcomes) == sorted(names) and all(outcomes[name] == "failed" for name in names)


@pytest.fixture(scope="module")
def isolation() -> Isolation:
    found = probe_isolation()
    assert found is not None, "the sandbox launcher does not start at all"
    return found


def _require(isolation: Isolation, enforced: bool, prop: str) -> None:
    if not enforced:
        pytest.skip(f"sandbox does not enforce {prop} here: {'; '.join(isolation.fallbacks)}")


def _processes(uid: int | None = None, parent: int | None = None) -> list[int]:
    """Pids of processes owned by ``uid`` or children of ``parent`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path("/proc", entry, "status").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if (uid is not None and int(fields["Uid"].split()[0]) == uid) or (parent is not None and int(fields["PPid"]) == parent):
            found.append(int(entry))
    return found


@dataclass
class TrainerState:
    """What an attack must leave alone on the trainer's side."""

    canary: Path
    snapshot: dict = field(default_factory=dict)

    def take(self) -> dict:
        return {
            "cwd": os.getcwd(),
            "cwd listing": sorted(os.listdir(".")),
            "repo listing": sorted(os.listdir(REPO_ROOT)),
            "canary": (self.canary.read_text(), oct(self.canary.stat().st_mode), self.canary.stat().st_uid),
            "canary folder": sorted(os.listdir(self.canary.parent)),
            "environment": {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"},
            "children": _processes(parent=os.getpid()),
        }

    def assert_untouched(self, result: sandbox_module.SandboxResult | None = None) -> None:
        assert self.take() == self.snapshot
        if result is not None and result.isolation is not None and result.isolation.uid is not None:
            assert _processes(uid=result.isolation.uid) == []  # nothing of the program lives on


@pytest.fixture
def trainer(tmp_path: Path) -> TrainerState:
    (tmp_path / "trainer").mkdir()
    canary = tmp_path / "trainer" / "canary.txt"
    canary.write_text("the trainer's file")
    canary.chmod(0o644)
    state = TrainerState(canary)
    state.snapshot = state.take()
    return state


def test_doctests() -> None:
    assert doctest.testmod(sandbox_module).failed == 0
    assert doctest.testmod(code_module).failed == 0
    assert doctest.testmod(code_harness).failed == 0


# ---- time ----------------------------------------------------------------------------------


@pytest.mark.parametrize("program", ["while True:\n    pass", "import time\ntime.sleep(3600)"], ids=["busy", "asleep"])
def test_wall_clock_limit_kills_the_program(trainer: TrainerState, program: str) -> None:
    result = run_program(program, timeout_s=1.0, cpu_s=60, memory_mb=256)
    assert result.status == "timeout" and result.returncode == -signal.SIGKILL
    assert 1.0 <= result.wall_s < 1.0 + SLACK_S
    trainer.assert_untouched(result)


def test_cpu_limit_kills_a_busy_loop(trainer: TrainerState) -> None:
    result = run_program("while True:\n    pass", timeout_s=60, cpu_s=1, memory_mb=256)
    assert result.status == "timeout" and result.returncode == -signal.SIGXCPU  # the CPU limit, not the wall clock
    assert result.wall_s < 60
    trainer.assert_untouched(result)


# ---- memory --------------------------------------------------------------------------------


def test_memory_limit_fails_a_big_allocation(trainer: TrainerState) -> None:
    program = "block = bytearray(1024 * 2**20)\nprint('allocated', len(block))"
    result = run_program(program, timeout_s=20, memory_mb=256)
    assert result.status == "error" and "allocated" not in result.stdout and "MemoryError" in result.stderr
    trainer.assert_untouched(result)


# ---- processes -----------------------------------------------------------------------------


def test_no_new_processes(trainer: TrainerState) -> None:
    program = ATTEMPT + """
import os, subprocess, sys, threading
attempt("fork", os.fork)
attempt("subprocess", lambda: subprocess.run(["echo", "RAN"], capture_output=True).stdout)
attempt("posix_spawn", lambda: os.posix_spawn("/bin/echo", ["echo", "RAN"], {}))
def system():
    status = os.system("echo RAN")
    if status != 0:
        raise OSError(f"os.system returned {status}")
attempt("os.system", system)
attempt("thread", lambda: threading.Thread(target=print, args=("RAN",)).start())
print(next(" ".join(line.split()) for line in open("/proc/self/status") if line.startswith("NoNewPrivs")))
"""
    result = run_program(program, **LIMITS)
    assert result.status == "ok", result.stderr
    assert _attempts_failed(result.stdout, ["fork", "subprocess", "posix_spawn", "os.system", "thread"]), result.stdout
    assert "RAN" not in result.stdout
    assert "NoNewPrivs: 1" in result.stdout  # so exec'ing a setuid binary would grant nothing
    trainer.assert_untouched(result)


# ---- files ---------------------------------------------------------------------------------


def test_files_outside_the_workdir_are_out_of_reach(trainer: TrainerState, isolation: Isolation, tmp_path: Path) -> None:
    _require(isolation, isolation.uid is not None and isolation.mounts, "a separate uid and a mount namespace")
    secret = tmp_path / "secret.txt"
    secret.write_text("the trainer's secret")
    secret.chmod(0o600)
    assert secret.stat().st_uid == os.getuid() == 0
    targets = {
        "canary": str(trainer.canary),
        "repo": str(REPO_ROOT / "pwned.txt"),
        "cwd": os.path.join(os.getcwd(), "pwned.txt"),
        "home": os.path.expanduser("~/pwned.txt"),
        "etc": "/etc/pwned.txt",
        "root folder": "/pwned.txt",
        "tmp": os.path.join(tempfile.gettempdir(), "pwned.txt"),
        "shm": "/dev/shm/pwned.txt",
    }
    program = ATTEMPT + f"""
targets = {json.dumps(targets)}
for name, path in targets.items():
    attempt("write:" + name, lambda path=path: open(path, "w").write("pwned"))
attempt("read:secret", lambda: open({str(secret)!r}).read())
"""
    before_etc, before_root = sorted(os.listdir("/etc")), sorted(os.listdir("/"))
    result = run_program(program, **LIMITS)
    assert result.status == "ok", result.stderr
    assert _attempts_failed(result.stdout, [f"write:{name}" for name in targets] + ["read:secret"]), result.stdout
    assert "the trainer's secret" not in result.stdout
    assert trainer.canary.read_text() == "the trainer's file"
    assert not any(os.path.exists(path) for name, path in targets.items() if name != "canary")
    assert (sorted(os.listdir("/etc")), sorted(os.listdir("/"))) == (before_etc, before_root)
    trainer.assert_untouched(result)


def test_shared_packages_are_read_only_and_alone(trainer: TrainerState, isolation: Isolation) -> None:
    """numpy is importable (EvalPlus's tests need it), but its folder cannot be changed and the rest
    of its site-packages (torch, the trainer's other libraries) stays out of sight."""
    _require(isolation, isolation.uid is not None and isolation.mounts, "a separate uid and a mount namespace")
    import numpy

    folder = os.path.dirname(numpy.__file__)
    before = sorted(os.listdir(folder))
    program = ATTEMPT + f"""
import os, numpy
print("numpy", numpy.linalg.det(numpy.eye(2)))
attempt("write:numpy", lambda: open(os.path.join({folder!r}, "pwned.py"), "w").write("pwned"))
attempt("chmod:numpy", lambda: os.chmod({folder!r}, 0o777))
attempt("import:torch", lambda: __import__("torch"))
print("site", sorted(os.listdir(os.path.dirname({folder!r}))))
"""
    result = run_program(program, packages=["numpy"], **LIMITS)
    assert result.status == "ok", result.stderr
    assert "numpy 1.0" in result.stdout
    assert _attempts_failed(result.stdout, ["write:numpy", "chmod:numpy", "import:torch"]), result.stdout
    site = next(line for line in result.stdout.splitlines() if line.startswith("site"))
    assert set(eval(site[len("site "):])) <= {"numpy", "numpy.libs"}  # noqa: S307  our own printed list
    assert sorted(os.listdir(folder)) == before
    with pytest.raises(ValueError, match="not an installed top-level package"):
        sandbox_module.shared_package_folders(["no_such_package_here"])
    trainer.assert_untouched(result)


def test_workdir_is_private_and_removed_afterwards(trainer: TrainerState, isolation: Isolation) -> None:
    _require(isolation, isolation.mounts, "a mount namespace (private /tmp)")
    program = """
import json, os
open("left-behind.txt", "w").write("x" * 1000)
print(os.getcwd())
print(json.dumps(sorted(os.listdir(os.path.dirname(os.path.dirname(os.getcwd()))))))
"""
    result = run_program(program, **LIMITS)
    assert result.status == "ok", result.stderr
    workdir, tmp_listing = result.stdout.splitlines()
    run_dir = os.path.dirname(workdir)
    assert os.path.dirname(run_dir) == tempfile.gettempdir() and os.path.basename(run_dir).startswith("rlvr-sandbox-")
    assert json.loads(tmp_listing) == [os.path.basename(run_dir)]  # the trainer's and other runs' files are not visible
    assert not os.path.exists(run_dir) and not os.path.exists(os.path.join(workdir, "left-behind.txt"))
    trainer.assert_untouched(result)


# ---- network -------------------------------------------------------------------------------


def test_no_network(trainer: TrainerState, isolation: Isolation, tmp_path: Path) -> None:
    _require(isolation, isolation.network, "a network namespace")
    with socket.socket() as server, socket.socket(socket.AF_UNIX) as unix_server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        unix_path = str(tmp_path / "service.sock")  # like wandb's service socket under /tmp
        unix_server.bind(unix_path)
        os.chmod(unix_path, 0o777)
        os.chmod(tmp_path, 0o755)
        unix_server.listen()
        unix_server.settimeout(0.5)
        program = ATTEMPT + f"""
import socket
attempt("tcp loopback", lambda: socket.create_connection(("127.0.0.1", {server.getsockname()[1]}), timeout=2))
attempt("tcp outside", lambda: socket.create_connection(("1.1.1.1", 53), timeout=2))
attempt("unix socket", lambda: socket.socket(socket.AF_UNIX).connect({unix_path!r}))
"""
        result = run_program(program, **LIMITS)
        assert result.status == "ok", result.stderr
        assert _attempts_failed(result.stdout, ["tcp loopback", "tcp outside", "unix socket"]), result.stdout
        for listener in (server, unix_server):
            with pytest.raises(socket.timeout):
                listener.accept()  # nobody knocked
    trainer.assert_untouched(result)


# ---- environment ---------------------------------------------------------------------------


def test_secrets_in_the_environment_are_not_inherited(trainer: TrainerState, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "hf_secret_value_9f8e7d"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    program = ATTEMPT + """
import json, os
attempt("trainer environ", lambda: open(f"/proc/{os.getppid()}/environ").read())
print(json.dumps(sorted(os.environ)))
print(open("/proc/self/environ").read().replace("\\0", " "))
"""
    result = run_program(program, **LIMITS)
    assert result.status == "ok", result.stderr
    assert secret not in result.stdout + result.stderr
    attempt_line, names, _ = result.stdout.split("\n", 2)
    assert _attempts_failed(attempt_line, ["trainer environ"]), result.stdout
    assert json.loads(names) == ["HOME", "LANG", "LC_ALL", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PATH", "TMPDIR"]
    monkeypatch.undo()
    trainer.assert_untouched(result)


# ---- output --------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_output_flood_is_cut_promptly(trainer: TrainerState, stream: str) -> None:
    program = f"import sys\nwhile True:\n    sys.{stream}.write('x' * 65536)"
    result = run_program(program, timeout_s=30, memory_mb=256, max_output_bytes=100_000)
    assert result.status == "output_limit" and result.truncated
    assert len(getattr(result, stream)) == 100_000
    assert result.wall_s < SLACK_S  # killed at the cap, long before the 30 s limit
    trainer.assert_untouched(result)


# ---- interpreter isolation -----------------------------------------------------------------


def test_interpreter_ignores_python_variables_and_site(
    trainer: TrainerState, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hook = tmp_path / "hook.py"
    hook.write_text("print('HOOKED')")
    monkeypatch.setenv("PYTHONSTARTUP", str(hook))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    program = "import sys\nprint(sys.flags.isolated, sys.flags.no_site, 'site' in sys.modules, sys.path)"
    result = run_program(program, **LIMITS)
    assert result.status == "ok" and "HOOKED" not in result.stdout
    isolated, no_site, site_loaded, path = result.stdout.split(" ", 3)
    assert (isolated, no_site, site_loaded) == ("1", "1", "False")
    assert str(tmp_path) not in path and "site-packages" not in path and "''" not in path
    monkeypatch.undo()
    trainer.assert_untouched(result)


# ---- two linked programs -------------------------------------------------------------------

IS_OPEN = """
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
"""

LINK_PEER_ATTEMPTS = ["control channel", "read the caller's file", "list the caller's folder", "environ", "mem", "cwd",
                      "root", "fd", "fd 3 write", "SIGSTOP", "SIGKILL", "ptrace attach", "pidfd_getfd 3"]  # fmt: skip


def test_linked_programs_share_only_the_link(trainer: TrainerState, isolation: Isolation) -> None:
    """The callee learns the caller's pid and folder over the link, and then can neither read its
    files nor its /proc entries, signal it, trace it, take its descriptors, nor write the control
    channel; each holds exactly its own descriptors; the two uids differ."""
    _require(isolation, isolation.uid is not None and isolation.mounts, "a separate uid and a mount namespace")
    caller = "import json, os\n" + IS_OPEN + """
open("secret.txt", "w").write("the caller's secret")
os.write(5, json.dumps({"pid": os.getpid(), "cwd": os.getcwd()}).encode() + b"\\n")
os.write(3, b"heard " + os.read(6, 100) + b"\\n")
print("FDS", [fd for fd in range(256) if is_open(fd)])
"""
    callee = ATTEMPT + "import ctypes, json, os, signal, sys\n" + IS_OPEN + """
libc = ctypes.CDLL(None, use_errno=True)
def checked(result):
    if result == -1:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return result
print("FDS", [fd for fd in range(256) if is_open(fd)])
peer = json.loads(os.read(6, 1000))
pid, cwd = peer["pid"], peer["cwd"]
attempt("control channel", lambda: os.write(3, b"forged\\n"))  # first: nothing of its own is fd 3 yet
attempt("read the caller's file", lambda: open(os.path.join(cwd, "secret.txt")).read())
attempt("list the caller's folder", lambda: os.listdir(cwd))
attempt("environ", lambda: open(f"/proc/{pid}/environ").read())
attempt("mem", lambda: open(f"/proc/{pid}/mem", "rb").read(1))
attempt("cwd", lambda: os.listdir(f"/proc/{pid}/cwd"))
attempt("root", lambda: os.listdir(f"/proc/{pid}/root"))
attempt("fd", lambda: os.listdir(f"/proc/{pid}/fd"))
attempt("fd 3 write", lambda: os.write(os.open(f"/proc/{pid}/fd/3", os.O_WRONLY), b"forged\\n"))
attempt("SIGSTOP", lambda: os.kill(pid, signal.SIGSTOP))
attempt("SIGKILL", lambda: os.kill(pid, signal.SIGKILL))
attempt("ptrace attach", lambda: checked(libc.ptrace(16, pid, None, None)))
attempt("pidfd_getfd 3", lambda: checked(libc.syscall(438, os.pidfd_open(pid), 3, 0)))
sys.stdout.flush()  # the caller ends on "done", and the callee is stopped with it
os.write(5, b"done")
"""
    result = run_linked(Program(caller), Program(callee), control=True, **LIMITS)
    assert result.caller.status == "ok" and result.caller.control == (b"heard done",), result.caller.stderr
    assert "FDS [0, 1, 2, 3, 5, 6]" in result.caller.stdout
    assert result.callee.status in ("ok", "stopped"), result.callee.stderr
    assert "FDS [0, 1, 2, 5, 6]" in result.callee.stdout
    assert _attempts_failed(result.callee.stdout, LINK_PEER_ATTEMPTS), result.callee.stdout
    assert "the caller's secret" not in result.callee.stdout
    assert result.caller.isolation is not None and result.callee.isolation is not None
    assert result.caller.isolation.uid != result.callee.isolation.uid
    trainer.assert_untouched(result.caller)
    trainer.assert_untouched(result.callee)


def test_the_callee_is_stopped_when_the_caller_ends(trainer: TrainerState) -> None:
    result = run_linked(Program("pass"), Program("import time\ntime.sleep(3600)"), **LIMITS)
    assert result.caller.status == "ok" and result.callee.status == "stopped"
    assert result.callee.wall_s < SLACK_S
    trainer.assert_untouched(result.caller)
    trainer.assert_untouched(result.callee)


def test_the_caller_reads_eof_when_the_callee_dies(trainer: TrainerState) -> None:
    result = run_linked(Program("import os\nprint(os.read(6, 10) == b'')"), Program("import os\nos._exit(3)"), **LIMITS)
    assert result.caller.status == "ok" and result.caller.stdout == "True\n"
    assert result.callee.status == "error" and result.callee.returncode == 3
    trainer.assert_untouched(result.caller)


def test_a_flooding_callee_is_killed_alone(trainer: TrainerState) -> None:
    flood = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"
    result = run_linked(Program("import os\nprint(os.read(6, 10) == b'')"), Program(flood), timeout_s=30, memory_mb=256,
                        max_output_bytes=100_000)  # fmt: skip
    assert result.callee.status == "output_limit" and len(result.callee.stdout) == 100_000
    assert result.caller.status == "ok" and result.caller.stdout == "True\n"  # it read EOF and went on
    assert result.caller.wall_s < SLACK_S
    trainer.assert_untouched(result.callee)


def test_each_linked_program_keeps_its_limits(trainer: TrainerState) -> None:
    """The callee alone: no process, no big allocation, the CPU limit (SIGXCPU), while the caller,
    blocked on the link, spends no CPU and ends when the callee's death closes the link."""
    callee = ATTEMPT + """
import os, sys
attempt("fork", os.fork)
attempt("allocate", lambda: len(bytearray(1024 * 2**20)))
sys.stdout.flush()  # SIGXCPU ends it below, before Python would flush
while True:
    pass
"""
    result = run_linked(Program("import os\nprint(os.read(6, 10) == b'')"), Program(callee), timeout_s=60, cpu_s=1,
                        memory_mb=256)  # fmt: skip
    assert result.callee.status == "timeout" and result.callee.returncode == -signal.SIGXCPU
    assert _attempts_failed(result.callee.stdout, ["fork", "allocate"]), result.callee.stdout
    assert result.caller.status == "ok" and result.caller.stdout == "True\n"
    assert result.caller.wall_s < 60
    trainer.assert_untouched(result.callee)


def test_the_linked_pair_shares_one_wall_clock(trainer: TrainerState) -> None:
    asleep = Program("import time\ntime.sleep(3600)")
    result = run_linked(asleep, asleep, timeout_s=1.0, cpu_s=60, memory_mb=256)
    assert result.caller.status == result.callee.status == "timeout"
    assert 1.0 <= result.caller.wall_s < 1.0 + SLACK_S
    trainer.assert_untouched(result.caller)
    trainer.assert_untouched(result.callee)


# ---- faked success (the code verifier) -----------------------------------------------------

# Each cheat comes with tests it would pass if it worked: a wrong program plus the cheat.
MBPP = {
    "test_list": ["assert set(pair_sum([1, 2, 3])) == set([3, 5])", "assert len(pair_sum([4, 5])) == 1"],
    "test_imports": ["import math"],
}
HUMANEVAL = {"test": "import math\n\ndef check(candidate):\n    assert math.isclose(candidate(2), 4.0)\n", "entry_point": "double"}
WRONG = "def pair_sum(xs):\n    return [0]\n"
RIGHT = {
    "mbpp": "def pair_sum(xs):\n    return [a + b for a, b in zip(xs, xs[1:])]\n",
    "humaneval": "def double(x):\n    return 2 * x\n",
}
SAME = "class Same:\n    def __eq__(self, other):\n        return True\n"

CHEATS = {  # name: (format, completion)
    "sys.exit(0) before the tests": ("mbpp", WRONG + "import sys\nsys.exit(0)\n"),
    "os._exit(0) before the tests": ("mbpp", WRONG + "import os\nos._exit(0)\n"),
    "SystemExit raised inside a test": ("mbpp", "def pair_sum(xs):\n    raise SystemExit(0)\n"),
    "os._exit(0) inside a test": ("humaneval", "import os\ndef double(x):\n    os._exit(0)\n"),
    "exec of another program": ("mbpp", WRONG + "import os, sys\nos.execv(sys.executable, [sys.executable, '-c', 'pass'])\n"),
    "redefined exit, print, AssertionError": ("mbpp", WRONG + (
        "import builtins, sys\nclass Never(Exception): pass\n"
        "builtins.AssertionError = AssertionError = Never\nbuiltins.print = print = lambda *a, **k: None\n"
        "builtins.exit = exit = lambda *a: sys.exit(0)\n"
    )),
    "a patched builtin used by the asserts": ("mbpp", WRONG + SAME + "import builtins\nbuiltins.set = lambda *a: Same()\n"),
    "a global shadowing a builtin": ("mbpp", WRONG + SAME + "set = lambda *a: Same()\n"),
    "a module replaced in sys.modules": ("humaneval", (
        "import sys, types\ndef double(x):\n    return 0\n"
        "fake = types.ModuleType('math')\nfake.isclose = lambda *a, **k: True\nsys.modules['math'] = fake\n"
    )),
    "tests ended by a trace function": ("mbpp", WRONG + (
        "import sys\ndef skip(frame, event, arg):\n"
        "    if frame.f_code.co_filename.startswith('<test'):\n        raise SystemExit(0)\n    return skip\n"
        "sys.settrace(skip)\n"
    )),
    "a fake success line printed": ("mbpp", WRONG + "print('done 2\\nverdict 0123456789abcdef\\nAll tests passed')\n"),
    "a fake verdict on the control channel": ("mbpp", WRONG + "import os\nos.write(3, b'done 2\\nverdict 01234567\\n')\n"),
}  # fmt: skip


def _columns(formats: list[str]) -> dict[str, list]:
    """Dataset columns for a batch mixing the two function formats (None where a row lacks one)."""
    return {key: [table[key] if fmt == name else None for fmt in formats]
            for name, table in (("mbpp", MBPP), ("humaneval", HUMANEVAL)) for key in table}  # fmt: skip


def test_each_way_of_faking_success_scores_zero(trainer: TrainerState) -> None:
    names = list(CHEATS)
    formats = [CHEATS[name][0] for name in names] + ["mbpp", "humaneval"]
    completions = [f"```python\n{CHEATS[name][1]}```" for name in names] + [RIGHT["mbpp"], RIGHT["humaneval"]]
    rewards = REWARDS["code"](prompts=[""] * len(completions), completions=completions, **_columns(formats))
    assert dict(zip(names, rewards)) == dict.fromkeys(names, 0.0)
    assert rewards[-2:] == [1.0, 1.0]  # the same tests pass correct programs: the zeros are the cheats'
    trainer.assert_untouched()


def test_correct_programs_pass_in_each_format(trainer: TrainerState) -> None:
    humaneval = {
        "test": "METADATA = {}\n\ndef check(candidate):\n    assert candidate([1, 2, 3]) == 6\n    assert candidate([]) == 0\n",
        "entry_point": "total",
    }
    humaneval_program = "Here it is:\n```python\nfrom typing import List\n\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```"
    mbpp_program = (  # its __main__ block would wait for input: it does not run
        "```python\nimport math\ndef pair_sum(xs):\n    return [a + b for a, b in zip(xs, xs[1:])]\n\n"
        "if __name__ == '__main__':\n    print(input())\n```"
    )
    stdio = {"tests": json.dumps([{"input": "3\n1 2 3\n", "output": "6\n"}, {"input": "1\n5\n", "output": "5"}])}
    stdio_program = "```python\nn = int(input())\nprint(sum(map(int, input().split())), end='  \\n\\n')\nexit(0)\n```"
    wrong_stdio_program = "```python\nn = int(input())\nprint(n)\n```"
    rewards = REWARDS["code"](
        prompts=[""] * 4,
        completions=[humaneval_program, mbpp_program, stdio_program, wrong_stdio_program],
        test=[humaneval["test"], None, None, None],
        entry_point=[humaneval["entry_point"], None, None, None],
        test_list=[None, MBPP["test_list"], None, None],
        test_imports=[None, MBPP["test_imports"], None, None],
        tests=[None, None, stdio["tests"], stdio["tests"]],
    )
    assert rewards == [1.0, 1.0, 1.0, 0.0]
    assert REWARDS["code"](prompts=["x"], completions=["print(1)"], test_list=[None]) == [None]  # no tests: does not apply
    assert REWARDS["code"](prompts=["x"] * 2, completions=["print(1)"] * 2, tests=["not json", "[]"]) == [0.0, 0.0]  # nothing ran
    with pytest.raises(ValueError, match="test columns"):
        REWARDS["code"](prompts=["x"], completions=["print(1)"], answer=["1"])
    trainer.assert_untouched()


def test_a_broken_sandbox_scores_zero_without_raising(trainer: TrainerState) -> None:
    result = run_program("print(1)", timeout_s=5, memory_mb=256, python="/nonexistent/python3")
    assert result.status == "sandbox_error" and result.returncode is None
    assert code_module.score(["def f(): pass"], [code_module.FunctionTests((), ("assert f() is None",), "f")],
                             code_module.Limits(timeout_s=0.01)) == [0.0]  # fmt: skip
    trainer.assert_untouched()
