"""Run untrusted Python source in a separate, confined process (:func:`run_program`), or two such
processes linked by a pair of pipes (:func:`run_linked`).

Threat model
------------
The program is hostile. A policy under RL pressure keeps whatever earns reward, so assume the
program does anything Python allows (ctypes, ``os``, signals, reading ``/proc``), deliberately.
It never runs in the trainer's process: :func:`run_program` writes it to a file and starts
``python -I -S`` through a short trusted launcher (:mod:`train.rewards.sandbox_launcher`), which
confines itself and then execs the program. Each line below is a property this module claims;
``tests/test_sandbox.py`` attacks each one and checks that the attack failed and that the trainer
process and the file system were left as they were.

- **time**: RLIMIT_CPU (SIGXCPU at ``cpu_s``, SIGKILL a second later) bounds computing; a wall
  clock in the parent bounds everything else (sleeping, blocking): at ``timeout_s`` it SIGKILLs the
  program's process group. (Untested: should the trainer die first, the kernel SIGKILLs the
  program, PR_SET_PDEATHSIG.)
- **memory**: RLIMIT_AS = ``memory_mb``; a larger allocation fails (``MemoryError``).
- **processes**: the program runs as its own unprivileged uid and gid (fresh and random per run,
  so concurrent programs cannot signal or trace each other) with RLIMIT_NPROC = 0, so fork,
  ``subprocess``, ``os.system`` and threads fail; no-new-privileges, so exec'ing a setuid binary
  grants nothing; the parent kills the process group at the end anyway.
- **files**: the working folder is a private tmpfs of ``disk_mb`` (RLIMIT_FSIZE caps a file too),
  gone when the program ends, and the host's temporary folder holding the inputs is removed. In a
  mount namespace, the trainer's folders are covered by empty tmpfs (``/root``, ``/home``, the
  trainer's home, the repository and its parent folder, which holds the data and the virtualenv),
  and so are the world-writable ones and the sockets in them (``/tmp``, ``/var/tmp``, ``/dev/shm``,
  ``/run``); the interpreter's own prefix is re-bound read-only, and so are the folders of the
  installed packages a caller shares (``packages=``: numpy, which EvalPlus's tests import), on the
  program's ``sys.path`` and nothing else of their site-packages. Everywhere else, file permissions
  apply to the unprivileged uid: it can read world-readable system files (``/usr``, ``/etc``) and
  write nothing outside its folder.
- **network**: a new network namespace whose only interface, loopback, is down: no connection
  to anything, including the trainer's services on 127.0.0.1 and abstract Unix sockets; the Unix
  sockets with paths (wandb's service, X11) are under the covered folders.
- **environment**: the program gets a fresh environment (PATH, HOME, TMPDIR, LANG, one BLAS
  thread), so none of the trainer's secrets (WANDB_API_KEY, HF_TOKEN, ...), and as another uid it
  cannot read the trainer's ``/proc/<pid>/environ``. A new IPC namespace hides System V IPC and
  POSIX queues.
- **output**: stdout and stderr are read as they come, each capped at ``max_output_bytes``; a
  program that writes more is killed, so a flood ends promptly and never blocks the parent.
- **isolation of the interpreter**: ``-I -S``: no PYTHON* variables, no user or site packages,
  no current folder on ``sys.path``.

Not claimed: defence against kernel exploits (there is no seccomp filter), hiding the command
lines of other processes (``/proc`` is shared), and fair sharing of CPU and memory bandwidth with
the trainer (there are no cgroups). Programs cannot start threads (RLIMIT_NPROC counts them).

Fallbacks: without root, or where the kernel refuses a namespace (some containers), the launcher
runs the program anyway with what it could enforce; :attr:`SandboxResult.isolation` says what that
was, each missing property is logged once with its reason, and the tests skip with that reason
instead of passing. Without a mount namespace the working folder is a host folder of the program's
uid (still removed afterwards), but ``/tmp`` and the other world-writable folders stay writable and
the trainer's world-readable files readable, and an interpreter under a private folder (like
``/root/.pyenv``) is out of the uid's reach: pass ``python=`` one it can run. Without root there is
no separate uid either (RLIMIT_NPROC=0 still stops new processes). Resource limits, the scrubbed
environment and no-new-privileges never fall back.

Trust boundary: the parent and the launcher are trusted; everything after the launcher's exec is
not. A program talks to the parent only through stdout/stderr, its exit status and, when asked for
(``control=True``), lines it writes to fd :data:`CONTROL_FD` (the code verifier's verdict).

Two programs at once (:func:`run_linked`): a *caller* and a *callee*, each confined as above with
its own fresh uid (the two always differ), its own namespaces and its own private working folder
holding only its own files. They share one thing, the link: two pipes, on which each program
writes to fd :data:`LINK_OUT_FD` what the other reads on fd :data:`LINK_IN_FD`. The parent closes
its copies of the link once both have started, so when one program dies the other reads EOF. Only
the caller gets the control channel, and the run lasts as long as the caller: when it ends, the
parent kills the callee (status ``stopped``). Being another uid, neither can signal or trace the
other nor open the other's ``/proc/<pid>/`` ``environ``, ``mem``, ``fd``, ``cwd`` or ``root`` (the
kernel's ptrace access check), nor see its files (another mount namespace). A callee that floods
its output is killed alone, so the caller reads EOF; a caller that floods ends the run. (The code
verifier runs the candidate program as the callee and the tests as the caller,
:mod:`train.rewards.code_harness`; ``tests/test_sandbox.py`` attacks the link's properties.)
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, Sequence

logger = logging.getLogger(__name__)

CONTROL_FD = 3  # with control=True, the program writes report lines here
LINK_OUT_FD, LINK_IN_FD = 5, 6  # linked programs write to 5 what the other reads on 6
LAUNCHER = Path(__file__).with_name("sandbox_launcher.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
_SYSTEM_FOLDERS = {"/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/opt", "/proc", "/sbin", "/sys", "/usr", "/var"}
_MAX_CONTROL_LINES, _MAX_CONTROL_LINE_BYTES = 16, 4096
_READ_CHUNK = 1 << 16

# ok = exit 0; error = other exit; timeout = wall or CPU limit; output_limit; stopped = a callee
# still running when its caller ended; sandbox_error = set-up failed
Status = Literal["ok", "error", "timeout", "output_limit", "stopped", "sandbox_error"]


@dataclass(frozen=True)
class Isolation:
    """What the launcher enforced for one run (resource limits and the scrubbed environment always)."""

    uid: int | None  # the unprivileged uid the program ran as; None = it kept the trainer's
    mounts: bool  # own mount namespace: trainer's folders covered, private /tmp and workdir
    network: bool  # own network namespace, loopback down
    ipc: bool  # own IPC namespace
    fallbacks: tuple[str, ...]  # one line per property not enforced, with the reason


@dataclass(frozen=True)
class SandboxResult:
    status: Status  # see Status
    stdout: str  # at most max_output_bytes of it (decoded with errors="replace")
    stderr: str  # likewise; for sandbox_error, the reason
    returncode: int | None  # exit code, -N for signal N, None when the launcher never reported
    wall_s: float  # from start to end, set-up included
    truncated: bool  # stdout or stderr went past max_output_bytes
    control: tuple[bytes, ...]  # lines the program wrote to CONTROL_FD, without the newline
    isolation: Isolation | None  # None when the launcher did not report


@dataclass(frozen=True)
class Program:
    """One program of :func:`run_linked`."""

    source: str  # run as main.py
    files: Mapping[str, str] = field(default_factory=dict)  # more files beside main.py (plain name -> text), read-only
    stdin: str = ""


@dataclass(frozen=True)
class LinkedResult:
    caller: SandboxResult  # the program holding the control channel; its end ends the run
    callee: SandboxResult  # stopped when the caller ends, if still running


@dataclass(frozen=True)
class _Limits:
    timeout_s: float
    memory_mb: int
    cpu_s: float
    max_output_bytes: int
    disk_mb: int
    python: str
    packages: tuple[str, ...]


def default_hidden_folders() -> list[str]:
    """The folders covered with empty tmpfs in the program's mount namespace (see the docstring)."""
    candidates = ["/root", "/home", os.path.expanduser("~"), "/tmp", "/var/tmp", "/dev/shm", "/run",
                  tempfile.gettempdir(), str(REPO_ROOT), str(REPO_ROOT.parent)]  # fmt: skip
    real = sorted({os.path.realpath(c) for c in candidates if os.path.isdir(c)} - _SYSTEM_FOLDERS)
    outermost: list[str] = []
    for folder in real:  # sorted, so a parent comes before its children
        if not any(folder.startswith(kept + "/") for kept in outermost):
            outermost.append(folder)
    return outermost


