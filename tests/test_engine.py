"""The delivery engine as a whole: event sinks off the delivery path, bounded intake."""

from __future__ import annotations

import datetime
import threading
import time

from ceilo_notifier import events, notifiers
from tests import helpers


def test_a_slow_event_sink_delays_no_delivery(run, webhook):
    def slow_sink(event):
        time.sleep(0.3)

    r = run()
    r.on_event = slow_sink
    urls = [webhook.url("ok") for _ in range(20)]
    start = time.monotonic()
    for url in urls:
        r.endpoint.handle(helpers.alarm([url]))
    # 20 events at 0.3 s each would take 6 s if sinks ran on the delivery path.
    assert helpers.wait_until(lambda: all(webhook.requests_for(u) for u in urls), 3)
    assert time.monotonic() - start < 3
    assert r.engine.wait_idle(30)


def test_a_sink_that_calls_back_into_the_engine_does_not_deadlock(run, webhook):
    second = webhook.url("ok")
    r = run()

    def sink(event):
        if event.alarm_id == "first" and event.outcome == events.DELIVERED:
            r.endpoint.handle(helpers.alarm([second], alarm_id="second"))

    r.on_event = sink
    (d,) = r.deliver([webhook.url("ok")], alarm_id="first")
    assert d.outcome == events.DELIVERED
    assert webhook.wait_for(second, timeout=5)
    assert r.engine.wait_idle(10)


def test_intake_slows_down_instead_of_holding_more_than_max_pending(run, webhook):
    r = run(max_pending_deliveries=4, per_host_concurrency=256)
    urls = [webhook.url("slow/1") for _ in range(12)]
    took = []

    def consumer():
        start = time.monotonic()
        for url in urls:
            r.endpoint.handle(helpers.alarm([url]))
        took.append(time.monotonic() - start)

    thread = threading.Thread(target=consumer)
    thread.start()
    time.sleep(0.5)
    # Only four are held at once: the consumer is still waiting for room.
    assert thread.is_alive()
    assert sum(bool(webhook.requests_for(u)) for u in urls) <= 4
    thread.join(15)
    assert took and took[0] >= 1.5
    assert r.engine.wait_idle(10)
    assert all(len(webhook.requests_for(u)) == 1 for u in urls)


def test_hosts_waiting_for_a_slot_are_served_in_turn(run, webhook):
    """One host with a long line does not starve another once the pool is full."""
    busy = helpers.Webhook(host="127.0.0.2")
    try:
        r = run(dispatch_pool_size=2, per_host_concurrency=2)
        crowd = [busy.url("slow/0.5") for _ in range(10)]
        for url in crowd:
            r.endpoint.handle(helpers.alarm([url]))
        time.sleep(0.1)
        lone = webhook.url("ok")
        start = time.monotonic()
        r.endpoint.handle(helpers.alarm([lone]))
        assert webhook.wait_for(lone, timeout=10)
        # Behind the crowd it would wait 2.5 s; served in turn, one slot frees in 0.5 s.
        assert time.monotonic() - start < 1.5
        assert r.engine.wait_idle(15)
    finally:
        busy.close()


class _Slow(notifiers.AlarmNotifier):
    """A blocking plugin whose attempts take a second each."""

    def notify(self, action, notification):
        time.sleep(1.0)
        return None


def test_a_blocking_attempt_has_its_whole_deadline_however_long_it_waited_for_a_thread(run):
    """One plugin thread, a 2.5 s deadline and 1 s attempts: the third waits 2 s
    for the thread and is still not cut short, since its deadline counts from when
    it starts; the fourth, which would wait longer than a deadline, is retried."""
    r = run(plugin_pool_size=1, plugin_timeout=2.5)
    r.engine.plugins["slow"] = _Slow(r.engine.conf)
    deliveries = r.deliver([f"slow://host-{i}/" for i in range(4)], timeout=30)
    assert [d.outcome for d in deliveries] == [events.DELIVERED] * 4
    assert [r.outcomes(d) for d in deliveries[:3]] == [[events.DELIVERED]] * 3
    assert r.outcomes(deliveries[3]) == [events.RETRYING, events.DELIVERED]
    (busy,) = [e for e in r.events if e.outcome == events.RETRYING]
    assert "all 1 plugin threads busy for 2.5 s" in busy.error


