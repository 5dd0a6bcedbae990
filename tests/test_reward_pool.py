"""The verifier pool: verdicts in order, failures counted and contained, bounded wall time."""

from __future__ import annotations

import doctest
import time

import pytest

from tests import pool_workers
from train.rewards import pool as pool_module
from train.rewards.pool import VerifierPool, score_in_pool


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(2) as verifier_pool:
        yield verifier_pool


def test_verdicts_come_back_in_order(pool):
    verdicts, counts = pool.score(pool_workers.double, [float(i) for i in range(20)], timeout_s=10.0)
    assert verdicts == [2.0 * i for i in range(20)]
    assert counts == {"errors": 0, "timeouts": 0, "crashes": 0}
    assert pool.score(pool_workers.double, [], timeout_s=1.0) == ([], {"errors": 0, "timeouts": 0, "crashes": 0})


def test_large_items_larger_than_a_pipe_buffer(pool):
    """Items over the prefetch size wait for an idle worker instead of blocking on a full pipe."""
    items = ["x" * 200_000, "y", "z" * 100_000, "w" * 70_000]
    verdicts, counts = pool.score(pool_workers.length, items, timeout_s=10.0)
    assert verdicts == [200_000.0, 1.0, 100_000.0, 70_000.0] and not any(counts.values())


def test_raise_crash_and_segfault_give_zero_and_are_counted(pool):
    items = [("ok", 1.0), ("raise", 1.0), ("ok", 0.5), ("exit", 1.0), ("segfault", 1.0), ("sysexit", 1.0), ("ok", 1.0)]
    before = set(pool.pids())
    verdicts, counts = pool.score(pool_workers.misbehave, items, timeout_s=10.0)
    assert verdicts == [1.0, 0.0, 0.5, 0.0, 0.0, 0.0, 1.0]
    assert counts == {"errors": 2, "timeouts": 0, "crashes": 2}
    assert set(pool.pids()) != before  # the two dead workers were replaced...
    again, counts = pool.score(pool_workers.double, [1.0, 2.0, 3.0], timeout_s=10.0)
    assert again == [2.0, 4.0, 6.0] and counts["crashes"] == 0  # ...and the replacements work


def test_a_hang_is_cut_at_the_time_limit(pool):
    """Three 30 s hangs with a 1 s limit on 2 workers: about 2 s, not 90 s."""
    items = [("hang", 1.0), ("ok", 0.25), ("hang", 1.0), ("hang", 1.0), ("ok", 0.75)]
    start = time.monotonic()
    verdicts, counts = pool.score(pool_workers.misbehave, items, timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert verdicts == [0.0, 0.25, 0.0, 0.0, 0.75]
    assert counts == {"errors": 0, "timeouts": 3, "crashes": 0}
    # 2 rounds of 1 s (about 2.1 s measured), plus slack for forking replacements on a busy machine
    assert elapsed < 8.0, elapsed
    again, _ = pool.score(pool_workers.double, [5.0], timeout_s=10.0)
    assert again == [10.0]


def test_start_up_is_not_charged_to_the_time_limit():
    with VerifierPool(1, initializer=pool_workers.slow_start) as slow:
        verdicts, counts = slow.score(pool_workers.double, [1.0, 2.0], timeout_s=1.0)
    assert verdicts == [2.0, 4.0] and counts["timeouts"] == 0


def test_a_broken_initializer_raises_instead_of_stalling():
    with VerifierPool(1, initializer=pool_workers.broken_start) as broken:
        with pytest.raises(RuntimeError, match="died while starting"):
            broken.score(pool_workers.double, [1.0], timeout_s=1.0)


def test_close_stops_the_workers_and_the_pool():
    verifier_pool = VerifierPool(2)
    verifier_pool.score(pool_workers.double, [1.0], timeout_s=10.0)
    processes = [worker.process for worker in verifier_pool._workers]
    verifier_pool.close()
    verifier_pool.close()  # idempotent
    assert verifier_pool.closed and not any(process.is_alive() for process in processes)
    with pytest.raises(RuntimeError, match="closed"):
        verifier_pool.score(pool_workers.double, [1.0], timeout_s=1.0)


def test_the_shared_pool_is_reused_between_calls():
    first = pool_module.shared_pool(1)
    verdicts, _ = score_in_pool(pool_workers.double, [3.0], workers=1, timeout_s=10.0)
    assert verdicts == [6.0] and pool_module.shared_pool(1) is first


def test_doctests():
    assert doctest.testmod(pool_module).failed == 0
