"""Connecting to the journal's database, and bringing its schema up to date.

A connection pool too small for the threads that query the journal turns a
busy moment into ``sqlalchemy.exc.TimeoutError``; so the pool is sized for
them (``pool_size_for``) unless the operator sizes it, and ``outages`` takes a
full pool for what it is: an outage, not a refused value.
"""

from __future__ import annotations

import math
import os
from typing import Any

import sqlalchemy as sa

# Threads of one process that query the journal besides the loop's pool and
# the consumers: the event writer, the retry reader, the heartbeat, the
# takeover, the purge, and the leader of a group commit.
OWN_THREADS = 6

# Alembic's bookkeeping table of the journal. Not Alembic's default name:
# the journal may share a database with aodh (an aodh.conf as it is), whose
# own migrations keep their revision in "alembic_version".
VERSION_TABLE = "ceilo_notifier_alembic_version"
_OWN_REVISIONS = ("0001", "0002", "0003", "0004")


def pool_size_for(loop_threads: int, consumer_threads: int) -> tuple[int, int]:
    """(pool_size, max_overflow) so that every thread querying at once gets a
    connection: the loop's journal pool and the service's own threads kept open,
    the consumers' on demand."""
    return loop_threads + OWN_THREADS, consumer_threads


def make_engine(
    url: str,
    timeout: float = 10.0,
    pool_size: int = 5,
    max_overflow: int = 10,
) -> sa.Engine:
    """An engine tuned for many small transactions from many threads.

    ``timeout`` bounds connecting, waiting for a pooled connection and each
    statement on PostgreSQL, and (by TCP keepalives and a user timeout) how
    long a connection whose packets go unanswered stays open: a database
    that is down or cut off costs a thread an error, not a hang. A server
    that acknowledges packets but never answers (frozen) is not caught here;
    the service's deadlines on its journal queries and the lease are.
    """
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    connect_args: dict[str, Any] = {}
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        options = parsed.query.get("options", "")
        if isinstance(options, tuple):
            options = " ".join(options)
        connect_args = {
            "connect_timeout": max(1, math.ceil(timeout)),
            "options": f"{options} -c statement_timeout={int(timeout * 1000)}".strip(),
            # A network that drops the database's packets closes the connection
            # within about ``timeout``; the statement timeout only acts on a
            # server that hears the statement.
            "keepalives": 1,
            "keepalives_idle": max(1, math.ceil(timeout)),
            "keepalives_interval": max(1, math.ceil(timeout / 3)),
            "keepalives_count": 3,
            "tcp_user_timeout": int(timeout * 1000),
        }
    return sa.create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=timeout,
        connect_args=connect_args,
    )


def _adopt_old_version_table(conn: sa.engine.Connection) -> None:
    """Journals made before VERSION_TABLE kept their revision in "alembic_version"."""
    tables = set(sa.inspect(conn).get_table_names())
    if VERSION_TABLE in tables or "alembic_version" not in tables or "deliveries" not in tables:
        return
    old = sa.table("alembic_version", sa.column("version_num", sa.String))
    revisions = [row[0] for row in conn.execute(sa.select(old.c.version_num))]
    if not revisions or not all(r in _OWN_REVISIONS for r in revisions):
        return  # someone else's
    new = sa.Table(
        VERSION_TABLE, sa.MetaData(), sa.Column("version_num", sa.String(32), primary_key=True)
    )
    new.create(conn)
    conn.execute(new.insert(), [{"version_num": r} for r in revisions])
    conn.execute(sa.text("DROP TABLE alembic_version"))


def upgrade(url: str) -> None:
    """Create or migrate the journal's schema to the newest revision (Alembic)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "ceilo_notifier:migrations")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _adopt_old_version_table(conn)
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    finally:
        engine.dispose()
