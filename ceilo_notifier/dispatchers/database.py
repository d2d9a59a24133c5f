"""The ``database`` event dispatcher, which is also the journal."""

from __future__ import annotations

import queue
import threading

from oslo_config import cfg
from oslo_log import log

from ceilo_notifier import dispatchers, events, journal

LOG = log.getLogger(__name__)

_BATCH = 500


class DatabaseBackend(dispatchers.EventBackend):
    """Writes events in batches from one thread: many small commits would cost
    more than the deliveries themselves."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self.journal: journal.Journal | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

    def start(self, owner: str | None = None) -> None:
        self.journal = journal.Journal(
            self.conf.database.connection, owner or journal.owner_tag(self.conf.host, "-")
        )
        self._writer = threading.Thread(target=self._write, name="journal-writer", daemon=True)
        self._writer.start()

    def dump(self, level: int, event: events.DeliveryEvent) -> None:
        self._queue.put(event)

    def _write(self) -> None:
        """Queue items: events, ``threading.Event`` flush markers, ``None`` to stop."""
        while True:
            batch = [self._queue.get()]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            todo = [e for e in batch if isinstance(e, events.DeliveryEvent)]
            try:
                self.journal.record_events((e, e.next_attempt_in) for e in todo)
            except Exception:
                LOG.exception(
                    "Journal write of %d events failed (first: alarm %s)",
                    len(todo),
                    todo[0].alarm_id if todo else None,
                )
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()
            if any(item is None for item in batch):
                return

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event queued so far is written."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def stop(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(30)
            self._writer = None
        if self.journal is not None:
            self.journal.close()
