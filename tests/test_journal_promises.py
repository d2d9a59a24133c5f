"""SPEC 8's durability promises on SQLite and PostgreSQL: no stale resend, no silent loss,
one bad value costs only itself, credentials out of settled rows, databases that go away."""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
import urllib.request

import pytest
import sqlalchemy as sa

from ceilo_notifier import events, journal
from tests import helpers, pg
from tests.conftest import empty_journal
from tests.test_journal import JournaledRun, new_row


@pytest.fixture
def journaled_on(make_conf, db_url):
    """A JournaledRun on SQLite and on PostgreSQL."""
    runs = []

    def make(**alarm_opts):
        conf = make_conf(alarm={"rest_notifier_timeout": 2, **alarm_opts})
        journal.upgrade(db_url)
        run = JournaledRun(conf, db_url)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.close()


def test_an_over_long_alarm_id_is_refused_and_its_neighbours_are_recorded(
    journaled_on, webhook, caplog
):
    run = journaled_on()
    good = [webhook.url("ok") for _ in range(3)]
    batch = [
        helpers.alarm([good[0]], alarm_id="good-0"),
        helpers.alarm([webhook.url("ok")], alarm_id="x" * 1000),
        helpers.alarm([good[1]], alarm_id="good-1"),
        helpers.alarm([good[2]], alarm_id="good-2"),
    ]
    deliveries = run.endpoint.handle_many(batch, strict=True)
    assert [d.notification.alarm_id for d in deliveries] == ["good-0", "good-1", "good-2"]
    for d in deliveries:
        assert d.wait(10) and d.outcome == events.DELIVERED
    run.backend.flush()
    assert {r.alarm_id: r.state for r in run.backend.journal.find()} == {
        "good-0": "delivered",
        "good-1": "delivered",
        "good-2": "delivered",
    }
    refused = [r.getMessage() for r in caplog.records if "x" * 200 in r.getMessage()]
    assert len(refused) == 1
    assert "alarm_id is 1000 characters long, more than 255" in refused[0]


def test_an_event_the_database_refuses_costs_only_itself(make_conf, pg_schema_url, caplog):
    """PostgreSQL enforces column sizes: an over-long scheme fails its own event alone."""
    url = pg_schema_url
    empty_journal(url)
    journal.upgrade(url)
    run = JournaledRun(make_conf(), url)
    try:
        rows = [new_row(alarm_id=f"n{i}") for i in range(3)]
        run.backend.journal.record_new(rows)
        for i, row in enumerate(rows):
            scheme = "s" * 500 if i == 1 else "http"
            run.backend.dump(
                logging.INFO,
                events.DeliveryEvent(
                    f"n{i}", "x", scheme, events.DELIVERED, 1, row["request_id"], 200
                ),
            )
        assert run.backend.flush(20)
        states = {r.alarm_id: r.state for r in run.backend.journal.find()}
        assert states == {"n0": "delivered", "n1": "pending", "n2": "delivered"}
        refused = [
            r.getMessage() for r in caplog.records if "refused the delivered" in r.getMessage()
        ]
        assert len(refused) == 1 and "alarm n1" in refused[0]
    finally:
        run.close()


def _journal_old(j: journal.Journal, alarm_id: str, action: str, age: float, state="pending"):
    """A delivery accepted ``age`` seconds ago by an earlier launch of this host."""
    row = {**new_row(alarm_id=alarm_id, action=action), "action_masked": action}
    journal.Journal(j.url, "test-host/OLD/1").record_new([row])
    when = journal.utcnow() - datetime.timedelta(seconds=age)
    with j.engine.begin() as conn:
        conn.execute(
            journal.deliveries.update()
            .where(journal.deliveries.c.request_id == row["request_id"])
            .values(created_at=when, state=state)
        )
    return row["request_id"]


def test_resume_fails_a_delivery_past_its_retry_age_instead_of_sending_it(journaled_on, webhook):
    run = journaled_on(rest_notifier_retry_max_age=60)
    j = run.backend.journal
    old, fresh = webhook.url("ok"), webhook.url("ok")
    stale_id = _journal_old(j, "aged", old, age=3600)
    fresh_id = _journal_old(j, "fresh", fresh, age=5)
    resumed = run.engine.resume(j.claim_open("test-host", "L"))
    assert [d.request_id for d in resumed] == [fresh_id]
    assert webhook.wait_for(fresh)
    assert run.engine.wait_idle(10)
    run.backend.flush()
    (aged,) = j.get([stale_id])
    assert aged.state == "failed" and "rest_notifier_retry_max_age" in aged.error
    assert webhook.requests_for(old) == []


