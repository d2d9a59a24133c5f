"""Event dispatchers: where delivery events go (after Senlin's event dispatchers).

Every name in ``[DEFAULT] event_dispatchers`` is loaded from the stevedore
namespace ``ceilo_notifier.dispatchers`` and receives every event through
``dump``. Third parties add their own by subclassing ``EventBackend``.
"""

from __future__ import annotations

import abc
import logging
import queue
import threading
import time
from collections.abc import Sequence

from oslo_config import cfg
from oslo_log import log
from stevedore import named

from ceilo_notifier import events

LOG = log.getLogger(__name__)

NAMESPACE = "ceilo_notifier.dispatchers"

LEVELS = {
    events.DELIVERED: logging.INFO,
    events.SUPERSEDED: logging.INFO,
    events.RETRYING: logging.WARNING,
    events.FAILED: logging.ERROR,
    events.DROPPED: logging.ERROR,
}


class EventBackend(abc.ABC):
    """Receives every delivery event. ``dump`` is called on the engine's
    announcer thread, in the order the events happened; a slow ``dump``
    delays the announcements (and, past ``max_pending_deliveries``, intake),
    never a delivery."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf

    @abc.abstractmethod
    def dump(self, level: int, event: events.DeliveryEvent) -> None:
        """Record one event; ``level`` is a logging level (INFO, WARNING, ERROR)."""

    def start(self) -> None:  # noqa: B027 - optional hook
        """Called in the worker process before the first event."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources; called once, after the last event."""


class QueuedBackend(EventBackend):
    """A backend whose writes happen on a thread of its own, in batches.

    ``dump`` only queues, so a slow database or broker never holds up the
    announcer; subclasses implement ``write(batch)``. A write that fails
    because the backend is unreachable (``is_outage``) is retried, the same
    batch, until it is back: nothing is dropped silently. The queue is
    bounded (``max_queued``): when it is full ``dump`` waits, the announcer
    with it, and so intake slows down instead of memory growing. A batch
    refused for its content is written event by event, so one bad event
    costs only itself (one log line).
    """

    batch_size = 500
    max_queued = 20000
    stop_timeout = 10.0  # how long a stopping writer keeps retrying

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self._queue: queue.Queue = queue.Queue(self.max_queued)
        self._thread: threading.Thread | None = None
        self._stop_by: float | None = None

    @abc.abstractmethod
    def write(self, batch: list[tuple[int, events.DeliveryEvent]]) -> None:
        """Write (level, event) pairs, oldest first."""

    def is_outage(self, exc: BaseException) -> bool:
        """True when ``exc`` means the backend is unreachable for now."""
        return isinstance(exc, (OSError, TimeoutError))

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"{type(self).__name__}-writer", daemon=True
        )
        self._thread.start()

    def dump(self, level: int, event: events.DeliveryEvent) -> None:
        self._queue.put((level, event))

    def _run(self) -> None:
        """Queue items: (level, event), flush markers (threading.Event), None to stop."""
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            todo = [item for item in batch if isinstance(item, tuple)]
            if todo:
                self._write_until_done(todo)
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()
            if any(item is None for item in batch):
                return

    def _write_until_done(self, todo: list[tuple[int, events.DeliveryEvent]]) -> None:
        name = type(self).__name__
        delay, failing_since = 0.5, None
        while True:
            try:
                self.write(todo)
            except Exception as exc:
                if not self.is_outage(exc):
                    self._write_each(todo, exc)
                    return
                if failing_since is None:
                    failing_since = time.monotonic()
                    LOG.error(
                        "%s cannot write (%s); %d event(s) kept, retrying until it is back",
                        name,
                        _first_line(exc),
                        len(todo),
                    )
                if self._stop_by is not None and time.monotonic() > self._stop_by:
                    LOG.error(
                        "%s still unreachable at stop: %d event(s) not written (first: "
                        "alarm %s); their journaled deliveries resume at the next start",
                        name,
                        len(todo),
                        todo[0][1].alarm_id,
                    )
                    return
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if failing_since is not None:
                LOG.warning(
                    "%s writing again after %.0f s unreachable",
                    name,
                    time.monotonic() - failing_since,
                )
            return

    def _write_each(self, todo: list[tuple[int, events.DeliveryEvent]], exc: Exception) -> None:
        if len(todo) > 1:
            for item in todo:
                self._write_until_done([item])
            return
        event = todo[0][1]
        LOG.error(
            "%s refused the %s event of alarm %s (%s); that event is dropped",
            type(self).__name__,
            event.outcome,
            event.alarm_id,
            _first_line(exc),
        )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event queued so far is written."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def stop(self) -> None:
        if self._thread is not None:
            self._stop_by = time.monotonic() + self.stop_timeout
            self._queue.put(None)
            self._thread.join(self.stop_timeout + 30)
            self._thread = None


def _first_line(exc: BaseException) -> str:
    return (str(getattr(exc, "orig", None) or exc).splitlines() or [type(exc).__name__])[0]


def load(conf: cfg.ConfigOpts, names: Sequence[str] | None = None) -> list[EventBackend]:
    """The event dispatchers named in ``event_dispatchers``, instantiated."""
    names = list(conf.event_dispatchers if names is None else names)

    def missing(missing_names):
        LOG.error("Event dispatchers not installed, ignored: %s", ", ".join(missing_names))

    manager = named.NamedExtensionManager(
        NAMESPACE,
        names,
        invoke_on_load=True,
        invoke_args=(conf,),
        name_order=True,
        on_missing_entrypoints_callback=missing,
        on_load_failure_callback=lambda _m, ep, exc: LOG.error(
            "Event dispatcher %s could not be loaded: %s", ep, exc
        ),
    )
    return [ext.obj for ext in manager]


def fan_out(backends: Sequence[EventBackend]):
    """One event sink for the engine that hands each event to every backend."""

    def dump(event: events.DeliveryEvent) -> None:
        level = LEVELS.get(event.outcome, logging.INFO)
        for backend in backends:
            try:
                backend.dump(level, event)
            except Exception:
                LOG.exception(
                    "Event dispatcher %s failed on %s of alarm %s",
                    type(backend).__name__,
                    event.outcome,
                    event.alarm_id,
                )

    return dump
