"""Who owns a delivery, and how it changes hands, when parts of the system fail.

Each test provokes one failure for real: a host held at its pending limit, a
host clock far off, a host name that is a LIKE pattern, a takeover that
cannot resume, a replay killed halfway, two actions that differ only in a
password. The journal is PostgreSQL (and SQLite where it applies).
"""

from __future__ import annotations

import base64
import datetime
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from ceilo_notifier import events, journal, takeover
from tests import helpers
from tests.conftest import empty_journal
from tests.helpers import alarm
from tests.test_journal import new_row

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fresh(url: str) -> str:
    if not url.startswith("sqlite"):
        empty_journal(url)
    journal.upgrade(url)
    return url


def _journal_for(url: str, owner: str, rows: list[dict], *, age: float = 0.0, state="pending"):
    """Rows journaled by ``owner``, last heard of ``age`` seconds ago."""
    j = journal.Journal(url, owner)
    try:
        j.record_new(rows)
        when = journal.utcnow() - datetime.timedelta(seconds=age)
        with j.engine.begin() as conn:
            conn.execute(
                journal.deliveries.update()
                .where(journal.deliveries.c.owner == owner)
                .values(updated_at=when, state=state)
            )
            if age:
                conn.execute(
                    journal.instances.insert().values(
                        owner=owner, host=owner.split("/")[0], heartbeat_at=when
                    )
                )
    finally:
        j.close()


def _owners(url: str) -> dict[str, str]:
    reader = journal.Journal(url, "tests/reader/0")
    try:
        return {r.request_id: r.owner for r in reader.find()}
    finally:
        reader.close()


def test_a_host_held_at_its_pending_limit_while_taking_over_keeps_its_lease(
    start_notifier, topic, webhook, pg_schema_url
):
    """Host B takes over a dead host's 30 deliveries to a webhook that hangs, with
    room for 4: resuming waits for room, and B's lease must not wait with it, or
    host C takes B's deliveries while B still delivers them."""
    url = _fresh(pg_schema_url)
    hung = webhook.url("hang")
    dead = f"dead-{uuid.uuid4().hex[:6]}/L/1"
    rows = [
        {**new_row(alarm_id=f"adopted-{i}", action=hung), "action_masked": hung} for i in range(30)
    ]
    _journal_for(url, dead, rows, age=3600)
    shared = {"database": {"connection": url, "owner_lease": 5}}
    held = {"max_pending_deliveries": 4, "rest_notifier_timeout": 40}
    # Its hung attempts are not waited for when it stops.
    heir = start_notifier(
        topic, name="heir", extra=shared, alarm=held, default={"shutdown_grace_period": 1}
    )
    assert heir.wait_for_log(rf"Took over 30 unfinished deliveries of {dead}", 15), heir.log()
    watcher = start_notifier(topic, name="watcher", extra=shared)
    # The heir's lease would have run out 5 s after it blocked, and the watcher
    # looks every 1.25 s: 8 s from the watcher's start is past both.
    time.sleep(8)
    assert "Took over" not in watcher.log(), watcher.log()[-3000:]
    owners = _owners(url)
    assert all(owners[r["request_id"]].startswith(f"{heir.host}/") for r in rows), owners
    ids = [r.headers["x-openstack-request-id"] for r in webhook.requests_for(hung)]
    assert len(ids) == len(set(ids)), "a delivery was attempted by two hosts"


@pytest.fixture
def pg_journal(pg_schema_url):
    return _fresh(pg_schema_url)


def test_leases_and_order_use_the_database_clock_not_a_skewed_host_clock(pg_journal):
    """A host whose clock is an hour behind (or ahead) is neither taken for dead
    nor orders its transitions an hour away from everyone else's."""
    for skew in (-3600, 3600):
        far = journal.Journal(pg_journal, f"skewed{skew}/L/1")
        far.clock = journal.Clock(lambda s=skew: journal.utcnow() + datetime.timedelta(seconds=s))
        here = journal.Journal(pg_journal, "here/L/1")
        try:
            far.heartbeat("skewed")
            [(accepted, _)] = far.record_new([new_row(alarm_id=f"skew{skew}")])
            assert abs((accepted - journal.utcnow()).total_seconds()) < 5
            assert far.live_owners(30) >= 1
            assert f"skewed{skew}/L/1" not in here.silent_owners(30)
        finally:
            far.close()
            here.close()