def test_resume_supersedes_a_delivery_with_a_newer_transition_delivered_since(
    journaled_on, webhook
):
    run = journaled_on()
    j = run.backend.journal
    url = webhook.url("ok")
    stale_id = _journal_old(j, "flip", url, age=30)  # "alarm", never finished
    newer_id = _journal_old(j, "flip", url, age=10, state="delivered")  # "ok", sent since
    assert run.engine.resume(j.claim_open("test-host", "L")) == []
    run.engine.announcer.flush()
    run.backend.flush()
    states = {r.request_id: r.state for r in j.get([stale_id, newer_id])}
    assert states == {stale_id: "superseded", newer_id: "delivered"}
    assert webhook.requests_for(url) == []  # the receiver never gets the stale one


def test_two_replays_racing_for_the_same_failed_deliveries_each_take_a_share(db_url):
    journal.upgrade(db_url)
    j = journal.Journal(db_url, "h/L/1")
    rows = [new_row(alarm_id=f"r{i}") for i in range(30)]
    j.record_new(rows)
    j.record_events(
        events.DeliveryEvent(r["alarm_id"], "x", "http", events.FAILED, 1, r["request_id"])
        for r in rows
    )
    ids = [r["request_id"] for r in rows]
    results: list[list[journal.Record]] = [[], []]
    barrier = threading.Barrier(2)

    def replay(slot):
        mine = journal.Journal(db_url, f"replayer-{slot}/L/1")
        barrier.wait()
        results[slot] = mine.claim(ids, [events.FAILED])
        mine.close()

    threads = [threading.Thread(target=replay, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    claimed = [r.request_id for part in results for r in part]
    assert sorted(claimed) == sorted(ids)  # every one taken, none twice


def test_a_settled_delivery_keeps_only_the_masked_action(journaled_on, webhook):
    run = journaled_on(rest_notifier_max_retries=0)
    good = webhook.url("ok", userinfo="hook:s3cret")
    bad = webhook.url("status/410", userinfo="hook:s3cret")
    for d in run.cast(good, "alarm", "creds") + run.cast(bad, "alarm", "creds"):
        assert d.wait(10)
    run.backend.flush()
    rows = {r.state: r for r in run.backend.journal.find(alarm_id="creds")}
    assert "s3cret" not in rows["delivered"].action
    assert rows["delivered"].action == rows["delivered"].action_masked
    assert "s3cret" in rows["failed"].action  # what replay needs, until purged


@pytest.fixture
def private_pg():
    cluster = pg.PrivateCluster()
    yield cluster
    cluster.close()


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_database_outage_loses_nothing_and_health_says_so(
    private_pg, start_notifier, topic, caster, webhook
):
    port = helpers.free_port()
    notifier = start_notifier(
        topic,
        extra={"database": {"connection": private_pg.url, "timeout": 2}, "metrics": {"port": port}},
    )
    client = caster(topic)
    before = [webhook.url("ok") for _ in range(5)]
    for i, url in enumerate(before):
        client.cast(helpers.alarm([url], alarm_id=f"before-{i}"))
    for url in before:
        assert webhook.wait_for(url)

    private_pg.stop()
    assert helpers.wait_until(lambda: _get(f"http://127.0.0.1:{port}/healthz")[0] == 503, 15)
    during = [webhook.url("ok") for _ in range(5)]
    for i, url in enumerate(during):
        client.cast(helpers.alarm([url], alarm_id=f"during-{i}"))
    time.sleep(5)
    assert notifier.alive()
    assert notifier.wait_for_log(r"journal unavailable .*retrying until it is back", 10)
    private_pg.start()

    for url in during:
        assert len(webhook.wait_for(url, timeout=30)) == 1
    assert helpers.wait_until(lambda: _get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 15)
    j = journal.Journal(private_pg.url, "reader/L/1")
    try:

        def all_delivered():
            states = {r.alarm_id: r.state for r in j.find()}
            return len(states) == 10 and set(states.values()) == {"delivered"}

        assert helpers.wait_until(all_delivered, 30), {r.alarm_id: r.state for r in j.find()}
    finally:
        j.close()
    for url in before + during:
        assert len(webhook.requests_for(url)) == 1


def test_a_message_the_broker_delivers_again_is_not_accepted_twice(journaled_on, webhook, caplog):
    """A consumer that died before acknowledging leaves its messages to another one:
    what it journaled is recognised by the message's id, on RPC and listener alike."""
    from ceilo_notifier.consumers import notifications

    caplog.set_level("INFO")
    first, url = journaled_on(), webhook.url("ok")
    data = helpers.alarm([url, "log://x"], alarm_id="again")
    (d, _) = first.endpoint.handle_many([data], message_ids=["rpc:cafe"])
    assert d.wait(10) and d.outcome == events.DELIVERED
    # Another worker of the host, on the same journal, gets the message again.
    second = journaled_on()
    assert second.endpoint.handle_many([data], message_ids=["rpc:cafe"]) == []
    assert len(second.backend.journal.find(alarm_id="again")) == 2
    lines = [r.getMessage() for r in caplog.records if "journaled already" in r.getMessage()]
    assert len(lines) == 2, lines  # one per action, each naming the alarm
    assert all(line.startswith("Alarm again: req-") for line in lines), lines
    assert any(d.request_id in line for line in lines), lines
    assert len(webhook.requests_for(url)) == 1
    # A message of its own (a new transition, the same alarm) is accepted.
    (new, _) = second.endpoint.handle_many([data], message_ids=["rpc:beef"])
    assert new.request_id != d.request_id and new.wait(10)
    assert len(webhook.requests_for(url)) == 2

    listener = notifications.AlarmUpdateEndpoint(second.endpoint, pool="p1")
    message = {
        "payload": helpers.alarm([url], alarm_id="again-n"),
        "metadata": {"message_id": "m1"},
    }
    listener.sample([message])
    listener.sample([message])
    assert len(second.backend.journal.find(alarm_id="again-n")) == 1
    # Another pool has a copy of its own to deliver.
    notifications.AlarmUpdateEndpoint(second.endpoint, pool="p2").sample([message])
    assert len(second.backend.journal.find(alarm_id="again-n")) == 2


def test_a_message_another_consumer_journals_meanwhile_is_not_delivered_twice(
    make_conf, pg_schema_url, webhook, caplog
):
    """Both consumers hold the message (the broker handed it on around a lost
    connection): the other's row is not committed yet when this one looks, so
    this one's insert waits for it on the request id and is then refused."""
    from ceilo_notifier.delivery import request_id_for

    caplog.set_level("INFO")
    url = pg_schema_url
    empty_journal(url)
    journal.upgrade(url)
    run = JournaledRun(make_conf(alarm={"rest_notifier_timeout": 2}), url)
    other = sa.create_engine(url)
    try:
        target = webhook.url("ok")
        now = datetime.datetime.now(datetime.timezone.utc)
        row = {
            **new_row(alarm_id="raced", action=target),
            "request_id": request_id_for("rpc:raced", 0),
            "notification": json.dumps({"alarm_id": "raced"}),
            "state": "pending",
            "attempts": 0,
            "owner": "other-host/L/1",
            "action_key": run.backend.journal.action_key(target),
            "created_at": now,
            "updated_at": now,
        }
        conn = other.connect()
        held = conn.begin()
        conn.execute(journal.deliveries.insert(), [row])
        accepted: list = []
        consumer = threading.Thread(
            target=lambda: accepted.extend(
                run.endpoint.handle_many(
                    [helpers.alarm([target], alarm_id="raced")], message_ids=["rpc:raced"]
                )
            )
        )
        consumer.start()
        time.sleep(1)
        assert consumer.is_alive(), "the insert did not wait for the other consumer's"
        held.commit()
        conn.close()
        consumer.join(10)
        assert not consumer.is_alive() and accepted == []
        time.sleep(0.5)
        assert webhook.requests_for(target) == []
        messages = [r.getMessage() for r in caplog.records]
        assert any("Alarm raced: req-" in m and "journaled already" in m for m in messages)
        assert not [m for m in messages if "refused the record" in m], messages
    finally:
        other.dispose()
        run.close()