@functools.lru_cache(maxsize=16)
def _package_folders(name: str) -> tuple[list[str], str]:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations or "." in name:
        raise ValueError(f"sandbox packages: {name!r} is not an installed top-level package of this environment")
    folder = os.path.realpath(next(iter(spec.submodule_search_locations)))
    site = os.path.dirname(folder)
    libs = os.path.join(site, f"{name}.libs")  # auditwheel's bundled shared libraries (numpy.libs: OpenBLAS)
    return [folder, *([libs] if os.path.isdir(libs) else [])], site


def shared_package_folders(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(folders to re-bind read-only, folders to put on ``sys.path``) for installed top-level packages.

    Only each package's own folder (and its bundled ``<name>.libs``) is shared, not its site-packages.
    """
    binds: list[str] = []
    paths: list[str] = []
    for name in names:
        folders, site = _package_folders(name)
        binds += folders
        paths.append(site)
    return binds, list(dict.fromkeys(paths))


def run_program(
    source: str,
    *,
    stdin: str = "",
    timeout_s: float,
    memory_mb: int,
    cpu_s: float | None = None,
    max_output_bytes: int = 1 << 20,
    disk_mb: int = 16,
    files: Mapping[str, str] | None = None,
    control: bool = False,
    python: str | None = None,
    uid: int | None = None,
    packages: Sequence[str] = (),
) -> SandboxResult:
    """Run ``source`` as ``main.py`` under the limits above; never raises for the program's sake.

    ``cpu_s`` defaults to ``timeout_s``. ``files`` are extra files (name -> text) placed next to
    ``main.py``, read-only. ``control=True`` opens the control channel: the lines the program
    writes to fd :data:`CONTROL_FD` arrive in :attr:`SandboxResult.control`. ``python`` defaults to
    the interpreter running the trainer (its real path, not a virtualenv's), ``uid`` to a fresh
    random one (the same number is the gid). ``packages`` names installed top-level packages of the
    trainer's environment the program may import (read-only; see :func:`shared_package_folders`).

    >>> run_program("print(input()[::-1])", stdin="olleh", timeout_s=10, memory_mb=256).stdout
    'hello\\n'
    """
    limits = _limits(timeout_s, memory_mb, cpu_s, max_output_bytes, disk_mb, python, packages)
    plan = _Plan(Program(source, dict(files or {}), stdin), uid if uid is not None else _fresh_uids(1)[0], control)
    return _run([plan], limits, link=False)[0]


def run_linked(
    caller: Program,
    callee: Program,
    *,
    timeout_s: float,
    memory_mb: int,
    cpu_s: float | None = None,
    max_output_bytes: int = 1 << 20,
    disk_mb: int = 16,
    control: bool = False,
    python: str | None = None,
    packages: Sequence[str] = (),
) -> LinkedResult:
    """Run two programs at once, linked by pipes (see the module docstring), each under the limits
    of :func:`run_program` (the wall clock counts for both together; CPU, memory, disk and output
    for each). ``control`` is the caller's; each gets its own fresh uid.

    >>> echo = Program("import os\\nos.write(5, os.read(6, 100).upper())")
    >>> ask = Program("import os\\nos.write(5, b'hello')\\nprint(os.read(6, 100).decode())")
    >>> run_linked(ask, echo, timeout_s=10, memory_mb=256).caller.stdout
    'HELLO\\n'
    """
    limits = _limits(timeout_s, memory_mb, cpu_s, max_output_bytes, disk_mb, python, packages)
    caller_uid, callee_uid = _fresh_uids(2)
    results = _run([_Plan(caller, caller_uid, control), _Plan(callee, callee_uid, False)], limits, link=True)
    return LinkedResult(*results)


def _limits(timeout_s: float, memory_mb: int, cpu_s: float | None, max_output_bytes: int, disk_mb: int,
            python: str | None, packages: Sequence[str]) -> _Limits:  # fmt: skip
    cpu = cpu_s if cpu_s is not None else timeout_s
    return _Limits(timeout_s, memory_mb, cpu, max_output_bytes, disk_mb, python or os.path.realpath(sys.executable), tuple(packages))


def _fresh_uids(count: int) -> list[int]:
    """Distinct random uids with no passwd entry, shared by no one (each is also the gid)."""
    uids: list[int] = []
    while len(uids) < count:
        uid = (1 << 30) + secrets.randbelow(1 << 29)
        if uid not in uids:
            uids.append(uid)
    return uids


@dataclass(frozen=True)
class _Plan:
    program: Program
    uid: int
    control: bool


def _run(plans: list[_Plan], limits: _Limits, link: bool) -> list[SandboxResult]:
    """Start each plan's launcher (the first one leads: its end ends the run), pump, report."""
    start = time.monotonic()
    runs: list[_Run] = []
    link_fds: list[int] = []
    try:
        ends: list[tuple[int, int] | None] = [None] * len(plans)
        if link:
            to_callee_r, to_callee_w = os.pipe()
            to_caller_r, to_caller_w = os.pipe()
            link_fds = [to_callee_r, to_callee_w, to_caller_r, to_caller_w]
            ends = [(to_callee_w, to_caller_r), (to_caller_w, to_callee_r)]  # (LINK_OUT_FD, LINK_IN_FD) of each
        for plan, end in zip(plans, ends):
            runs.append(_Run())
            runs[-1].start(plan, limits, end)
        while link_fds:  # the programs hold the link now; a copy here would hide one's death from the other
            os.close(link_fds.pop())
        _pump(runs, start + limits.timeout_s, limits.max_output_bytes)
        return [_result(run, start) for run in runs]
    except Exception as exc:  # noqa: BLE001  the trainer never sees the program's trouble
        logger.exception("sandbox failed")
        failed = SandboxResult("sandbox_error", "", f"{type(exc).__name__}: {exc}", None, time.monotonic() - start, False, (), None)
        return [failed] * len(plans)
    finally:
        for run in runs:
            run.close()
        for fd in link_fds:
            os.close(fd)


@dataclass
class _Streams:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    status: bytearray = field(default_factory=bytearray)
    control: list[bytes] = field(default_factory=list)
    pending_control: bytearray = field(default_factory=bytearray)
    killed_for: Status | None = None  # timeout, output_limit or stopped, when the parent ended the program


class _Run:
    """One launcher process and what the parent holds for it: its folder, its pipes, its output."""

    def __init__(self) -> None:
        self.run_dir: str | None = None
        self.parent_fds: list[int] = []  # closed by close()
        self.proc: subprocess.Popen[bytes] | None = None
        self.status_fd = -1
        self.control_fd: int | None = None
        self.streams = _Streams()

    def _pipe(self) -> tuple[int, int]:
        read_end, write_end = os.pipe()
        self.parent_fds += [read_end, write_end]
        return read_end, write_end

    def start(self, plan: _Plan, limits: _Limits, link: tuple[int, int] | None) -> None:
        self.run_dir = tempfile.mkdtemp(prefix="rlvr-sandbox-")
        read_only, import_paths = shared_package_folders(limits.packages)
        source = plan.program.source
        if import_paths:  # -I -S leaves site-packages off sys.path; trusted code, before the source's first line
            source = f"import sys; sys.path[:0] = {import_paths!r}\n{source}"
        inputs, stdin_path = _write_inputs(self.run_dir, {**plan.program.files, "main.py": source}, plan.program.stdin)
        self.status_fd, status_w = self._pipe()
        child_fds: dict[int, int] = {}  # fd number in the program -> the parent's fd it becomes
        if plan.control:
            self.control_fd, child_fds[CONTROL_FD] = self._pipe()
        if link is not None:
            child_fds[LINK_OUT_FD], child_fds[LINK_IN_FD] = link
        workdir = os.path.join(self.run_dir, "work")
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # BLAS must not start threads: it cannot
        spec = {
            "inputs": inputs, "workdir": workdir, "hide": default_hidden_folders(),
            "python": limits.python, "read_only": [os.path.dirname(os.path.dirname(limits.python)), *read_only],
            "uid": plan.uid, "gid": plan.uid, "memory_mb": limits.memory_mb, "cpu_s": limits.cpu_s,
            "disk_mb": limits.disk_mb, "status_fd": status_w, "fds": [[target, fd] for target, fd in child_fds.items()],
            "env": env,
        }  # fmt: skip
        with open(stdin_path, "rb") as stdin_file:
            self.proc = subprocess.Popen(
                [limits.python, "-I", "-S", str(LAUNCHER), json.dumps(spec)],
                stdin=stdin_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=[status_w, *child_fds.values()], env=env, cwd="/", start_new_session=True,
            )  # fmt: skip
        for fd in [status_w, *child_fds.values()]:  # the child holds these now; keeping them would hide its EOF
            if fd in self.parent_fds:  # the link's ends belong to _run
                self.parent_fds.remove(fd)
                os.close(fd)

    def readable(self) -> list[tuple[int, str]]:
        assert self.proc is not None and self.proc.stdout is not None and self.proc.stderr is not None
        fds = [(self.proc.stdout.fileno(), "stdout"), (self.proc.stderr.fileno(), "stderr"), (self.status_fd, "status")]
        return fds + ([(self.control_fd, "control")] if self.control_fd is not None else [])

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        if self.proc is not None:
            _kill(self.proc)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
        while self.parent_fds:
            os.close(self.parent_fds.pop())
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def _write_inputs(run_dir: str, files: Mapping[str, str], stdin: str) -> tuple[str, str]:
    """Write the program's files to ``run_dir/in`` (read by the launcher as root) and its stdin."""
    inputs = os.path.join(run_dir, "in")
    os.mkdir(inputs, 0o700)
    for name, text in files.items():
        if os.path.basename(name) != name:
            raise ValueError(f"file names are plain names, not paths: {name!r}")
        Path(inputs, name).write_text(text, encoding="utf-8")
    stdin_path = os.path.join(run_dir, "stdin")
    Path(stdin_path).write_text(stdin, encoding="utf-8")
    return inputs, stdin_path


def _pump(runs: list[_Run], deadline: float, max_output_bytes: int) -> None:
    """Read everything the programs write, as it comes, until the first (the lead) exits, floods or
    runs out of time; then the others still running are marked stopped."""
    lead = runs[0]
    with selectors.DefaultSelector() as selector:
        for run in runs:
            for fd, kind in run.readable():
                selector.register(fd, selectors.EVENT_READ, (run, kind))
        while any(key.data[0] is lead for key in selector.get_map().values()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for run in runs:
                    if run.streams.killed_for is None and (run is lead or run.running()):
                        run.streams.killed_for = "timeout"
                return
            for key, _ in selector.select(remaining):
                run, kind = key.data
                if key.fd not in selector.get_map():  # unregistered earlier in this batch
                    continue
                chunk = os.read(key.fd, _READ_CHUNK)
                if not chunk:
                    selector.unregister(key.fd)
                elif kind == "control":
                    run.streams.pending_control += chunk
                    _take_control_lines(run.streams)
                else:
                    buffer = getattr(run.streams, kind)
                    buffer += chunk
                    if len(buffer) > max_output_bytes:
                        del buffer[max_output_bytes:]
                        run.streams.killed_for = "output_limit"
                        if run is lead:
                            return
                        _stop(run, selector)  # alone: the lead reads EOF on the link and goes on
    try:
        assert lead.proc is not None
        lead.proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
    except subprocess.TimeoutExpired:  # it closed its pipes but kept running
        lead.streams.killed_for = "timeout"
    for run in runs[1:]:
        if run.streams.killed_for is None and run.running():
            run.streams.killed_for = "stopped"


def _stop(run: _Run, selector: selectors.BaseSelector) -> None:
    """Kill ``run`` and stop reading it."""
    assert run.proc is not None
    _kill(run.proc)
    for fd in [key.fd for key in selector.get_map().values() if key.data[0] is run]:
        selector.unregister(fd)


def _take_control_lines(streams: _Streams) -> None:
    """Move complete lines from the pending bytes to the control lines (a bounded number)."""
    pending = streams.pending_control
    while b"\n" in pending and len(streams.control) < _MAX_CONTROL_LINES:
        line, _, rest = bytes(pending).partition(b"\n")
        pending[:] = rest
        streams.control.append(line)
    if len(pending) > _MAX_CONTROL_LINE_BYTES or len(streams.control) >= _MAX_CONTROL_LINES:
        pending.clear()  # past the bounds a well-behaved program keeps to: ignored


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the program's process group (its own session) and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _result(run: _Run, start: float) -> SandboxResult:
    assert run.proc is not None
    streams = run.streams
    if streams.killed_for is not None:
        _kill(run.proc)
    returncode = run.proc.wait()
    reports = [json.loads(line) for line in streams.status.decode(errors="replace").splitlines() if line.startswith("{")]
    isolation = _isolation(reports[0]) if reports else None
    error = next((r["error"] for r in reports if "error" in r), None)
    status: Status
    if streams.killed_for is not None:
        status = streams.killed_for
    elif error is not None or isolation is None:
        status = "sandbox_error"
        logger.error("sandbox set-up failed: %s", error or streams.stderr.decode(errors="replace")[-2000:])
    elif returncode == 0:
        status = "ok"
    elif returncode in (-signal.SIGXCPU, -signal.SIGKILL):  # RLIMIT_CPU: SIGXCPU, then SIGKILL
        status = "timeout"
    else:
        status = "error"
    stderr = streams.stderr.decode(errors="replace") if error is None else f"sandbox set-up failed: {error}"
    return SandboxResult(
        status=status, stdout=streams.stdout.decode(errors="replace"), stderr=stderr,
        returncode=returncode if reports else None, wall_s=time.monotonic() - start,
        truncated=streams.killed_for == "output_limit", control=tuple(streams.control), isolation=isolation,
    )  # fmt: skip


_logged_fallbacks: set[str] = set()
_log_lock = threading.Lock()


def _isolation(report: dict) -> Isolation:
    isolation = Isolation(report.get("uid"), bool(report.get("mounts")), bool(report.get("network")),
                          bool(report.get("ipc")), tuple(report.get("fallbacks", ())))  # fmt: skip
    with _log_lock:
        for reason in set(isolation.fallbacks) - _logged_fallbacks:
            _logged_fallbacks.add(reason)
            logger.warning("sandbox property not enforced: %s", reason)
    return isolation


def probe_isolation(python: str | None = None) -> Isolation | None:
    """What the sandbox enforces on this machine: the isolation of a run of ``pass``."""
    return run_program("pass", timeout_s=30, memory_mb=256, python=python).isolation
