"""Outage or refusal: the journal's classification of real errors of real databases.

Each error here is raised by PostgreSQL, psycopg2, SQLAlchemy's pool or
SQLite themselves, not built by hand, so that a driver or library release
that raises something else is caught here. An outage must never pass for a
refusal (the alarm would be delivered without a record, or not at all).
"""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa

from ceilo_notifier import journal
from tests.conftest import PG_URL
from tests.tcpproxy import TcpProxy


def _raised(engine: sa.Engine, *statements: str, params: dict | None = None) -> BaseException:
    """The error the last of ``statements`` raises, in one transaction."""
    with pytest.raises(Exception) as caught:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement), params or {})
    return caught.value


def _outage(exc: BaseException) -> None:
    assert journal.is_outage(exc), repr(exc)
    assert not journal.is_refusal(exc), repr(exc)


def _refusal(exc: BaseException) -> None:
    assert journal.is_refusal(exc), repr(exc)
    assert not journal.is_outage(exc), repr(exc)


@pytest.fixture
def pg():
    engine = sa.create_engine(PG_URL, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


def test_a_statement_timeout_is_an_outage(pg):
    exc = _raised(pg, "SET LOCAL statement_timeout = 50", "SELECT pg_sleep(2)")
    assert isinstance(exc, sa.exc.OperationalError) and exc.orig.pgcode == "57014", exc
    _outage(exc)


def test_a_refused_connection_is_an_outage():
    with TcpProxy() as proxy:
        proxy.cut()
        engine = journal.make_engine(proxy.url(PG_URL), timeout=1)
        try:
            exc = _raised(engine, "SELECT 1")
        finally:
            engine.dispose()
    assert isinstance(exc, sa.exc.OperationalError) and "refused" in str(exc), exc
    _outage(exc)


def test_a_connection_cut_while_open_is_an_outage():
    with TcpProxy() as proxy:
        engine = sa.create_engine(proxy.url(PG_URL), poolclass=sa.pool.NullPool)
        with pytest.raises(Exception) as caught, engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            proxy.cut()
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    assert isinstance(caught.value, sa.exc.OperationalError), caught.value
    _outage(caught.value)


def test_a_full_pool_is_an_outage(pg_schema_url):
    engine = journal.make_engine(pg_schema_url, timeout=1, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as held:
            held.execute(sa.text("SELECT 1"))
            exc = _raised(engine, "SELECT 1")
    finally:
        engine.dispose()
    assert isinstance(exc, sa.exc.TimeoutError) and "QueuePool limit" in str(exc), exc
    _outage(exc)


def test_a_connection_the_server_terminates_is_an_outage(pg):
    victim = sa.create_engine(PG_URL, poolclass=sa.pool.NullPool)
    try:
        with pytest.raises(Exception) as caught, victim.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            with pg.connect() as admin:
                assert admin.execute(sa.text(f"SELECT pg_terminate_backend({pid})")).scalar()
            conn.execute(sa.text("SELECT 1"))
    finally:
        victim.dispose()
    assert isinstance(caught.value, sa.exc.OperationalError), caught.value
    _outage(caught.value)


def test_a_unique_violation_is_a_refusal(pg):
    exc = _raised(
        pg,
        "CREATE TEMP TABLE t (k int PRIMARY KEY)",
        "INSERT INTO t VALUES (1)",
        "INSERT INTO t VALUES (1)",
    )
    assert isinstance(exc, sa.exc.IntegrityError) and exc.orig.pgcode == "23505", exc
    _refusal(exc)


def test_a_value_too_long_is_a_refusal(pg):
    exc = _raised(pg, "CREATE TEMP TABLE t (v varchar(3))", "INSERT INTO t VALUES ('abcd')")
    assert isinstance(exc, sa.exc.DataError) and exc.orig.pgcode == "22001", exc
    _refusal(exc)


@pytest.mark.parametrize("value", ["a\x00b", "a\udcffb"], ids=["nul", "lone-surrogate"])
def test_a_value_the_driver_cannot_send_is_a_refusal(pg, value):
    exc = _raised(
        pg, "CREATE TEMP TABLE t (v text)", "INSERT INTO t VALUES (:v)", params={"v": value}
    )
    assert isinstance(exc, ValueError) or isinstance(getattr(exc, "orig", None), ValueError), exc
    _refusal(exc)


def test_a_locked_sqlite_database_is_an_outage(tmp_path):
    path = tmp_path / "locked.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (k int)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    try:
        exc = _raised(engine, "INSERT INTO t VALUES (2)")
    finally:
        engine.dispose()
        holder.close()
    assert isinstance(exc, sa.exc.OperationalError) and "locked" in str(exc), exc
    _outage(exc)
