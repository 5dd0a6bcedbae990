"""Run untrusted Python source in a separate, confined process: :func:`run_program`.

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
not. The program talks to the parent only through stdout/stderr, its exit status and, when asked
for (``control=``), a line channel: it writes lines to fd :data:`CONTROL_OUT_FD`, and the parent's
replies arrive on fd :data:`CONTROL_IN_FD` (the code verifier's handshake).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

logger = logging.getLogger(__name__)

CONTROL_OUT_FD, CONTROL_IN_FD = 3, 4  # the program writes lines to 3 and reads replies from 4
LAUNCHER = Path(__file__).with_name("sandbox_launcher.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
_SYSTEM_FOLDERS = {"/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/opt", "/proc", "/sbin", "/sys", "/usr", "/var"}
_MAX_CONTROL_LINES, _MAX_CONTROL_LINE_BYTES = 16, 4096
_READ_CHUNK = 1 << 16

Status = Literal["ok", "error", "timeout", "output_limit", "sandbox_error"]


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
    status: Status  # ok = exit 0; error = other exit; timeout = wall or CPU limit; output_limit; sandbox_error = set-up failed
    stdout: str  # at most max_output_bytes of it (decoded with errors="replace")
    stderr: str  # likewise; for sandbox_error, the reason
    returncode: int | None  # exit code, -N for signal N, None when the launcher never reported
    wall_s: float  # from start to end, set-up included
    truncated: bool  # stdout or stderr went past max_output_bytes
    control: tuple[bytes, ...]  # lines the program wrote to CONTROL_OUT_FD, without the newline
    isolation: Isolation | None  # None when the launcher did not report


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
    files: dict[str, str] | None = None,
    control: Callable[[bytes], bytes | None] | None = None,
    python: str | None = None,
    uid: int | None = None,
    packages: Sequence[str] = (),
) -> SandboxResult:
    """Run ``source`` as ``main.py`` under the limits above; never raises for the program's sake.

    ``cpu_s`` defaults to ``timeout_s``. ``files`` are extra files (name -> text) placed next to
    ``main.py``, read-only. ``control``, when given, opens the line channel: each line the program
    writes to fd 3 is passed to it, and its reply, if any, is written to the program's fd 4.
    ``python`` defaults to the interpreter running the trainer (its real path, not a virtualenv's),
    ``uid`` to a fresh random one (the same number is the gid). ``packages`` names installed
    top-level packages of the trainer's environment the program may import (read-only; see
    :func:`shared_package_folders`).

    >>> run_program("print(input()[::-1])", stdin="olleh", timeout_s=10, memory_mb=256).stdout
    'hello\\n'
    """
    start = time.monotonic()
    python = python or os.path.realpath(sys.executable)
    read_only, import_paths = shared_package_folders(packages)
    if import_paths:  # -I -S leaves site-packages off sys.path; trusted code, before the source's first line
        source = f"import sys; sys.path[:0] = {import_paths!r}\n{source}"
    uid = uid if uid is not None else (1 << 30) + secrets.randbelow(1 << 29)  # no passwd entry, shared by no one
    run_dir: str | None = None
    pipes: list[int] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        run_dir = tempfile.mkdtemp(prefix="rlvr-sandbox-")
        inputs, stdin_path = _write_inputs(run_dir, {**(files or {}), "main.py": source}, stdin)
        status_r, status_w = os.pipe()
        pipes += [status_r, status_w]
        control_out_r = control_out_w = control_in_r = control_in_w = None
        if control is not None:
            control_out_r, control_out_w = os.pipe()  # program -> parent
            control_in_r, control_in_w = os.pipe()  # parent -> program
            pipes += [control_out_r, control_out_w, control_in_r, control_in_w]
            os.set_blocking(control_in_w, False)
        child_fds = [fd for fd in (status_w, control_out_w, control_in_r) if fd is not None]
        workdir = os.path.join(run_dir, "work")
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # BLAS must not start threads: it cannot
        spec = {
            "inputs": inputs, "workdir": workdir, "hide": default_hidden_folders(),
            "python": python, "read_only": [os.path.dirname(os.path.dirname(python)), *read_only],
            "uid": uid, "gid": uid, "memory_mb": memory_mb, "cpu_s": cpu_s if cpu_s is not None else timeout_s,
            "disk_mb": disk_mb, "status_fd": status_w, "control_fds": child_fds[1:], "env": env,
        }  # fmt: skip
        with open(stdin_path, "rb") as stdin_file:
            proc = subprocess.Popen(
                [python, "-I", "-S", str(LAUNCHER), json.dumps(spec)],
                stdin=stdin_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=child_fds,
                env=env, cwd="/", start_new_session=True,
            )  # fmt: skip
        for fd in child_fds:  # the child holds these now; keeping them would hide its EOF
            os.close(fd)
            pipes.remove(fd)
        streams = _pump(proc, status_r, control_out_r, control_in_w, start + timeout_s, max_output_bytes, control)
        return _result(proc, streams, start)
    except Exception as exc:  # noqa: BLE001  the trainer never sees the program's trouble
        logger.exception("sandbox failed")
        return SandboxResult("sandbox_error", "", f"{type(exc).__name__}: {exc}", None, time.monotonic() - start, False, (), None)
    finally:
        if proc is not None:
            _kill(proc)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        for fd in pipes:
            os.close(fd)
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)


def _write_inputs(run_dir: str, files: dict[str, str], stdin: str) -> tuple[str, str]:
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


@dataclass
class _Streams:
    stdout: bytearray
    stderr: bytearray
    status: bytearray
    control: list[bytes]
    killed_for: Status | None = None  # timeout or output_limit, when the parent ended the program


def _pump(
    proc: subprocess.Popen[bytes],
    status_fd: int,
    control_fd: int | None,
    reply_fd: int | None,
    deadline: float,
    max_output_bytes: int,
    control: Callable[[bytes], bytes | None] | None,
) -> _Streams:
    """Read everything the program writes, as it comes, until it exits, floods or runs out of time."""
    assert proc.stdout is not None and proc.stderr is not None
    streams = _Streams(bytearray(), bytearray(), bytearray(), [])
    buffers = {proc.stdout.fileno(): streams.stdout, proc.stderr.fileno(): streams.stderr, status_fd: streams.status}
    pending_line = bytearray()
    with selectors.DefaultSelector() as selector:
        for fd in [*buffers, *([control_fd] if control_fd is not None else [])]:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                streams.killed_for = "timeout"
                return streams
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, _READ_CHUNK)
                if not chunk:
                    selector.unregister(key.fd)
                elif key.fd == control_fd:
                    pending_line += chunk
                    _take_control_lines(pending_line, streams.control, control, reply_fd)
                else:
                    buffer = buffers[key.fd]
                    buffer += chunk
                    if len(buffer) > max_output_bytes:
                        del buffer[max_output_bytes:]
                        streams.killed_for = "output_limit"
                        return streams
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
    except subprocess.TimeoutExpired:  # it closed its pipes but kept running
        streams.killed_for = "timeout"
    return streams


def _take_control_lines(
    pending: bytearray, lines: list[bytes], control: Callable[[bytes], bytes | None] | None, reply_fd: int | None
) -> None:
    """Move complete lines from ``pending`` to ``lines`` (a bounded number), answering each."""
    while b"\n" in pending and len(lines) < _MAX_CONTROL_LINES:
        line, _, rest = bytes(pending).partition(b"\n")
        pending[:] = rest
        lines.append(line)
        reply = control(line) if control is not None else None
        if reply and reply_fd is not None:
            try:
                os.write(reply_fd, reply)  # non-blocking: a program that does not read loses the reply
            except (BlockingIOError, BrokenPipeError):
                pass
    if len(pending) > _MAX_CONTROL_LINE_BYTES or len(lines) >= _MAX_CONTROL_LINES:
        pending.clear()  # past the bounds a well-behaved program keeps to: ignored


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the program's process group (its own session) and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _result(proc: subprocess.Popen[bytes], streams: _Streams, start: float) -> SandboxResult:
    if streams.killed_for is not None:
        _kill(proc)
    returncode = proc.wait()
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
