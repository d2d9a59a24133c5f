"""The ``database`` event dispatcher, which is also the journal."""

from __future__ import annotations

from oslo_config import cfg

from ceilo_notifier import dispatchers, events, journal


class DatabaseBackend(dispatchers.QueuedBackend):
    """Writes events in batches: a commit per event would cost more than the
    delivery itself."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self.journal: journal.Journal | None = None

    def start(self, owner: str | None = None) -> None:
        self.journal = journal.Journal(
            self.conf.database.connection, owner or journal.owner_tag(self.conf.host, "-")
        )
        super().start()

    def write(self, batch: list[tuple[int, events.DeliveryEvent]]) -> None:
        self.journal.record_events(event for _, event in batch)

    def stop(self) -> None:
        super().stop()
        if self.journal is not None:
            self.journal.close()