class _Receivers(notifiers.AlarmNotifier):
    """Async receivers that answer after a while; counts attempts in flight per domain."""

    def __init__(self, conf, seconds=0.5):
        super().__init__(conf)
        self.seconds = seconds
        self.in_flight: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.started: dict[str, float] = {}

    async def notify_async(self, action, notification):
        import asyncio

        domain = ".".join(action.hostname.split(".")[-2:])
        self.started.setdefault(action.hostname, time.monotonic())
        self.in_flight[domain] = self.in_flight.get(domain, 0) + 1
        self.most[domain] = max(self.most.get(domain, 0), self.in_flight[domain])
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.in_flight[domain] -= 1
        return 200


def test_wildcard_subdomains_of_one_tenant_take_one_share(run):
    """200 names under one registrable domain, on as many ports, hold no more slots than
    one host would, and another tenant's alarm is served at once behind them."""
    r = run(dispatch_pool_size=16, per_host_concurrency=4)
    receivers = r.engine.plugins["fair"] = _Receivers(r.engine.conf)
    for n in range(2):  # max_actions is 100 an alarm
        crowd = [f"fair://a{n}-{i}.evil.example:{1000 + i}/hook" for i in range(100)]
        r.endpoint.handle(helpers.alarm(crowd, alarm_id=f"flood-{n}"))
    assert helpers.wait_until(lambda: receivers.most.get("evil.example") == 4, 5)
    start = time.monotonic()
    (lone,) = r.deliver(["fair://hooks.other.example/hook"], alarm_id="lone")
    assert lone.outcome == events.DELIVERED
    # Keyed on the name as written, 200 names would take all 16 slots for 0.5 s a round.
    assert receivers.started["hooks.other.example"] - start < 0.4
    assert receivers.most["evil.example"] == 4
    assert sum(receivers.in_flight.values()) <= 4  # the other 12 slots stayed free


# Per-delivery retries, as before endpoint health (or with it turned off).
NO_HEALTH = {"enabled": False}


class _StalledJournal:
    """A journal whose turn query never returns (a database that stalls)."""

    owner = "stalled"

    def __init__(self) -> None:
        from ceilo_notifier.journal import Clock

        self.clock = Clock()
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def record_new(self, rows):
        now = datetime.datetime.now(datetime.timezone.utc)
        return [(now, f"key-{i}") for i in range(len(rows))]

    def endpoint_states(self, changed_after=None):
        return []

    def turn(self, request_id, attempt=1):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            self.release.wait(20)
            return "go"
        finally:
            with self.lock:
                self.running -= 1


def test_a_stalled_journal_holds_its_own_threads_only_and_nothing_goes_until_it_answers(
    make_conf, webhook
):
    """Fail closed: while the journal cannot say whose turn it is, a delivery waits
    (a stale send is worse than a late one); its queries hold only their own threads."""
    from ceilo_notifier import engine
    from ceilo_notifier.consumers import rpc as rpc_consumer

    conf = make_conf(alarm={"journal_pool_size": 2}, workers=2)  # the journal is shared
    conf.set_override("timeout", 1.0, group="database")
    journal = _StalledJournal()
    the_engine = engine.Engine(conf, journal=journal)
    try:
        urls = [webhook.url("ok") for _ in range(6)]
        deliveries = rpc_consumer.NotifierEndpoint(conf, the_engine).handle(
            helpers.alarm(urls, alarm_id="stalled-journal")
        )
        time.sleep(2.5)  # past the 1 s deadline of a query, twice
        assert [webhook.requests_for(u) for u in urls] == [[]] * 6
        assert journal.most == 2, "the journal queries took more than their threads"
        journal.release.set()
        for d in deliveries:
            assert d.wait(15), d.masked_action
        assert [d.outcome for d in deliveries] == [events.DELIVERED] * 6
        assert the_engine.loop._default_executor is None, "the loop's default executor was used"
    finally:
        journal.release.set()
        the_engine.stop()