def test_takeover_claims_one_owner_exactly_whatever_its_host_name_holds(db_url):
    """LIKE patterns in host names (``_``, ``%``) match only themselves."""
    _fresh(db_url)
    names = ["web_1", "webx1", "web%", "webby"]
    for name in names:
        _journal_for(db_url, f"{name}/OLD/1", [new_row(alarm_id=name)], age=3600)
    for name in ("web_1", "web%"):
        j = journal.Journal(db_url, f"{name}/NEW/{os.getpid()}")
        try:
            assert [r.alarm_id for r in j.claim_open(name, "NEW")] == [name]
        finally:
            j.close()
    live = journal.Journal(db_url, "live/L/1")
    try:
        live.heartbeat("live")
        silent = live.silent_owners(60)
        assert set(silent) >= {"webx1/OLD/1", "webby/OLD/1"}
        assert [r.alarm_id for r in live.take_over("webx1/OLD/1")] == ["webx1"]
    finally:
        live.close()


class _Refusing:
    """An engine that cannot resume anything (say its plugins failed to load)."""

    def __init__(self) -> None:
        self.offered = 0

    def resume(self, records):
        self.offered += len(records)
        raise RuntimeError("cannot resume now")


class _Taking:
    def __init__(self) -> None:
        self.resumed: list = []

    def resume(self, records):
        self.resumed.extend(records)
        return list(records)


def test_what_a_takeover_cannot_resume_is_given_back_and_claimed_again(make_conf, db_url):
    _fresh(db_url)
    dead = "gone/L/1"
    _journal_for(db_url, dead, [new_row(alarm_id=f"back-{i}") for i in range(3)], age=3600)
    conf = make_conf()
    conf.set_override("owner_lease", 5, group="database")
    heir = journal.Journal(db_url, "heir/L/1")
    try:
        heir.heartbeat("heir")
        refusing = _Refusing()
        takeover.Takeover(conf, heir, refusing).adopt()
        assert refusing.offered == 3
        assert set(_owners(db_url).values()) == {dead}, "claimed rows were not given back"
        taking = _Taking()
        takeover.Takeover(conf, heir, taking).adopt()
        assert sorted(r.alarm_id for r in taking.resumed) == ["back-0", "back-1", "back-2"]
        assert set(_owners(db_url).values()) == {"heir/L/1"}
    finally:
        heir.close()


