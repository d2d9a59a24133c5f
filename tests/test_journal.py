"""The journal on real SQLite and PostgreSQL, ordering, supersession and signing."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import time
import uuid

import pytest
import sqlalchemy as sa

from ceilo_notifier import engine, events, journal
from ceilo_notifier.consumers import rpc as rpc_consumer
from ceilo_notifier.dispatchers import database
from tests import helpers


def new_row(alarm_id="a1", action="http://u:pw@127.0.0.1:1/x"):
    return {
        "request_id": f"req-{uuid.uuid4()}",
        "alarm_id": alarm_id,
        "action": action,
        "action_masked": "http://u:***@127.0.0.1:1/x",
        "scheme": "http",
        "notification": {"alarm_id": alarm_id, "current": "alarm"},
    }


def test_schema_upgrade_is_idempotent_and_managed_by_alembic(db_url):
    journal.upgrade(db_url)
    journal.upgrade(db_url)
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        version = sa.text(f"SELECT version_num FROM {journal.VERSION_TABLE}")
        assert conn.execute(version).scalar() == "0005"
        names = set(sa.inspect(conn).get_table_names())
    assert {"deliveries", "delivery_events"} <= names
    assert "alembic_version" not in names


def test_the_journal_shares_a_database_with_aodh_and_its_alembic_table(db_url):
    """An aodh.conf as it is points [database] at aodh's database, where aodh's own
    migrations keep their revision in alembic_version: the journal leaves it be."""
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('367aadf5485f')"))
    journal.upgrade(db_url)
    journal.upgrade(db_url)
    with engine.connect() as conn:
        aodh = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        ours = conn.execute(sa.text(f"SELECT version_num FROM {journal.VERSION_TABLE}")).scalar()
    assert (aodh, ours) == ("367aadf5485f", "0005")


def test_a_journal_made_with_the_old_version_table_is_adopted(db_url):
    """Journals made before the journal's own version table kept its revision in
    alembic_version: the next upgrade moves it, without re-creating any table."""
    journal.upgrade(db_url)
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {journal.VERSION_TABLE}"))
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('0001')"))
        conn.execute(sa.text("DROP TABLE instances"))  # what 0002 adds
        conn.execute(sa.text("DROP INDEX ix_deliveries_parked_until"))  # what 0003 adds
        conn.execute(sa.text("ALTER TABLE deliveries DROP COLUMN parked_until"))
        conn.execute(sa.text("DROP INDEX ix_deliveries_alarm_key"))  # what 0004 adds
        conn.execute(sa.text("ALTER TABLE deliveries DROP COLUMN action_key"))
        conn.execute(sa.text("DROP TABLE journal_keys"))
        conn.execute(sa.text("DROP TABLE endpoints"))  # what 0005 adds
        conn.execute(sa.text("DROP INDEX ix_deliveries_endpoint"))
        conn.execute(sa.text("ALTER TABLE deliveries DROP COLUMN endpoint"))
    journal.upgrade(db_url)
    with engine.connect() as conn:
        ours = conn.execute(sa.text(f"SELECT version_num FROM {journal.VERSION_TABLE}")).scalar()
        names = set(sa.inspect(conn).get_table_names())
    assert ours == "0005" and "instances" in names and "alembic_version" not in names


def test_deliveries_move_through_their_events(db_url):
    journal.upgrade(db_url)
    j = journal.Journal(db_url, "host-a/L1/1")
    row = new_row()
    j.record_new([row])
    (rec,) = j.find(alarm_id="a1")
    assert rec.state == journal.PENDING and rec.attempts == 0
    rid = row["request_id"]
    retry = events.DeliveryEvent(
        "a1",
        row["action_masked"],
        "http",
        events.RETRYING,
        1,
        rid,
        status_code=503,
        error="HTTP 503",
        next_attempt_in=30,
    )
    j.record_events([retry])
    (rec,) = j.find(states=[events.RETRYING])
    assert rec.attempts == 1 and rec.status_code == 503
    assert 25 < (rec.next_attempt_at - journal.utcnow()).total_seconds() <= 30
    done = events.DeliveryEvent(
        "a1", row["action_masked"], "http", events.FAILED, 2, rid, status_code=500, error="HTTP 500"
    )
    j.record_events([done])
    (rec,) = j.find(states=[events.FAILED])
    assert rec.attempts == 2 and rec.error == "HTTP 500"
    assert [e["outcome"] for e in j.events_of(rid)] == ["retrying", "failed"]
    assert j.backlog()[0] == 0
    j.close()


def test_open_deliveries_are_claimed_once_by_a_later_launch_of_the_same_host(db_url):
    journal.upgrade(db_url)
    old = journal.Journal(db_url, f"host-a/L1/{os.getppid()}")  # a live process
    mine, other_host = new_row(), new_row()
    old.record_new([mine])
    journal.Journal(db_url, "host-b/L1/7").record_new([other_host])
    sibling = journal.Journal(db_url, "host-a/L2/200")
    assert sibling.claim_open("host-a", "L1") == []  # same launch: a live sibling's work
    first = journal.Journal(db_url, f"host-a/L2/{os.getpid()}")  # alive: this process
    second = journal.Journal(db_url, "host-a/L2/202")
    claimed = first.claim_open("host-a", "L2")
    assert [r.request_id for r in claimed] == [mine["request_id"]]
    assert claimed[0].action == "http://u:pw@127.0.0.1:1/x"
    assert second.claim_open("host-a", "L2") == []


def test_a_dead_workers_deliveries_are_claimed_by_its_replacement(db_url):
    journal.upgrade(db_url)
    done = subprocess.run(["true"], check=True)  # a pid that no longer runs
    dead = subprocess.Popen(["true"])
    dead.wait()
    del done
    row = new_row()
    journal.Journal(db_url, f"host-a/L1/{dead.pid}").record_new([row])
    replacement = journal.Journal(db_url, "host-a/L1/999999")
    assert [r.request_id for r in replacement.claim_open("host-a", "L1")] == [row["request_id"]]


def test_purge_removes_only_old_finished_deliveries(db_url):
    journal.upgrade(db_url)
    j = journal.Journal(db_url, "h/L/1")
    finished, still_open = new_row(), new_row()
    j.record_new([finished, still_open])
    ev = events.DeliveryEvent(
        "a1", "x", "http", events.DELIVERED, 1, finished["request_id"], status_code=200
    )
    j.record_events([ev])
    assert j.purge(journal.utcnow() - datetime.timedelta(days=1)) == 0
    assert j.purge(journal.utcnow() + datetime.timedelta(seconds=1)) == 1
    assert [r.request_id for r in j.find()] == [still_open["request_id"]]
    assert j.events_of(finished["request_id"]) == []


class JournaledRun:
    """The real engine, plugins and database dispatcher, in this process."""

    def __init__(self, conf, url):
        conf.set_override("connection", url, group="database")
        journal.upgrade(url)
        self.backend = database.DatabaseBackend(conf)
        self.backend.start("test-host/L/1")
        self.events: list[events.DeliveryEvent] = []
        self.engine = engine.Engine(
            conf,
            sinks=[self.events.append, lambda e: self.backend.dump(20, e)],
            journal=self.backend.journal,
        )
        self.endpoint = rpc_consumer.NotifierEndpoint(conf, self.engine)

    def cast(self, url, current, alarm_id):
        return self.endpoint.handle(
            {
                "alarm_id": alarm_id,
                "actions": [url],
                "previous": "x",
                "current": current,
                "reason": current,
            }
        )

    def close(self):
        self.engine.stop()
        self.backend.flush()
        self.backend.stop()


@pytest.fixture
def journaled(make_conf, tmp_path):
    runs = []

    def make(health: dict | None = None, **alarm_opts):
        alarm_opts.setdefault("rest_notifier_timeout", 2)
        conf = make_conf(alarm=alarm_opts, health=health)
        url = f"sqlite:///{tmp_path}/j{len(runs)}.sqlite"
        run = JournaledRun(conf, url)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.close()


def test_a_waiting_retry_is_superseded_by_a_newer_transition(journaled, webhook):
    """Per-delivery retries (endpoint health off: its Retry-After would hold the
    newer transition too; test_endpoint_health covers that)."""
    run = journaled(rest_notifier_max_retries=3, health={"enabled": False})
    url = webhook.url("retry-after/3")  # first request: 503 + Retry-After 3, then 200
    (first,) = run.cast(url, "alarm", "flip")
    webhook.wait_for(url, 1)
    assert first.outcome is None
    (second,) = run.cast(url, "ok", "flip")
    assert second.wait(5)
    assert second.outcome == events.DELIVERED
    # The first waits in the journal, not in memory (its retry is 3 s away): it is
    # superseded there, at once.
    expected = {first.request_id: "superseded", second.request_id: "delivered"}

    def states():
        run.engine.announcer.flush()
        run.backend.flush()
        return {r.request_id: r.state for r in run.backend.journal.find(alarm_id="flip")}

    assert helpers.wait_until(lambda: states() == expected, 2), states()
    time.sleep(3)
    bodies = [r.json()["current"] for r in webhook.requests_for(url)]
    assert bodies == ["alarm", "ok"]  # the stale "alarm" was never sent again


def test_deliveries_of_one_alarm_to_one_action_keep_their_order(journaled, webhook):
    run = journaled()
    url = webhook.url("slow/0.2")
    states = ["alarm", "ok", "alarm", "ok"]
    deliveries = [run.cast(url, s, "ordered")[0] for s in states]
    for d in deliveries:
        assert d.wait(10)
    received = [r.json()["current"] for r in webhook.requests_for(url)]
    assert received == states
    assert all(d.outcome == events.DELIVERED for d in deliveries)
    arrivals = [r.received for r in webhook.requests_for(url)]
    assert all(b - a >= 0.19 for a, b in zip(arrivals, arrivals[1:], strict=False))


def test_different_alarms_to_one_action_are_not_serialised(journaled, webhook):
    run = journaled()
    url = webhook.url("slow/0.5")
    deliveries = [run.cast(url, "alarm", f"parallel-{i}")[0] for i in range(6)]
    for d in deliveries:
        assert d.wait(10)
    arrivals = sorted(r.received for r in webhook.requests_for(url))
    assert arrivals[-1] - arrivals[0] < 1.5  # one after the other: 2.5 s or more


def test_signed_requests_verify_with_standardwebhooks_for_every_key(journaled, webhook):
    standardwebhooks = pytest.importorskip("standardwebhooks")
    import base64

    old, new = (f"whsec_{base64.b64encode(os.urandom(24)).decode()}" for _ in range(2))
    run = journaled(rest_notifier_signing_keys=[old, new])
    url = webhook.url("flaky/1/503")
    (d,) = run.cast(url, "alarm", "signed")
    assert d.wait(10) and d.outcome == events.DELIVERED
    first, second = webhook.requests_for(url)
    for request in (first, second):
        assert request.headers["webhook-id"] == d.request_id
        for secret in (old, new):
            payload = standardwebhooks.Webhook(secret).verify(request.body, request.headers)
            assert payload["alarm_id"] == "signed"
    assert len(first.headers["webhook-signature"].split(" ")) == 2
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        wrong = f"whsec_{base64.b64encode(os.urandom(24)).decode()}"
        standardwebhooks.Webhook(wrong).verify(first.body, first.headers)
    tampered = json.dumps({**first.json(), "current": "ok"}).encode()
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(old).verify(tampered, first.headers)


def test_concurrent_writers_share_commits_and_all_rows_land(db_url):
    import threading

    journal.upgrade(db_url)
    j = journal.Journal(db_url, "h/L/1")
    commits = []
    original = j._insert

    def counting(values):
        commits.append(len(values))
        original(values)

    j._group_commit._commit = counting
    rows = [new_row(alarm_id=f"gc-{i}") for i in range(40)]
    threads = [threading.Thread(target=j.record_new, args=([row],)) for row in rows]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sum(commits) == 40 and len(j.find(limit=100)) == 40
    assert len(commits) < 40  # callers that arrived together shared a transaction


def test_a_failed_group_commit_fails_every_caller_in_it(tmp_path):
    url = f"sqlite:///{tmp_path}/j.sqlite"
    journal.upgrade(url)
    j = journal.Journal(url, "h/L/1")
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("DROP TABLE deliveries"))
    with pytest.raises(sa.exc.OperationalError):
        j.record_new([new_row()])


def test_a_journaled_delivery_whose_plugin_is_gone_is_dropped_not_resumed_forever(
    journaled, caplog
):
    run = journaled()
    j = run.backend.journal
    row = {**new_row(alarm_id="orphan", action="gone://somewhere"), "action_masked": "gone://"}
    journal.Journal(j.url, "test-host/OLD/1").record_new([row])
    assert run.engine.resume(j.claim_open("test-host", "L")) == []
    run.engine.announcer.flush()
    run.backend.flush()
    (rec,) = j.find(alarm_id="orphan")
    assert rec.state == "dropped" and "unknown scheme 'gone'" in rec.error
    assert "Alarm orphan: action gone://somewhere dropped: unknown scheme" in caplog.text
    assert j.claim_open("test-host", "NEXT") == []


def test_rows_journaled_before_action_keys_get_theirs_and_keep_their_order(db_url):
    """Upgrading a journal with open rows: each gets the key of the action it
    holds, so a newer transition after the upgrade still supersedes it."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "ceilo_notifier:migrations")
    engine = journal.make_engine(db_url)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0003")
    action = "http://u:pw@127.0.0.1:1/x"
    now = datetime.datetime.now(datetime.timezone.utc)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO deliveries (request_id, alarm_id, action, action_masked, scheme,"
                " notification, state, attempts, owner, created_at, updated_at)"
                " VALUES ('req-old', 'upgraded', :action, 'http://u:***@127.0.0.1:1/x', 'http',"
                " '{}', 'retrying', 1, 'h/L/1', :now, :now)"
            ),
            {"action": action, "now": now},
        )
        # A retry the previous release left open, older than a delivered transition.
        for rid, state, action_value, at in (
            ("req-stale", "retrying", action, now - datetime.timedelta(seconds=5)),
            ("req-done", "delivered", "http://u:***@127.0.0.1:1/x", now),
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO deliveries (request_id, alarm_id, action, action_masked,"
                    " scheme, notification, state, attempts, owner, created_at, updated_at)"
                    " VALUES (:rid, 'stale', :action, 'http://u:***@127.0.0.1:1/x', 'http',"
                    " '{}', :state, 1, 'h/L/1', :at, :at)"
                ),
                {"rid": rid, "action": action_value, "state": state, "at": at},
            )
    engine.dispose()
    journal.upgrade(db_url)
    j = journal.Journal(db_url, "h/L2/1")
    try:
        (old,) = j.get(["req-old"])
        assert old.action_key == j.action_key(action)
        j.record_new([new_row(alarm_id="upgraded", action=action)])
        assert j.newest([old])[old.key] > old.created_at
        (stale,) = j.get(["req-stale"])
        assert stale.state == "superseded" and "pw" not in stale.action
        # A row a host of the previous release journals after the upgrade has no
        # key: whoever claims it keys it before ordering it.
        with j.engine.begin() as conn:
            conn.execute(
                journal.deliveries.insert().values(
                    **{**new_row(alarm_id="unkeyed", action=action), "notification": "{}"},
                    state="pending",
                    attempts=0,
                    owner="old-release/L/1",
                    created_at=now,
                    updated_at=now,
                )
            )
        (claimed,) = j.take_over("old-release/L/1")
        assert claimed.action_key == j.action_key(action)
        assert j.get([claimed.request_id])[0].action_key == claimed.action_key
    finally:
        j.close()
