"""The one clock of the journal: the database server's.

Hosts sharing a journal compare times each of them wrote: heartbeats against
a lease, and the order in which transitions of one alarm were accepted. With
each host's own clock, a skew beyond the lease looks like a dead host (its
deliveries taken over while it delivers them) and a skew of a second can
order transitions the wrong way. So every time the journal writes or
compares is the database's: read at each heartbeat as an offset from the
local clock, so that the hot path pays no query for it. SQLite runs on this
machine: its clock is the local one.
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

    def measure(self, conn: sa.Connection) -> None:
        """Read the server's clock (half a round trip is the error left)."""
        server_now = _SERVER_NOW.get(conn.dialect.name)
        if server_now is None:
            return
        before = self.local()
        server = conn.execute(sa.select(server_now())).scalar_one()
        after = self.local()
        if server.tzinfo is None:  # MySQL's UTC_TIMESTAMP is naive, and UTC
            server = server.replace(tzinfo=datetime.timezone.utc)
        self.offset = server - (before + (after - before) / 2)
