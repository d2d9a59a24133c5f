"""The last stage: announce each event to the event sinks, off the delivery path.

Event sinks are the log line of each attempt, the metrics and every event
dispatcher (the journal, versioned notifications, third-party ones). They run
on one thread of their own, in the order the events happened, outside any
lock of the engine: a slow sink delays the announcements, never a delivery,
and a sink may call back into the engine without deadlocking it. A sink that
raises is logged and the others still get the event.

A delivery's waiters are woken, and its place in the engine's bound is
released, only once its final event has reached every sink: whoever waits for
an outcome can read it in the journal, and a sink that falls behind slows
intake instead of growing this queue without end.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable

from oslo_log import log

from ceilo_notifier import events
from ceilo_notifier.delivery import Delivery

LOG = log.getLogger(__name__)

Sink = Callable[[events.DeliveryEvent], None]

_STOP = object()


def log_event(event: events.DeliveryEvent) -> None:
    """The sink that writes one log line per attempt and decision."""
    outcome = event.outcome
    if outcome == events.DROPPED:
        return  # intake logged it with its cause already
    args = {
        "alarm": event.alarm_id,
        "action": event.action,
        "attempt": event.attempt,
        "status": event.status_code,
        "ms": (event.duration or 0.0) * 1000,
        "error": event.error,
        "delay": event.next_attempt_in or 0.0,
        "rid": event.request_id,
    }
    if outcome == events.DELIVERED:
        LOG.info(
            "Alarm %(alarm)s delivered to %(action)s (status %(status)s, attempt "
            "%(attempt)d, %(ms).0f ms, %(rid)s)",
            args,
        )
    elif outcome == events.RETRYING:
        LOG.warning(
            "Alarm %(alarm)s: attempt %(attempt)d to %(action)s failed: %(error)s; "
            "retrying in %(delay).1f s (%(rid)s)",
            args,
        )
    elif outcome == events.SUPERSEDED:
        LOG.info(
            "Alarm %(alarm)s: delivery %(rid)s to %(action)s superseded by a newer transition",
            args,
        )
    else:
        LOG.error(
            "Alarm %(alarm)s: delivery to %(action)s failed after %(attempt)d "
            "attempt(s): %(error)s (%(rid)s)",
            args,
        )


class Announcer:
    """One thread that hands every event to every sink, in order."""

    def __init__(
        self, sinks: Iterable[Sink], on_final: Callable[[Delivery], None] | None = None
    ) -> None:
        self.sinks = list(sinks)
        self.on_final = on_final
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="event-announcer", daemon=True)
        self.thread.start()

    def announce(self, event: events.DeliveryEvent, delivery: Delivery | None = None) -> None:
        """Queue an event; ``delivery`` is given with its final event."""
        self._queue.put((event, delivery))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            event, delivery = item
            if isinstance(delivery, threading.Event):  # a flush marker
                delivery.set()
                continue
            for sink in self.sinks:
                try:
                    sink(event)
                except Exception:
                    LOG.exception(
                        "Event sink %r failed on %s of alarm %s",
                        sink,
                        event.outcome,
                        event.alarm_id,
                    )
            if delivery is not None:
                delivery.announced()
                if self.on_final is not None:
                    self.on_final(delivery)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event queued so far went to every sink."""
        done = threading.Event()
        self._queue.put((None, done))
        return done.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Announce what is queued, then end the thread."""
        self._queue.put(_STOP)
        self.thread.join(timeout)
