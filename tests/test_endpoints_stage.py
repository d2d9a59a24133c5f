"""The endpoint stage's own rules, driven with the outcomes an attempt reports,
and its shared state in real SQLite and PostgreSQL journals.

The end-to-end behaviour (real receivers, services and casts) is in
test_endpoint_health; these are the cases a real receiver cannot stage on
cue: a probe refused while another attempt is in flight, a flood of
endpoints, two processes racing for one probe, an operator's pause racing a
process's own judgement.
"""

from __future__ import annotations

import asyncio
import datetime

import pytest

from ceilo_notifier import attempt, endpoints, events, journal
from ceilo_notifier.journal.endpoints import CLOSED, HALF_OPEN, OPEN, PAUSED
from ceilo_notifier.notification import AlarmNotification
from ceilo_notifier.notifiers import rest
from tests.test_journal import new_row


class _Plugin(rest.RestAlarmNotifier):
    """The REST plugin's endpoint rule; nothing is sent from these tests."""

    def __init__(self) -> None:
        pass


def _delivery(url: str, alarm_id: str = "a"):
    from urllib import parse

    from ceilo_notifier.delivery import Delivery

    notification = AlarmNotification(alarm_id=alarm_id, current="alarm")
    return Delivery(notification, url, parse.urlsplit(url), _Plugin())


@pytest.fixture
def stage(make_conf):
    loop = asyncio.new_event_loop()
    made = []

    def make(**health):
        conf = make_conf(health={"failure_threshold": 2, "open_seconds": 0.1, **health})
        made.append(endpoints.EndpointHealth(conf, loop))
        return made[-1]

    yield make, loop
    loop.close()


OK = attempt.Outcome(events.DELIVERED, 200, health=attempt.ANSWERED)
DOWN = attempt.Outcome(events.RETRYING, 502, "HTTP 502", 1.0, attempt.FAILED)
REFUSED = attempt.Outcome(events.RETRYING, 429, "HTTP 429", 1.0, attempt.OVERLOADED)


def test_a_probe_refused_while_another_attempt_is_in_flight_is_settled(stage):
    """A probe answered 429 (not a failure while others are in flight) still ends its
    probe: the endpoint opens again and a later probe can close it."""
    make, loop = stage
    health = make()
    run = loop.run_until_complete
    url = "http://hooks.example:8080/x"
    slow = run(health.admit(_delivery(url, "slow")))  # in flight throughout
    for _ in range(2):
        health.done(run(health.admit(_delivery(url))), DOWN)
    circuit = health._circuits["http://hooks.example:8080"]
    assert circuit.state == OPEN
    run(asyncio.sleep(0.15))
    probe = run(health.admit(_delivery(url)))
    assert isinstance(probe, endpoints.Ticket) and probe.probe
    assert isinstance(run(health.admit(_delivery(url))), endpoints.Hold)  # only one probe
    health.done(probe, REFUSED)
    assert circuit.state == OPEN and not circuit.probe
    run(asyncio.sleep(0.25))  # twice as long
    probe = run(health.admit(_delivery(url)))
    assert probe.probe
    health.done(probe, OK)
    assert circuit.state == CLOSED
    health.done(slow, OK)
    assert isinstance(run(health.admit(_delivery(url))), endpoints.Ticket)


def test_retry_after_quiets_an_endpoint_only_from_a_503_of_a_second_or_more(stage):
    make, loop = stage
    health = make(failure_threshold=5)
    run = loop.run_until_complete
    endpoint = "http://slack.example:443"
    url = f"{endpoint}/hook"
    limited = attempt.Outcome(events.RETRYING, 429, "429", 30.0, attempt.OVERLOADED, 30.0)
    health.done(run(health.admit(_delivery(url))), limited)
    assert health._circuits[endpoint].state == CLOSED  # one webhook rate-limited
    now = attempt.Outcome(events.RETRYING, 503, "503", 0.0, attempt.FAILED, 0.0)
    health.done(run(health.admit(_delivery(url))), now)
    assert health._circuits[endpoint].state == CLOSED  # "Retry-After: 0" is a failure
    later = attempt.Outcome(events.RETRYING, 503, "503", 5.0, attempt.FAILED, 5.0)
    health.done(run(health.admit(_delivery(url))), later)
    circuit = health._circuits[endpoint]
    assert circuit.state == OPEN and 4.5 < circuit.until - health._now() <= 5


def test_refusals_set_the_limit_near_what_the_receiver_takes_and_it_grows_back(stage):
    make, loop = stage
    health = make(failure_threshold=100)
    run = loop.run_until_complete
    url = "http://narrow.example/x"
    tickets = [run(health.admit(_delivery(url, f"a{i}"))) for i in range(40)]
    for ticket in tickets[4:]:
        health.done(ticket, REFUSED)
    circuit = health._circuits["http://narrow.example:80"]
    assert circuit.limit == 4.0  # four fifths of the fifth, however many refusals
    assert circuit.state == CLOSED  # refusals while several were in flight: not "down"
    for ticket in tickets[:4]:
        health.done(ticket, OK)
    assert 4.0 < circuit.limit < 5.0


