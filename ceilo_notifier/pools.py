"""Thread pools for the blocking work the event loop hands off, one per kind.

The loop's default executor is a handful of threads shared by everything,
and a call running in a thread cannot be cancelled: one kind of work that
hangs (a Keystone that never answers, a journal database that stalls)
would fill it, and every other kind would queue behind it. So each kind has
its own pool, with its own size and its own deadline:

* a call that has not returned by its deadline (counted from when it is
  handed over, the wait for a thread included) raises ``Overdue`` at once;
  the loop does not wait for it. A call still waiting for a thread is
  dropped; one already running runs on in its thread, which stays busy
  until it returns, so the pool never grows past its size;
* ``close`` drops what waits and lets the running calls end by themselves.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent import futures
from typing import TypeVar

T = TypeVar("T")


class Overdue(Exception):
    """A call did not return within its pool's deadline (or the pool is closed)."""


class BoundedPool:
    """``size`` threads for one kind of blocking work; ``deadline`` seconds per call."""

    def __init__(self, name: str, size: int, deadline: float) -> None:
        self.name = name
        self.size = size
        self.deadline = deadline
        self._executor = futures.ThreadPoolExecutor(size, thread_name_prefix=name)
        self._lock = threading.Lock()
        self.running = 0  # calls in a thread now, abandoned ones included

    def _call(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            self.running += 1
        try:
            return fn(*args)
        finally:
            with self._lock:
                self.running -= 1

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in a thread of the pool; its result, or Overdue at the deadline."""
        try:
            handed = self._executor.submit(self._call, fn, *args)
        except RuntimeError:  # shut down: the service is stopping
            raise Overdue(f"the {self.name} threads are stopped") from None
        try:
            # Cancelling the wrapper cancels a call still waiting for a thread.
            return await asyncio.wait_for(asyncio.wrap_future(handed), self.deadline)
        except asyncio.TimeoutError:
            raise Overdue(
                f"no result from the {self.name} threads within {self.deadline:g} s "
                f"({self.running} of {self.size} busy)"
            ) from None

    def start(self, fn: Callable[..., T], *args: object) -> asyncio.Future:
        """``fn(*args)`` in a thread of the pool, with no deadline: for a write
        whose outcome must be known (given up, it might still land later)."""
        return asyncio.wrap_future(self._executor.submit(self._call, fn, *args))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class Periodic:
    """A daemon thread that calls ``tick`` every ``interval`` seconds until stopped.

    ``tick`` contains its own failures: one that raises is logged by the
    subclass and tried again at the next interval.
    """

    def __init__(self, name: str, interval: float) -> None:
        self.interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def stopping(self) -> bool:
        return self._stopped.is_set()

    def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.tick()
