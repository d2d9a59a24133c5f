"""The service against a journal that is slow, or hangs: nothing acknowledged is lost.

The journal is on PostgreSQL behind ``tests.tcpproxy``, in a schema of the
test's own, so that the database can be made slow or silent for this one
service while it runs, and read directly by the test as it really is.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
import sqlalchemy as sa

from ceilo_notifier import journal
from tests import helpers
from tests.conftest import PG_URL
from tests.tcpproxy import TcpProxy

REFUSED = ("refused the record", "without one")


@pytest.fixture
def proxied_journal():
    """(proxy, direct URL, URL through the proxy) of a fresh, migrated journal."""
    schema = f"ceilo_proxy_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL, poolclass=sa.pool.NullPool)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"no PostgreSQL at {PG_URL} (tools/run-tests.sh starts one): {exc.orig}")
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    journal.upgrade(url)  # directly: the service's own upgrade is then a quick check
    server = sa.engine.make_url(PG_URL)
    proxy = TcpProxy((server.host or "127.0.0.1", server.port or 5432))
    try:
        yield proxy, url, proxy.url(url)
    finally:
        proxy.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _states(url: str) -> dict[str, str]:
    reader = journal.Journal(url, "tests/reader/0")
    try:
        return {r.alarm_id: r.state for r in reader.find()}
    finally:
        reader.close()


def _all_delivered(url: str, alarm_ids: list[str], timeout: float) -> dict[str, str]:
    """The journal's state of each alarm, once all are delivered or the time runs out."""
    helpers.wait_until(
        lambda: {_states(url).get(a) for a in alarm_ids} == {"delivered"}, timeout, 0.2
    )
    return {a: _states(url).get(a) for a in alarm_ids}


def _refused_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if any(r in line for r in REFUSED)]


def test_a_pool_run_out_under_two_workers_is_an_outage_and_loses_nothing(
    proxied_journal, start_notifier, topic, caster, webhook
):
    """A slow database and a pool of one connection: checkouts time out
    (``sqlalchemy.exc.TimeoutError``). That is an outage: the write is retried
    until a connection frees, never taken for a refused value, so no alarm is
    delivered without a record."""
    proxy, direct, through = proxied_journal
    notifier = start_notifier(
        topic,
        default={"workers": 2},
        extra={
            "database": {
                "connection": through,
                "max_pool_size": 1,
                "max_overflow": 0,
                "timeout": 2,
            }
        },
    )
    # Each round trip 0.1 s late: a (re)connection, a few round trips, fits in the
    # 2 s timeout with room to spare on a loaded machine, while the one pooled
    # connection is far too few for two workers' threads.
    proxy.delay(0.05)
    client = caster(topic)
    urls = {f"burst-{i}": webhook.url("ok") for i in range(20)}
    for alarm_id, url in urls.items():
        client.cast(helpers.alarm([url], alarm_id=alarm_id))

    # The pool runs out for whichever thread asks next: intake, a turn, the writer.
    ran_out = re.compile(r"QueuePool limit of size 1 overflow 0 reached")
    helpers.wait_until(
        lambda: ran_out.search(notifier.log()) or _refused_lines(notifier.log()), 30, 0.1
    )
    assert _refused_lines(notifier.log()) == []
    assert ran_out.search(notifier.log()), notifier.log()
    # Every alarm is journaled while the pool keeps running out, none refused...
    journaled = lambda: set(urls) <= set(_states(direct))  # noqa: E731
    helpers.wait_until(lambda: journaled() or _refused_lines(notifier.log()), 30, 0.5)
    assert _refused_lines(notifier.log()) == []
    assert journaled(), sorted(set(urls) - set(_states(direct)))
    # ... and delivered once the database is quick again.
    proxy.pass_through()
    assert helpers.wait_until(lambda: all(webhook.requests_for(u) for u in urls.values()), 30)
    states = _all_delivered(direct, list(urls), 30)
    assert set(states.values()) == {"delivered"}, states
    time.sleep(0.5)  # a second request, were there one, would come now
    counts = {a: len(webhook.requests_for(u)) for a, u in urls.items()}
    assert set(counts.values()) == {1}, counts
    assert notifier.alive()
    assert _refused_lines(notifier.log()) == []


def test_a_database_that_hangs_loses_nothing(
    proxied_journal, start_notifier, topic, caster, webhook
):
    """Connections accepted, nothing answered (a frozen server, a black-holed
    route): no alarm is delivered without its record, the process stays up, and
    once the database answers again every alarm is delivered once and journaled."""
    proxy, direct, through = proxied_journal
    notifier = start_notifier(topic, extra={"database": {"connection": through, "timeout": 1}})
    client = caster(topic)
    before = webhook.url("ok")
    client.cast(helpers.alarm([before], alarm_id="before"))
    assert webhook.wait_for(before)

    proxy.stall()
    urls = {f"hung-{i}": webhook.url("ok") for i in range(5)}
    for alarm_id, url in urls.items():
        client.cast(helpers.alarm([url], alarm_id=alarm_id))
    time.sleep(5)
    assert notifier.alive()
    early = [a for a, u in urls.items() if webhook.requests_for(u)]
    assert early == [], f"delivered before the journal could record them: {early}"

    proxy.pass_through()
    assert helpers.wait_until(lambda: all(webhook.requests_for(u) for u in urls.values()), 60), (
        notifier.log()
    )
    states = _all_delivered(direct, list(urls), 30)
    assert set(states.values()) == {"delivered"}, states
    time.sleep(0.5)
    counts = {a: len(webhook.requests_for(u)) for a, u in urls.items()}
    assert set(counts.values()) == {1}, counts
    assert notifier.alive()
    assert _refused_lines(notifier.log()) == []
