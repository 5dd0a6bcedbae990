"""The launcher of :mod:`train.rewards.sandbox`: confine this process, then exec the program.

Run by the sandbox as ``python -I -S sandbox_launcher.py SPEC_JSON`` in a fresh session, never
imported by the trainer. It starts with the trainer's privileges (root in this project's sessions
and CI), so it is trusted code, kept short and stdlib-only (it also starts in about 20 ms). In
order, it:

1. reads the program's input files, while their folder is still visible;
2. enters new mount, network and IPC namespaces (each logged as a fallback when refused);
3. in the mount namespace, covers the folders listed in ``hide`` with empty tmpfs, re-binds the
   interpreter's prefix and the shared packages read-only where they were, and mounts a small
   private tmpfs at ``workdir``; without one, it uses the host folder ``workdir`` instead;
4. writes the input files into ``workdir``, sets the resource limits, sets no-new-privileges,
   drops to the unprivileged ``uid``/``gid`` (no supplementary groups), and only then sets
   RLIMIT_NPROC=0 (set before the drop, the kernel would refuse the exec below);
5. puts the descriptors the program is given (``fds``: the control channel, the link to another
   program) at their numbers, reports what it enforced as one JSON line on ``status_fd``
   (close-on-exec, so the program never holds it) and execs ``python -I -S main.py`` with a
   scrubbed environment.

Any failure before the exec is reported on ``status_fd`` and ends the launcher with exit code 127,
so the program never runs half-confined.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import math
import os
import resource
import signal
import sys
from typing import Any

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET = 0x00020000, 0x08000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)), f"mount {target}")


def _unshare(report: dict[str, Any]) -> None:
    """New namespaces, one at a time so that each refusal is reported with its own reason."""
    for key, flag in (("mounts", CLONE_NEWNS), ("network", CLONE_NEWNET), ("ipc", CLONE_NEWIPC)):
        if _libc.unshare(flag) == 0:
            report[key] = True
        else:
            report["fallbacks"].append(f"{key}: unshare refused ({os.strerror(ctypes.get_errno())})")


def _private_mounts(spec: dict[str, Any]) -> None:
    """Hide ``spec["hide"]``, keep ``spec["read_only"]`` (the interpreter's prefix, shared packages)
    read-only where they were, mount a private tmpfs at the workdir."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here reaches the host's mounts
    kept = {folder: os.open(folder, os.O_PATH | os.O_DIRECTORY) for folder in spec["read_only"]}  # before covering
    for folder in spec["hide"]:
        _mount("none", folder, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,nr_inodes=64,mode=755")
    for folder, fd in kept.items():
        if any(folder == h or folder.startswith(h.rstrip("/") + "/") for h in spec["hide"]):
            os.makedirs(folder, mode=0o755, exist_ok=True)  # inside the covering tmpfs
            _mount(f"/proc/self/fd/{fd}", folder, None, MS_BIND | MS_REC)
            _mount(None, folder, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        os.close(fd)
    os.makedirs(spec["workdir"], mode=0o755, exist_ok=True)
    options = f"size={spec['disk_mb']}m,nr_inodes=4096,mode=700,uid={spec['uid']},gid={spec['gid']}"
    _mount("none", spec["workdir"], "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, options)


def _limit(spec: dict[str, Any]) -> None:
    memory = spec["memory_mb"] << 20
    cpu = max(1, math.ceil(spec["cpu_s"]))  # whole seconds; SIGXCPU at the soft limit, SIGKILL at the hard one
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (spec["disk_mb"] << 20, spec["disk_mb"] << 20))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _drop_privileges(spec: dict[str, Any], report: dict[str, Any]) -> None:
    if os.geteuid() != 0:
        report["fallbacks"].append(f"files: not root, so the program keeps the trainer's uid {os.geteuid()}")
    else:
        os.setgroups([])
        os.setresgid(spec["gid"], spec["gid"], spec["gid"])
        os.setresuid(spec["uid"], spec["uid"], spec["uid"])
        report["uid"] = spec["uid"]
    # After the uid change: the kernel checks RLIMIT_NPROC at set*uid and would then fail execve.
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))  # counts threads too, so none of those either
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")  # reset by setuid


def main(argv: list[str]) -> None:
    spec = json.loads(argv[1])
    parent = os.getppid()
    status_fd = fcntl.fcntl(spec["status_fd"], fcntl.F_DUPFD_CLOEXEC, 10)
    # Out of the way (10 and up, close-on-exec) until the end, where each goes to its number.
    passed = [(target, fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)) for target, fd in spec["fds"]]
    for fd in {spec["status_fd"], *(fd for _, fd in spec["fds"])}:
        os.close(fd)
    report: dict[str, Any] = {"uid": None, "mounts": False, "network": False, "ipc": False, "fallbacks": []}
    try:
        files = {}
        for name in os.listdir(spec["inputs"]):
            with open(os.path.join(spec["inputs"], name), "rb") as f:
                files[name] = f.read()
        if os.geteuid() == 0:
            _unshare(report)
        else:
            report["fallbacks"].append("network, mounts, ipc: not root, so no new namespaces")
        if report["mounts"]:
            _private_mounts(spec)
        else:  # the host folder, reachable by the program's uid only
            os.chmod(os.path.dirname(spec["workdir"]), 0o711)
            os.makedirs(spec["workdir"], mode=0o700)
            if os.geteuid() == 0:
                os.chown(spec["workdir"], spec["uid"], spec["gid"])
        for name, data in files.items():
            path = os.path.join(spec["workdir"], name)
            with open(path, "wb") as f:
                f.write(data)
            os.chmod(path, 0o444)
        os.chdir(spec["workdir"])
        os.umask(0o077)
        _limit(spec)
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")  # setuid binaries stay unprivileged
        _drop_privileges(spec, report)
        if os.getppid() != parent:
            raise RuntimeError("the trainer died during set-up")
        if not os.access(spec["python"], os.X_OK):
            raise PermissionError(f"{spec['python']} is not executable by uid {os.geteuid()}; pass python= one it can reach")
        for target, fd in passed:  # CONTROL_FD = 3, LINK_OUT_FD = 5, LINK_IN_FD = 6
            os.dup2(fd, target, inheritable=True)
            os.close(fd)
    except BaseException as exc:  # noqa: BLE001  report anything, run nothing
        report["error"] = f"{type(exc).__name__}: {exc}"
        os.write(status_fd, (json.dumps(report) + "\n").encode())
        os._exit(127)
    os.write(status_fd, (json.dumps(report) + "\n").encode())
    try:
        os.execve(spec["python"], [spec["python"], "-I", "-S", "main.py"], spec["env"])
    except OSError as exc:
        os.write(status_fd, (json.dumps({"error": f"exec {spec['python']}: {exc}"}) + "\n").encode())
        os._exit(127)


if __name__ == "__main__":
    main(sys.argv)