def test_memory_stays_bounded_whatever_endpoints_tenants_open(stage, monkeypatch):
    monkeypatch.setattr(endpoints, "MAX_CIRCUITS", 50)
    make, loop = stage
    health = make(open_seconds=3600)
    run = loop.run_until_complete
    for i in range(200):
        url = f"http://n{i}.evil.example/x"
        for _ in range(2):
            health.done(run(health.admit(_delivery(url))), DOWN)
    assert len(health._circuits) <= 50
    assert health.counts()[OPEN] == len(health._circuits)


def _row(endpoint: str, state: str, when: datetime.datetime, by: str = "host/L/1"):
    return journal.EndpointRow(
        endpoint=endpoint,
        state=state,
        failures=0,
        since=when,
        until=when + datetime.timedelta(seconds=30),
        open_for=30.0,
        reason="test",
        changed_at=when,
        changed_by=by,
    )


def test_only_an_operator_ends_a_pause_and_the_newest_change_wins(db_url):
    journal.upgrade(db_url)
    j = journal.Journal(db_url, "host-a/L1/1")
    now = journal.utcnow()
    later = now + datetime.timedelta(seconds=1)
    e = "http://maint.example:80"
    assert j.save_endpoint(_row(e, PAUSED, now, "manage"), operator=True)
    assert not j.save_endpoint(_row(e, OPEN, later))  # a process's judgement
    assert [r.state for r in j.endpoint_list()] == [PAUSED]
    assert j.save_endpoint(_row(e, CLOSED, later, "manage"), operator=True)
    assert not j.save_endpoint(_row(e, OPEN, now))  # older than what is there
    assert [r.state for r in j.endpoint_list()] == [CLOSED]


def test_one_process_wins_the_probe_and_the_loser_learns_the_row(db_url):
    journal.upgrade(db_url)
    one = journal.Journal(db_url, "host-a/L1/1")
    two = journal.Journal(db_url, "host-b/L1/1")
    e = "http://down.example:80"
    past = journal.utcnow() - datetime.timedelta(seconds=60)
    one.save_endpoint(_row(e, OPEN, past))  # until 30 s ago: a probe is due
    won, row = one.claim_probe(e, stale=120)
    assert won and row.state == HALF_OPEN and row.changed_by == "host-a/L1/1"
    won, row = two.claim_probe(e, stale=120)
    assert not won and row.state == HALF_OPEN
    # An opening never written: the first claimant writes it and probes.
    won, row = two.claim_probe("http://unwritten.example:80", stale=120)
    assert won and row.state == HALF_OPEN


def test_held_rows_are_released_for_their_endpoint_only(db_url):
    journal.upgrade(db_url)
    j = journal.Journal(db_url, "host-a/L1/1")
    held, other = {**new_row(), "endpoint": "http://a:80"}, {**new_row(), "endpoint": "http://b:80"}
    j.record_new([held, other])
    far = journal.utcnow() + datetime.timedelta(hours=1)
    j.park([(held["request_id"], far), (other["request_id"], far)])
    assert j.waiting_for(["http://a:80", "http://b:80"]) == {"http://a:80": 1, "http://b:80": 1}
    assert j.release_held("http://a:80") == 1
    due = j.parked_due(journal.utcnow() + datetime.timedelta(seconds=1), 10)
    assert [r.request_id for r in due] == [held["request_id"]]


@pytest.mark.parametrize(
    ("action", "endpoint"),
    [
        ("http://hooks.example/p?q=1", "http://hooks.example:80"),
        ("https://u:secret@HOOKS.example.:8443/p", "https://hooks.example:8443"),
        ("trust+https://trust-id:pw@hooks.example/p", "https://hooks.example:443"),
        ("http://[::1]:8080/p", "http://[::1]:8080"),
        ("https://bücher.example/p", "https://xn--bcher-kva.example:443"),
    ],
)
def test_an_endpoint_is_the_scheme_host_and_port_connected_to(action, endpoint):
    """One endpoint whatever the spelling, never a credential in its name."""
    from urllib import parse

    assert rest.http_endpoint(parse.urlsplit(action)) == endpoint


def test_a_plugin_whose_endpoint_hook_raises_is_never_held():
    from urllib import parse

    from ceilo_notifier.delivery import endpoint_of

    class Broken(_Plugin):
        def endpoint(self, action):
            raise SystemError("hostile plugin")

    assert endpoint_of(Broken(), parse.urlsplit("http://h/p")) is None
    assert endpoint_of(_Plugin(), parse.urlsplit("log://")) is None
