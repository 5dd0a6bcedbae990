"""Verifier functions that misbehave on purpose, for ``tests/test_reward_pool.py``.

They live in their own module, at module level, so that worker processes can unpickle them by
reference (a function defined inside a test cannot be pickled).
"""

from __future__ import annotations

import ctypes
import os
import time


def double(x: float) -> float:
    return 2.0 * x


def misbehave(item: tuple[str, float]) -> float:
    """``(what, value)``: return ``value`` after doing ``what`` (ok, raise, hang, exit, segfault)."""
    what, value = item
    if what == "raise":
        raise ValueError("a verifier bug")
    if what == "hang":
        time.sleep(30.0)
    if what == "exit":
        os._exit(3)
    if what == "segfault":
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    if what == "sysexit":
        raise SystemExit(1)
    return value


def slow_start() -> None:
    """An initializer slower than the time limit used with it: start-up must not count."""
    time.sleep(1.5)


def broken_start() -> None:
    raise RuntimeError("this initializer always fails")


def length(text: str) -> float:
    return float(len(text))