class _Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received: list[str] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append(self.headers.get("X-OpenStack-Request-Id"))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_replay_killed_halfway_is_taken_over_by_a_live_service(
    start_notifier, topic, tmp_path, pg_journal
):
    """The replay claims failed deliveries to a receiver that does not answer yet and
    is killed: its lease runs out, a live service takes the rows over and delivers."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # accepts connections, never answers
    port = silent.getsockname()[1]
    target = f"http://127.0.0.1:{port}/replayed"
    rows = [
        {**new_row(alarm_id=f"replayed-{i}", action=target), "action_masked": target}
        for i in range(3)
    ]
    _journal_for(pg_journal, "earlier/L/1", rows, state="failed")
    sections = {
        "DEFAULT": {"host": "operator-box"},
        "alarm": {
            "rest_notifier_timeout": 60,
            "rest_notifier_allowed_networks": "127.0.0.0/8",
        },
        "database": {"connection": pg_journal, "owner_lease": 5},
    }
    config = helpers.write_config(tmp_path / "manage.conf", sections)
    replay = subprocess.Popen(
        [sys.executable, "-m", "ceilo_notifier.cmd.manage", "--config-file", str(config), "replay"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        claimed = lambda: {o.split("/")[1] for o in _owners(pg_journal).values()} == {"manage"}  # noqa: E731
        assert helpers.wait_until(claimed, 20), _owners(pg_journal)
        time.sleep(1)  # its requests are out, waiting for an answer
    finally:
        replay.send_signal(signal.SIGKILL)
        replay.wait(10)
    silent.close()
    _Receiver.received = []
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        heir = start_notifier(
            topic, name="heir", extra={"database": {"connection": pg_journal, "owner_lease": 5}}
        )
        assert heir.wait_for_log(r"Took over 3 unfinished deliveries of operator-box/manage/", 20)
        assert helpers.wait_until(lambda: len(_Receiver.received) == 3, 15)
        assert heir.wait_journaled("replayed-2", "delivered")
        assert sorted(_Receiver.received) == sorted(r["request_id"] for r in rows)
    finally:
        receiver.shutdown()
        receiver.server_close()


def test_two_actions_differing_only_in_their_password_are_two_receivers(
    start_notifier, topic, caster, webhook
):
    """With workers = 2 the journal orders deliveries across processes: it must tell
    apart what the receiver tells apart, as one process does."""
    notifier = start_notifier(topic, default={"workers": 2})
    base = webhook.url("ok")
    first, second = (base.replace("http://", f"http://alice:{pw}@") for pw in ("first", "second"))
    caster(topic).cast(alarm([first, second], alarm_id="two-passwords"))
    got = webhook.wait_for(base, 2, timeout=15)
    assert sorted(r.headers["authorization"] for r in got) == sorted(
        "Basic " + base64.b64encode(f"alice:{pw}".encode()).decode() for pw in ("first", "second")
    ), notifier.log()[-3000:]
    reader = journal.Journal(notifier.journal_url, "tests/reader/0")
    try:
        states = lambda: [r.state for r in reader.find(alarm_id="two-passwords")]  # noqa: E731
        assert helpers.wait_until(lambda: states() == ["delivered", "delivered"], 10), states()
        with reader.engine.connect() as conn:
            kept = conn.execute(sa.select(journal.deliveries.c.action)).scalars().all()
        assert not [a for a in kept if "first" in a or "second" in a], "a credential stayed at rest"
    finally:
        reader.close()


def test_a_host_cut_off_from_the_journal_sends_nothing_and_keeps_off_rows_taken_over(
    start_notifier, topic, caster, webhook, pg_journal
):
    """Host A reaches PostgreSQL through a proxy the test cuts while A waits for a
    retry. A asks the journal before the retry and, unable to, waits (fail
    closed); its lease runs out and B takes the delivery over and delivers it.
    When A can reach the journal again, it finds the row B's: it stops that
    delivery with one line and writes nothing over B's row. (Endpoint health is
    off: its Retry-After would hold the retry for the endpoint, whose probe is
    claimed in the journal, a second fail-closed path with its own log line.)"""
    from tests.tcpproxy import TcpProxy

    with TcpProxy() as proxy:
        lease = {"owner_lease": 5, "timeout": 1}
        cut_off = start_notifier(
            topic,
            name="cutoff",
            extra={
                "database": {"connection": proxy.url(pg_journal), **lease},
                "endpoint_health": {"enabled": False},
            },
            alarm={"rest_notifier_max_retries": 5},
        )
        heir = start_notifier(
            topic, name="heir", extra={"database": {"connection": pg_journal, **lease}}
        )
        url = webhook.url("retry-after/1")  # 503 + Retry-After: 1 to the first request only
        caster(topic).cast(alarm([url], alarm_id="fenced"), server=cut_off.host)
        assert webhook.wait_for(url)
        proxy.cut()
        assert cut_off.wait_for_log(r"Alarm fenced: could not ask the journal whether", 15)
        assert heir.wait_for_log(rf"Took over 1 unfinished deliveries of {cut_off.host}/", 20)
        requests = webhook.wait_for(url, 2, timeout=15)
        assert (
            len(requests) == 2 and len({r.headers["x-openstack-request-id"] for r in requests}) == 1
        )
        assert heir.wait_journaled("fenced", "delivered")
        proxy.pass_through()
        assert cut_off.wait_for_log(r"Alarm fenced: \S+ to \S+ now belongs to another process", 15)
        time.sleep(2)  # its queued events are written (as history only) meanwhile
        assert len(webhook.requests_for(url)) == 2, "the cut-off host sent a delivery it lost"
        reader = journal.Journal(pg_journal, "tests/reader/0")
        try:
            (record,) = reader.find(alarm_id="fenced")
            assert record.state == "delivered" and record.owner.startswith(f"{heir.host}/")
        finally:
            reader.close()
        assert cut_off.proc.poll() is None
        cut_off.stop()  # while its journal is reachable: its last events go in at once


def _event(row: dict, outcome: str, attempt: int) -> events.DeliveryEvent:
    return events.DeliveryEvent(
        alarm_id=row["alarm_id"],
        action=row["action_masked"],
        scheme="http",
        outcome=outcome,
        attempt=attempt,
        request_id=row["request_id"],
        next_attempt_in=1.0 if outcome == events.RETRYING else None,
    )


def test_an_older_transition_waiting_is_superseded_and_one_in_flight_is_waited_for(db_url):
    """Host A's older delivery waits for its retry: host B's newer one supersedes it
    at once, and A's own turn then says so. Once A's retry is in flight, a late
    event of its previous attempt cannot make it look waiting again."""
    _fresh(db_url)
    a, b = journal.Journal(db_url, "a/L/1"), journal.Journal(db_url, "b/L/1")
    try:
        action = "http://u:pw@127.0.0.1:1/x"
        waiting, in_flight = new_row("waits", action), new_row("flies", action)
        a.record_new([waiting, in_flight])
        a.record_events(
            [_event(waiting, events.RETRYING, 1), _event(in_flight, events.RETRYING, 1)]
        )
        assert a.turn(in_flight["request_id"], attempt=2) == journal.GO
        a.record_events([_event(in_flight, events.RETRYING, 1)])  # attempt 1's, written late
        newer_waiting, newer_flying = new_row("waits", action), new_row("flies", action)
        b.record_new([newer_waiting, newer_flying])
        assert b.turn(newer_waiting["request_id"]) == journal.GO
        assert a.turn(waiting["request_id"], attempt=2) == journal.SUPERSEDED
        (superseded,) = a.get([waiting["request_id"]])
        assert superseded.state == events.SUPERSEDED and "pw" not in superseded.action
        assert b.turn(newer_flying["request_id"]) == journal.WAIT
        a.record_events([_event(in_flight, events.DELIVERED, 2)])
        assert b.turn(newer_flying["request_id"]) == journal.GO
    finally:
        a.close()
        b.close()


def test_a_new_start_leaves_a_running_process_of_its_host_its_rows_while_its_lease_holds(db_url):
    """A replay, or an earlier launch still in its shutdown grace, runs on this
    machine under the same host name: a new start does not take its rows while
    its lease is fresh; once its lease ran out (or its process is gone), it does."""
    _fresh(db_url)
    running = f"host-a/manage/{os.getppid()}"  # a process that runs
    row = new_row("kept")
    _journal_for(db_url, running, [row])
    j = journal.Journal(db_url, running)
    j.heartbeat("host-a")
    j.close()
    starting = journal.Journal(db_url, f"host-a/NEW/{os.getpid()}")
    try:
        assert starting.claim_open("host-a", "NEW", lease=30) == []
        with starting.engine.begin() as conn:
            conn.execute(
                journal.instances.update()
                .where(journal.instances.c.owner == running)
                .values(heartbeat_at=journal.utcnow() - datetime.timedelta(seconds=60))
            )
        claimed = starting.claim_open("host-a", "NEW", lease=30)
        assert [r.request_id for r in claimed] == [row["request_id"]]
    finally:
        starting.close()
