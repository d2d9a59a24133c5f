"""The ``database`` event dispatcher, which is also the journal.

It writes events in batches (a commit per event would cost more than the
delivery itself) and purges finished deliveries older than ``[database]
retention_days`` once an hour, so the table does not grow for ever.
"""

from __future__ import annotations

import datetime
import threading

from oslo_config import cfg
from oslo_log import log

from ceilo_notifier import dispatchers, events, journal

LOG = log.getLogger(__name__)

PURGE_INTERVAL = 3600.0
# oslo.messaging's default for executor_thread_pool_size, before it registers the option.
CONSUMER_THREADS = 64


def pool_size(conf: cfg.ConfigOpts) -> tuple[int, int]:
    """(pool size, overflow) of the journal's connections: as configured, or one
    for each thread that may query it at once (``journal.pool_size_for``)."""
    consumers = getattr(conf, "executor_thread_pool_size", CONSUMER_THREADS)
    size, overflow = journal.pool_size_for(conf.alarm.journal_pool_size, consumers)
    if conf.database.max_pool_size is not None:
        size = conf.database.max_pool_size
    if conf.database.max_overflow is not None:
        overflow = conf.database.max_overflow
    return size, overflow


class DatabaseBackend(dispatchers.QueuedBackend):
    """The journal's writer: events in batches, and the hourly purge."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self.journal: journal.Journal | None = None
        self._stopped = threading.Event()
        self._purger: threading.Thread | None = None

    def start(self, owner: str | None = None) -> None:
        self.journal = journal.Journal(
            self.conf.database.connection,
            owner or journal.owner_tag(self.conf.host, "-"),
            self.conf.database.timeout,
            *pool_size(self.conf),
        )
        super().start()
        if self.conf.database.retention_days > 0:
            self._stopped.clear()
            self._purger = threading.Thread(target=self._purge_hourly, name="journal-purge")
            self._purger.daemon = True
            self._purger.start()

    def _purge_hourly(self) -> None:
        days = self.conf.database.retention_days
        while True:
            before = journal.utcnow() - datetime.timedelta(days=days)
            try:
                count = self.journal.purge(before)
                if count:
                    LOG.info(
                        "Purged %d finished deliveries older than %g days (retention_days)",
                        count,
                        days,
                    )
                # Endpoints no delivery can be held for any more (endpoints.py).
                max_age = datetime.timedelta(seconds=self.conf.alarm.rest_notifier_retry_max_age)
                self.journal.purge_endpoints(journal.utcnow() - max_age)
            except Exception as exc:
                LOG.warning("Purging the journal failed (%s); trying again in an hour", exc)
            if self._stopped.wait(PURGE_INTERVAL):
                return

    def write(self, batch: list[tuple[int, events.DeliveryEvent]]) -> None:
        lost = self.journal.record_events(event for _, event in batch)
        if lost:
            LOG.warning(
                "%d event(s) kept as history only: their deliveries belong to another "
                "process now (taken over while this one could not reach the journal): %s",
                len(lost),
                ", ".join(f"{rid} ({owner})" for rid, owner in lost[:5]),
            )

    def is_outage(self, exc: BaseException) -> bool:
        return journal.is_outage(exc)

    def stop(self) -> None:
        self._stopped.set()
        super().stop()
        if self.journal is not None:
            self.journal.close()