def test_retries_waiting_in_memory_hold_no_intake_and_have_a_bound_of_their_own(run, webhook):
    """Without a journal: a webhook answering 503 + Retry-After: 3000 to every request.
    Its retries do not hold max_pending_deliveries (other alarms still go at once);
    as many again wait in memory, the rest fail instead of waiting; and the wait is
    capped at rest_notifier_retry_after_max. Per-delivery retries: endpoint health,
    which would hold the whole endpoint at the first Retry-After, is off."""
    r = run(max_pending_deliveries=4, rest_notifier_retry_after_max=30, health=NO_HEALTH)
    busy = [webhook.url("busy/3000") for _ in range(12)]
    for url in busy:
        r.endpoint.handle(helpers.alarm([url]))
    assert helpers.wait_until(lambda: all(webhook.requests_for(u) for u in busy), 5)
    start = time.monotonic()
    (healthy,) = r.deliver([webhook.url("ok")], timeout=5)
    assert healthy.outcome == events.DELIVERED and time.monotonic() - start < 2
    retrying = [e for e in r.events if e.outcome == events.RETRYING]
    failed = [e for e in r.events if e.outcome == events.FAILED]
    assert len(retrying) == 4 and len(failed) == 8, [e.error for e in r.events]
    assert all(e.next_attempt_in == 30 for e in retrying)  # 3000 asked, 30 honoured
    assert all("already wait in memory" in e.error for e in failed)


def test_idle_keep_alive_connections_never_outnumber_the_pool(run):
    """Webhooks on ten hosts answering at once: keep-alive keeps at most
    dispatch_pool_size connections open, not one per host for keepalive_timeout."""
    hooks = [helpers.Webhook() for _ in range(10)]  # a port each: a connection each
    try:
        r = run(dispatch_pool_size=4)
        deliveries = r.deliver([h.url("ok") for h in hooks])
        assert all(d.outcome == events.DELIVERED for d in deliveries)
        connector = r.engine.plugins["http"]._client.connector
        idle = sum(len(conns) for conns in connector._conns.values())
        assert 0 < idle <= 4
    finally:
        for hook in hooks:
            hook.close()


def test_a_retry_after_of_any_size_or_shape_waits_at_most_the_cap():
    from ceilo_notifier import retry
    from ceilo_notifier.notifiers import rest

    policy = retry.RetryPolicy(
        max_retries=3, backoff=0.0, backoff_max=0.0, max_age=3600, retry_after_max=300
    )
    for header, wait in [
        ("3000", 300),
        ("9" * 400, 300),  # a float of infinity
        ("Fri, 31 Dec 9999 23:59:59 GMT", 300),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0),  # long past: at once
        ("-5", 0),  # not delta-seconds: ignored
        ("1e12", 0),
        ("²", 0),  # a digit to str.isdigit, not to float
    ]:
        assert policy.next_delay(1, 0.0, rest.parse_retry_after(header)) == wait, header


def test_a_retry_read_back_behind_an_older_transition_leaves_the_counts_true(run):
    """A delivery read back from the journal with a delay, queued behind an older
    transition of its alarm and action still in flight, waits for no timer: it must
    count for intake, not as a waiting retry, or the engine's counts drift for good
    (parked retries then stop coming back, and wait_idle never returns)."""
    r = run()
    receivers = r.engine.plugins["fair"] = _Receivers(r.engine.conf, seconds=0.5)
    (older,) = r.endpoint.handle(helpers.alarm(["fair://hooks.example.org/x"], alarm_id="a"))
    assert helpers.wait_until(lambda: receivers.started, 5)
    # Submitted as a retry read back from the journal is: with a delay, while the
    # older transition of its key is in flight.
    newer = r.engine.checker.check(older.notification, "fair://hooks.example.org/x")
    r.engine.submit(newer, delay=0.3)
    assert r.engine.wait_idle(10)
    assert (r.engine._pending, r.engine._waiting) == (0, 0)
