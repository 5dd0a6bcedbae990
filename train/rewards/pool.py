"""Worker processes that run verifier calls, each under a wall-time limit.

Why processes and not threads: a verifier can hang (sympy simplifying an adversarial expression,
code under test looping) or crash its interpreter (a segfault in a C extension, ``os._exit``), and
neither a thread nor ``signal.alarm`` (main thread only) can stop that. A process can be killed.

Contract of :meth:`VerifierPool.score`: one verdict per item, in order. A call that raises gives
0.0 and counts as an error; one still running after ``timeout_s`` gives 0.0, counts as a timeout,
and its worker is killed (SIGKILL) and replaced; one whose worker dies gives 0.0 and counts as a
crash, and the worker is replaced. None of these reaches the caller, which gets its answer after at
most about ``ceil(len(items) / workers) * timeout_s`` seconds. An item's time limit runs from the
moment its worker is free to start it (as the parent sees it), so waiting in line does not count.

Workers start with the "forkserver" method: a fork of the trainer would copy its CUDA state and
threads (unsafe), and forking from a server that has already imported this module (and the
initializer's) starts a worker faster than "spawn". Importing anything under ``train.`` runs the
package ``__init__`` files, which today pull in torch (about 1.5 s), so that matters. A worker
answers nothing until its ``initializer`` has run (imports, warm caches), so start-up is never
charged to an item's time limit. As with any non-fork start method, a script that scores at
import time needs the ``if __name__ == "__main__":`` guard, since workers import the main module.

The pool lives across calls (training scores every step) and is closed by :meth:`close`, by
leaving a ``with`` block, when it is garbage collected, or at interpreter exit.
:func:`score_in_pool` keeps one shared pool per (workers, initializer) for callers that do not want
to hold one.

Pure Python: no torch, no trainer.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import Any, Callable, Sequence, TypeVar

Item = TypeVar("Item")
Initializer = Callable[[], object]

logger = logging.getLogger(__name__)

_READY, _OK, _ERROR = "ready", "ok", "error"
START_TIMEOUT_S = 120.0  # a worker that takes longer to import and warm up is broken, not slow
_IN_FLIGHT = 2  # items sent to a worker ahead of its answers
_PREFETCH_MAX_BYTES = 16_384  # larger items wait until their worker is idle (a pipe buffers 64 KiB)
_KILL_JOIN_S = 5.0  # SIGKILL cannot be ignored; this only bounds waiting for the kernel to reap


def _worker_main(conn: Connection, initializer: Initializer | None) -> None:
    """Loop of one worker process: receive ``(fn, item)``, reply ``(status, value)``; None stops."""
    # Ctrl-C reaches the whole process group; the parent decides what happens to its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer()
    conn.send((_READY, None))
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the parent is gone
            return
        if task is None:
            return
        fn, item = task
        try:
            reply: tuple[str, Any] = (_OK, float(fn(item)))
        except BaseException as exc:  # SystemExit and the like too: one bad sample must not end the worker
            reply = (_ERROR, f"{type(exc).__name__}: {exc}"[:500])
        try:
            conn.send(reply)
        except OSError:  # the parent is gone
            return


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    started: float  # time.monotonic() at start
    ready: bool = False  # its initializer has run and it waits for items
    tasks: deque[int] = field(default_factory=deque)  # items sent, in order; it works on the first
    deadline: float = float("inf")  # time.monotonic() by which it must answer the first of tasks


@dataclass
class _Call:
    """The state of one :meth:`VerifierPool.score` call."""

    verdicts: list[float]
    todo: deque[int]  # indices of items not yet sent
    timeout_s: float
    counts: dict[str, int] = field(default_factory=lambda: {"errors": 0, "timeouts": 0, "crashes": 0})


def _start_worker(context: Any, initializer: Initializer | None) -> _Worker:
    parent_end, child_end = context.Pipe(duplex=True)
    # daemon: if the parent dies without closing the pool, multiprocessing still reaps the workers
    process = context.Process(target=_worker_main, args=(child_end, initializer), daemon=True, name="verifier")
    process.start()
    child_end.close()  # so that the worker's death shows as EOF on parent_end
    return _Worker(process=process, conn=parent_end, started=time.monotonic())


def _kill_worker(worker: _Worker) -> None:
    if worker.process.is_alive():
        worker.process.kill()
    worker.process.join(timeout=_KILL_JOIN_S)
    worker.conn.close()


def _shutdown(workers: list[_Worker], owner_pid: int) -> None:
    """Ask every worker to stop, give them a second together, then kill what is left."""
    if os.getpid() != owner_pid:
        return  # a forked copy of the owner exiting: the workers are not its to stop
    for worker in workers:
        try:
            worker.conn.send(None)
        except OSError:
            pass
    deadline = time.monotonic() + 1.0
    for worker in workers:
        worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
        _kill_worker(worker)
    workers.clear()


class VerifierPool:
    """A fixed number of verifier worker processes, kept alive between :meth:`score` calls.

    ``initializer`` (a picklable, module-level function) runs once in each worker before it takes
    items: import and warm up there what the verifier needs.
    """

    def __init__(self, workers: int, *, initializer: Initializer | None = None) -> None:
        if workers < 1:
            raise ValueError(f"a verifier pool needs at least one worker, got workers={workers}")
        self.workers = workers
        self._initializer = initializer
        self._context = multiprocessing.get_context("forkserver")
        # The fork server imports these once and every worker is forked from it, so a worker that
        # replaces a killed one starts in milliseconds, not seconds. It only counts before the fork
        # server starts (the first pool of the process); later pools' workers import for themselves.
        # "__main__" is multiprocessing's default preload: the main script is then imported once.
        preload = ["__main__", __name__] + ([initializer.__module__] if initializer is not None else [])
        self._context.set_forkserver_preload(preload)
        self._lock = threading.Lock()  # one score() at a time: workers hold per-call state
        self._workers = [_start_worker(self._context, initializer) for _ in range(workers)]
        # Closes the workers on close(), garbage collection or interpreter exit, whichever is first.
        self._owner_pid = os.getpid()
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, self._owner_pid)

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop all workers (they get a second to finish, then are killed). Idempotent."""
        with self._lock:
            self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def pids(self) -> list[int | None]:
        """Process ids of the current workers (they change when a worker is replaced)."""
        return [worker.process.pid for worker in self._workers]

    def score(
        self, fn: Callable[[Item], float], items: Sequence[Item], *, timeout_s: float
    ) -> tuple[list[float], dict[str, int]]:
        """``fn(item)`` for each item in the workers: the verdicts, and counts of failed calls.

        ``fn`` must be picklable (a module-level function, or a ``functools.partial`` of one) and
        return something ``float()`` accepts. Failures give 0.0 and are counted under "errors",
        "timeouts" and "crashes" (see the module docstring).
        """
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        with self._lock:
            if self.closed:
                raise RuntimeError("this VerifierPool is closed")
            if os.getpid() != self._owner_pid:
                raise RuntimeError("a VerifierPool can only be used by the process that created it, not a fork")
            call = _Call(verdicts=[0.0] * len(items), todo=deque(range(len(items))), timeout_s=timeout_s)
            try:
                while call.todo or any(worker.tasks for worker in self._workers):
                    self._dispatch(fn, items, call)
                    self._collect(call)
                    self._expire(call)
            except BaseException:
                # An item in flight would answer into the next call: replace the workers holding one.
                for slot, worker in enumerate(self._workers):
                    if worker.tasks:
                        self._replace(slot)
                raise
            return call.verdicts, call.counts

    def _dispatch(self, fn: Callable[[Item], float], items: Sequence[Item], call: _Call) -> None:
        """Give every ready worker an item, then a second one to start as soon as it sends the first
        back: waiting for the parent between items costs a scheduler wake-up, which on a busy
        machine (and under nice) can take longer than a check."""
        for depth in range(_IN_FLIGHT):
            for slot, worker in enumerate(self._workers):
                if not call.todo:
                    return
                if not worker.ready or len(worker.tasks) != depth:
                    continue
                index = call.todo[0]
                payload = ForkingPickler.dumps((fn, items[index]))
                if depth > 0 and len(payload) > _PREFETCH_MAX_BYTES:
                    continue  # sending it to a busy worker could fill the pipe and block us
                try:
                    worker.conn.send_bytes(payload)
                except OSError:  # it died while idle (e.g. the OOM killer): not this item's fault
                    self._fail(slot, call, None)
                    continue
                call.todo.popleft()
                if not worker.tasks:
                    worker.deadline = time.monotonic() + call.timeout_s
                worker.tasks.append(index)

    def _collect(self, call: _Call) -> None:
        """Wait until a worker answers, dies, or the nearest deadline passes; record what happened."""
        now = time.monotonic()
        nearest = min(
            [worker.deadline for worker in self._workers if worker.tasks]
            + [worker.started + START_TIMEOUT_S for worker in self._workers if not worker.ready]
            + [now + 1.0]
        )
        waitables: list[Any] = [worker.conn for worker in self._workers]
        waitables += [worker.process.sentinel for worker in self._workers]
        signalled = set(wait(waitables, timeout=max(0.0, nearest - now)))
        for slot, worker in enumerate(self._workers):
            if worker.conn in signalled or worker.process.sentinel in signalled:
                self._receive(slot, call)

    def _receive(self, slot: int, call: _Call) -> None:
        worker = self._workers[slot]
        while True:  # every reply already in the pipe (there can be several)
            try:
                if worker.conn.poll():
                    message = worker.conn.recv()  # raises EOFError once the worker is gone
                elif worker.process.is_alive():
                    return  # nothing (more) to read
                else:
                    message = None
            except (EOFError, OSError):
                message = None
            if message is None:
                if not worker.ready:
                    code = worker.process.exitcode
                    raise RuntimeError(f"a verifier worker died while starting (exit code {code}); see its stderr")
                self._fail(slot, call, "crashes")
                return
            status, value = message
            if status == _READY:
                worker.ready = True
                continue
            index = worker.tasks.popleft()
            if status == _OK:
                call.verdicts[index] = value
            else:
                call.counts["errors"] += 1
                logger.debug("verifier raised on item %d: %s", index, value)
            # the worker started the next item (if any) when it sent this reply
            worker.deadline = time.monotonic() + call.timeout_s if worker.tasks else float("inf")

    def _expire(self, call: _Call) -> None:
        now = time.monotonic()
        for slot, worker in enumerate(self._workers):
            if worker.tasks and now >= worker.deadline:
                self._fail(slot, call, "timeouts")
            elif not worker.ready and now >= worker.started + START_TIMEOUT_S:
                raise RuntimeError(f"a verifier worker did not start within {START_TIMEOUT_S} s")

    def _fail(self, slot: int, call: _Call, kind: str | None) -> None:
        """Replace a worker that hung or died: its current item scores 0.0 and counts under ``kind``
        (None: it died between items, no one's fault); items queued behind it go back in line."""
        worker = self._workers[slot]
        if worker.tasks and kind is not None:
            index = worker.tasks.popleft()
            call.counts[kind] += 1
            logger.debug("verifier %s on item %d; replacing worker %s", kind, index, worker.process.pid)
        call.todo.extendleft(reversed(worker.tasks))
        worker.tasks.clear()
        self._replace(slot)

    def _replace(self, slot: int) -> None:
        _kill_worker(self._workers[slot])
        self._workers[slot] = _start_worker(self._context, self._initializer)


