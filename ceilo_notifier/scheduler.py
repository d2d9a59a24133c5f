"""Stage 3: decide which delivery is attempted when.

Four rules, all kept by one object that only the engine's event loop touches
(so it needs no lock):

* **ordering and supersession** — deliveries of one alarm to one action go
  one at a time, in order; one waiting for its retry is superseded (not sent)
  when a newer transition of that alarm reaches the same action;
* **per-share cap** — at most ``per_host_concurrency`` attempts to one share
  (``shares.share_of``: a registrable domain, an IPv4 address, an IPv6 /64)
  at once, so a dead host holds only its share, and a tenant who writes
  ``a1.evil.example``, ``a2.evil.example``… still holds only one;
* **pool cap** — at most ``dispatch_pool_size`` attempts in all;
* **fairness** — shares with deliveries waiting for a slot are served
  round-robin, so one with thousands queued does not starve one with a
  single alarm.

Retry timing lives here too: a delivery whose attempt failed waits on the
loop's timer for the delay ``retry.RetryPolicy`` chose, unless the engine
``detach``-es it to wait in the journal instead (its key line then ends, and
a newer transition of its key goes at once: the engine asks the journal
before the parked one's next attempt, which is then superseded).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from ceilo_notifier import delivery as delivery_mod
from ceilo_notifier.delivery import Delivery


class _KeyLine:
    """Deliveries of one alarm to one action: the current one, then the rest in order."""

    __slots__ = ("current", "pending")

    def __init__(self, current: Delivery) -> None:
        self.current = current
        self.pending: collections.deque[Delivery] = collections.deque()


class _ShareLine:
    __slots__ = ("active", "waiting", "in_ring")

    def __init__(self) -> None:
        self.active = 0
        self.waiting: collections.deque[Delivery] = collections.deque()
        self.in_ring = False


class Scheduler:
    """Keeps the four rules; ``start`` is called for each delivery given a slot."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pool_size: int,
        per_host: int,
        start: Callable[[Delivery], None],
        supersede: Callable[[Delivery], None],
        due: Callable[[Delivery], None] = lambda _delivery: None,
    ) -> None:
        self.loop = loop
        self.pool_size = pool_size
        self.per_host = min(per_host, pool_size)
        self._start = start
        self._supersede = supersede
        self._due = due
        self._keys: dict[tuple[str, str], _KeyLine] = {}
        self._shares: dict[str, _ShareLine] = {}
        self._ring: collections.deque[str] = collections.deque()
        self.running = 0
        self.stopping = False

    # -- entry points -------------------------------------------------------

    def submit(self, delivery: Delivery, delay: float = 0.0) -> None:
        """A new delivery: behind earlier ones of its key, superseding a waiting one."""
        line = self._keys.get(delivery.key)
        if line is None:
            self._keys[delivery.key] = _KeyLine(delivery)
        elif _older(delivery, line.pending[-1] if line.pending else line.current):
            # Read back from the journal behind a newer transition: stale.
            delivery.state = delivery_mod.WAITING if delay > 0 else delivery_mod.QUEUED
            self._supersede(delivery)
            delivery.state = delivery_mod.DONE
            return
        elif line.current.state == delivery_mod.WAITING:
            self._cancel_timer(line.current)
            self._supersede(line.current)
            line.current = delivery
        else:
            line.pending.append(delivery)
            if delay > 0:
                # Queued behind its key, it waits for no timer: it counts for intake now.
                self._due(delivery)
            return
        if delay > 0:
            self.retry_later(delivery, delay)
        else:
            self._enqueue(delivery)

    def finished(self, delivery: Delivery) -> None:
        """The delivery has its final outcome: free its slot and start the next of its key."""
        delivery.state = delivery_mod.DONE
        self._release(delivery)
        self._next_of_key(delivery)
        self._pump()

    def retry(self, delivery: Delivery, delay: float) -> bool:
        """The attempt failed and may be retried; False if a newer delivery superseded it."""
        self._release(delivery)
        line = self._keys[delivery.key]
        if line.pending:
            delivery.state = delivery_mod.DONE
            self._supersede(delivery)
            line.current = line.pending.popleft()
            self._enqueue(line.current)
            return False
        self.retry_later(delivery, delay)
        self._pump()
        return True

    def retry_later(self, delivery: Delivery, delay: float) -> None:
        delivery.state = delivery_mod.WAITING
        delivery.timer = self.loop.call_later(delay, self._retry_due, delivery)

    def detach(self, delivery: Delivery) -> bool:
        """Forget a delivery waiting for its retry (it waits in the journal); False
        if it is not waiting any more (superseded, or its retry came due)."""
        line = self._keys.get(delivery.key)
        if delivery.state != delivery_mod.WAITING or line is None or line.current is not delivery:
            return False
        self._cancel_timer(delivery)
        delivery.state = delivery_mod.DONE
        del self._keys[delivery.key]  # a waiting delivery has none behind it
        return True

    def readmit(self, delivery: Delivery, delay: float) -> bool:
        """Take back a detached delivery to wait here; False if its key has a newer
        delivery since (the detached one is then stale: superseded)."""
        if delivery.key in self._keys:
            return False
        self._keys[delivery.key] = _KeyLine(delivery)
        self.retry_later(delivery, delay)
        return True

    def load(self, share: str) -> int:
        """Deliveries of a share running or waiting for a slot. Read from other
        threads too: a moment's count, good enough for a cap."""
        line = self._shares.get(share)
        return 0 if line is None else line.active + len(line.waiting)

    def unfinished(self) -> list[Delivery]:
        return [d for line in self._keys.values() for d in (line.current, *line.pending)]

    def stop(self) -> None:
        """No more attempts start; deliveries waiting for a retry stay unfinished."""
        self.stopping = True
        for line in self._keys.values():
            self._cancel_timer(line.current)

    # -- internals ------------------------------------------------------------

    def _retry_due(self, delivery: Delivery) -> None:
        delivery.timer = None
        if delivery.state == delivery_mod.WAITING and not self.stopping:
            self._due(delivery)
            self._enqueue(delivery)

    @staticmethod
    def _cancel_timer(delivery: Delivery) -> None:
        if delivery.timer is not None:
            delivery.timer.cancel()
            delivery.timer = None

    def _enqueue(self, delivery: Delivery) -> None:
        delivery.state = delivery_mod.QUEUED
        host = self._shares.get(delivery.share)
        if host is None:
            host = self._shares[delivery.share] = _ShareLine()
        host.waiting.append(delivery)
        if not host.in_ring and host.active < self.per_host:
            host.in_ring = True
            self._ring.append(delivery.share)
        self._pump()

    def _pump(self) -> None:
        """Give free slots to waiting deliveries, one share at a time in turn."""
        ring, shares = self._ring, self._shares
        while ring and self.running < self.pool_size and not self.stopping:
            name = ring.popleft()
            host = shares[name]
            delivery = host.waiting.popleft()
            host.active += 1
            self.running += 1
            if host.waiting and host.active < self.per_host:
                ring.append(name)
            else:
                host.in_ring = False
            delivery.state = delivery_mod.RUNNING
            self._start(delivery)

    def _release(self, delivery: Delivery) -> None:
        host = self._shares[delivery.share]
        host.active -= 1
        self.running -= 1
        if host.waiting:
            if not host.in_ring:
                host.in_ring = True
                self._ring.append(delivery.share)
        elif host.active == 0:
            del self._shares[delivery.share]

    def _next_of_key(self, delivery: Delivery) -> None:
        line = self._keys.get(delivery.key)
        if line is None or line.current is not delivery:
            return
        if line.pending:
            line.current = line.pending.popleft()
            self._enqueue(line.current)
        else:
            del self._keys[delivery.key]


def _older(delivery: Delivery, other: Delivery) -> bool:
    """Whether the journal accepted a delivery before ``other``: a newer transition
    of its key is then known, and it is stale wherever it came from."""
    if delivery.accepted is None:
        return False
    return other.accepted is None or delivery.accepted < other.accepted
