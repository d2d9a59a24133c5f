"""Bounded thread pools for the loop's blocking work: a deadline per call, a fixed size."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ceilo_notifier import pools


def test_a_call_past_its_deadline_is_overdue_and_its_thread_stays_counted():
    pool = pools.BoundedPool("test", 2, 0.3)
    release = threading.Event()
    ran = []

    def hang(n):
        ran.append(n)
        release.wait(10)
        return n

    async def main():
        started = time.monotonic()
        results = await asyncio.gather(
            *(pool.run(hang, n) for n in range(5)), return_exceptions=True
        )
        return results, time.monotonic() - started

    try:
        results, took = asyncio.run(main())
        assert all(isinstance(r, pools.Overdue) for r in results), results
        assert "within 0.3 s (2 of 2 busy)" in str(results[-1])
        assert took < 1.0, f"calls with a 0.3 s deadline took {took:.2f} s"
        assert pool.running == 2 and sorted(ran) == [0, 1]
    finally:
        release.set()
    # The calls that waited for a thread were dropped, not run late.
    time.sleep(0.2)
    assert pool.running == 0 and sorted(ran) == [0, 1]
    assert asyncio.run(pool.run(lambda: "free again")) == "free again"
    pool.close()
    with pytest.raises(pools.Overdue, match="stopped"):
        asyncio.run(pool.run(lambda: None))


def test_a_call_raises_what_its_function_raises():
    pool = pools.BoundedPool("test", 1, 1.0)

    def boom():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        asyncio.run(pool.run(boom))
    pool.close()