_SHARED: dict[tuple[int, Initializer | None], VerifierPool] = {}
_SHARED_LOCK = threading.Lock()


def shared_pool(workers: int, initializer: Initializer | None = None) -> VerifierPool:
    """The process-wide pool for (workers, initializer), started on first use, closed at exit."""
    with _SHARED_LOCK:
        pool = _SHARED.get((workers, initializer))
        if pool is None or pool.closed or pool._owner_pid != os.getpid():  # a fork needs its own
            pool = _SHARED[(workers, initializer)] = VerifierPool(workers, initializer=initializer)
        return pool


def score_in_pool(
    fn: Callable[[Item], float],
    items: Sequence[Item],
    *,
    workers: int,
    timeout_s: float,
    initializer: Initializer | None = None,
) -> tuple[list[float], dict[str, int]]:
    """:meth:`VerifierPool.score` on the shared pool of ``workers`` processes.

    >>> import operator
    >>> score_in_pool(operator.neg, [1, 2.5], workers=1, timeout_s=10.0)
    ([-1.0, -2.5], {'errors': 0, 'timeouts': 0, 'crashes': 0})
    """
    return shared_pool(workers, initializer).score(fn, items, timeout_s=timeout_s)


__all__ = ["VerifierPool", "score_in_pool", "shared_pool"]
