"""The one clock of the journal: the database server's.

Hosts sharing a journal compare times each of them wrote: heartbeats against
a lease, and the order in which transitions of one alarm were accepted. With
each host's own clock, a skew beyond the lease looks like a dead host (its
deliveries taken over while it delivers them) and a skew of a second can
order transitions the wrong way. So every time the journal writes or
compares is the database's. Leases are read from it directly: a heartbeat
writes the server's time and a lease is judged against the server's time, in
the same query's connection, so that no local clock (stepped by NTP, frozen
with a paused VM) can make a live owner look silent. ``created_at`` and due
times, written on the hot path, use the local clock plus the offset measured
at each heartbeat: a local clock step moves them by the step until the next
heartbeat (``owner_lease / 4``). SQLite runs on this machine: its clock is
the local one.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import sqlalchemy as sa

# The server's current time (not the transaction's), per dialect.
_SERVER_NOW = {
    "postgresql": sa.func.clock_timestamp,
    "mysql": lambda: sa.func.utc_timestamp(6),
}


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class Clock:
    """The database's time, as the local clock plus the offset last measured."""

    def __init__(self, local: Callable[[], datetime.datetime] = utcnow) -> None:
        self.local = local
        self.offset = datetime.timedelta(0)

    def now(self) -> datetime.datetime:
        return self.local() + self.offset

    def server_now(self, conn: sa.Connection) -> datetime.datetime:
        """The server's time now, read on ``conn`` (the local one for SQLite); the
        offset is measured again on the way."""
        server_now = _SERVER_NOW.get(conn.dialect.name)
        if server_now is None:
            return self.local()
        before = self.local()
        server = conn.execute(sa.select(server_now())).scalar_one()
        after = self.local()
        if server.tzinfo is None:  # MySQL's UTC_TIMESTAMP is naive, and UTC
            server = server.replace(tzinfo=datetime.timezone.utc)
        self.offset = server - (before + (after - before) / 2)
        return server

    def measure(self, conn: sa.Connection) -> None:
        """Read the server's clock (half a round trip is the error left)."""
        self.server_now(conn)
