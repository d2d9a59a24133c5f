"""Endpoint health (SPEC 15): a failing receiver is held, probed and drained in order.

Every receiver here is a real HTTP server on its own loopback address (the
scheduler shares slots per address); the services are real processes fed by
real casts over RabbitMQ, with real SQLite or PostgreSQL journals.
"""

from __future__ import annotations

import http.server
import json
import re
import signal
import threading
import time

import pytest

from ceilo_notifier import events, journal
from tests import helpers
from tests.conftest import empty_journal
from tests.helpers import alarm, wait_until
from tests.test_actions import manage
from tests.test_capacity import journaled
from tests.test_operations import get


class Receiver(http.server.ThreadingHTTPServer):
    """A webhook receiver whose answer the test switches: 200, or ``status`` while down.

    ``narrow``: answers 429 to any request beyond that many in flight at once.
    """

    daemon_threads = True
    request_queue_size = 512

    def __init__(self, host: str, delay: float = 0.0, narrow: int | None = None) -> None:
        self.lock = threading.Lock()
        # when, path, body, status, requests in flight on arrival (this one included)
        self.requests: list[tuple[float, str, dict, int, int]] = []
        self.down: int | None = None  # the status answered while down
        self.retry_after: str | None = None
        self.delay = delay
        self.narrow = narrow
        self.in_flight = 0
        self.most = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    receiver.in_flight += 1
                    crowded = receiver.narrow is not None and receiver.in_flight > receiver.narrow
                    if not crowded:
                        receiver.most = max(receiver.most, receiver.in_flight)
                    status = 429 if crowded else (receiver.down or 200)
                    retry_after = receiver.retry_after if status != 200 else None
                    receiver.requests.append(
                        (time.monotonic(), self.path, body, status, receiver.in_flight)
                    )
                try:
                    if status == 200 and receiver.delay:
                        time.sleep(receiver.delay)
                    self.send_response(status)
                    if retry_after:
                        self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                finally:
                    with receiver.lock:
                        receiver.in_flight -= 1

        super().__init__((host, 0), Handler)
        self.host = host
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}/{path}"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def seen(self, since: float = 0.0, status: int | None = None) -> list[tuple]:
        with self.lock:
            return [
                r for r in self.requests if r[0] >= since and (status is None or r[3] == status)
            ]

    def delivered(self) -> dict[str, list[str]]:
        """Alarm id: the ``current`` states it received with 200, in order."""
        got: dict[str, list[str]] = {}
        for _when, _path, body, _status, _n in self.seen(status=200):
            got.setdefault(body["alarm_id"], []).append(body["current"])
        return got

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(host: str, **kw) -> Receiver:
        made.append(Receiver(host, **kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


HEALTH = {"failure_threshold": 3, "open_seconds": 1, "max_open_seconds": 2, "sync_seconds": 0.5}
RETRIES = {
    "rest_notifier_max_retries": 100,
    "rest_notifier_retry_backoff": 0.2,
    "rest_notifier_retry_backoff_max": 1,
    "rest_notifier_retry_max_age": 120,
}


def test_a_receiver_down_is_held_probed_and_drained_while_healthy_ones_flow(
    start_notifier, topic, caster, receivers
):
    """One of two receivers answers 503 for 8 s. It gets the failures that open it and
    a probe every open period, not every retry of every delivery; the healthy one's
    alarms go out as fast as before; after recovery every alarm is delivered, and an
    alarm that went alarm → ok during the outage receives only ok."""
    down, healthy = receivers("127.0.0.2"), receivers("127.0.0.3")
    notifier = start_notifier(topic, alarm=RETRIES, extra={"endpoint_health": HEALTH})
    client = caster(topic)
    down.down = 503
    outage = time.monotonic()
    latencies = []
    for i in range(16):
        client.cast(alarm([down.url(f"a{i}")], alarm_id=f"down-{i}", current="alarm"))
        sent = time.monotonic()
        client.cast(alarm([healthy.url(f"h{i}"), "log://"], alarm_id=f"healthy-{i}"))
        assert wait_until(lambda i=i: f"healthy-{i}" in healthy.delivered(), 5)
        latencies.append(time.monotonic() - sent)
        time.sleep(0.25)
    # A transition during the outage: only the latest must arrive.
    client.cast(alarm([down.url("a0")], alarm_id="down-0", previous="alarm", current="ok"))
    time.sleep(max(0.0, 8 - (time.monotonic() - outage)))
    during = len(down.seen())
    down.down = None
    assert wait_until(lambda: len(down.delivered()) == 16, 30), down.delivered()
    # Threshold, then one probe per open period (1 s, then 2 s): about 3 + 5 in 8 s.
    assert during <= HEALTH["failure_threshold"] + 6, during
    assert down.delivered()["down-0"] == ["ok"], down.delivered()["down-0"]
    assert all(states == ["alarm"] for a, states in down.delivered().items() if a != "down-0")
    assert max(latencies) < 3, latencies
    assert notifier.wait_for_log(r"Endpoint http://127\.0\.0\.2:\d+ now closed", 5)
    log = notifier.log()
    assert len(re.findall(r"Endpoint http://127\.0\.0\.2:\d+ now open", log)) <= 6
    assert not re.findall(r"Endpoint http://127\.0\.0\.3", log)
    # The journal's event writer may lag behind the log by a moment.
    states = lambda: sorted(r.state for r in journaled(notifier, "down-0"))  # noqa: E731
    assert wait_until(lambda: states() == [events.DELIVERED, events.SUPERSEDED], 5), states()


def test_retry_after_quiets_the_whole_endpoint(run, receivers):
    """503 with Retry-After: 5 to the first of ten deliveries: none of the ten reaches
    the endpoint for 5 s, then all are delivered."""
    r = run(**RETRIES)
    target = receivers("127.0.0.4")
    target.down, target.retry_after = 503, "5"
    first = r.endpoint.handle(alarm([target.url("first")], alarm_id="ra-0"))
    assert wait_until(lambda: target.seen(), 5)
    quiet_from = target.seen()[0][0]
    target.down = None
    rest = []
    for i in range(1, 10):
        rest += r.endpoint.handle(alarm([target.url(f"n{i}")], alarm_id=f"ra-{i}"))
    for d in first + rest:
        assert d.wait(20), d.masked_action
    assert [d.outcome for d in first + rest] == [events.DELIVERED] * 10
    requests = target.seen()
    assert len(requests) == 11, [(round(q[0] - quiet_from, 2), q[1]) for q in requests]
    assert requests[1][0] - quiet_from >= 4.9


def test_a_narrow_receiver_gets_about_as_many_attempts_at_once_as_it_takes(run, receivers):
    """A receiver that answers 429 beyond 4 requests in flight: every alarm is
    delivered, with few refusals, and the attempts in flight settle near 4."""
    r = run(per_host_concurrency=64, **RETRIES)
    narrow = receivers("127.0.0.5", delay=0.05, narrow=4)
    deliveries = []
    for i in range(300):
        deliveries += r.endpoint.handle(alarm([narrow.url(f"n{i}")], alarm_id=f"narrow-{i}"))
    for d in deliveries:
        assert d.wait(60), d.masked_action
    assert all(d.outcome == events.DELIVERED for d in deliveries)
    requests = narrow.seen()
    refused = [q for q in requests if q[3] == 429]
    assert len(requests) / 300 <= 1.5, f"{len(refused)} refused of {len(requests)}"
    # After the first burst has taught the limit, refusals are rare, and the
    # attempts offered at once stay near what it takes.
    later = requests[100:]
    assert sum(q[3] == 429 for q in later) <= 0.25 * len(later)
    offered = sorted(q[4] for q in later)
    assert offered[len(offered) // 2] <= 5 and offered[int(0.95 * len(offered))] <= 6, offered


def test_without_endpoint_health_every_delivery_retries_on_its_own(run, receivers):
    """``enabled = false``: the narrow receiver is stormed by every delivery's retries."""
    r = run(per_host_concurrency=64, health={"enabled": False}, **RETRIES)
    narrow = receivers("127.0.0.6", delay=0.05, narrow=4)
    deliveries = []
    for i in range(100):
        deliveries += r.endpoint.handle(alarm([narrow.url(f"n{i}")], alarm_id=f"plain-{i}"))
    for d in deliveries:
        assert d.wait(60)
    # More refusals than alarms (health on: at most one per two alarms).
    assert len(narrow.seen(status=429)) > 100


def _manage(notifier, *args: str):
    return manage("--config-file", str(notifier.config_path), *args)


def test_pause_by_hand_holds_and_resume_drains_the_latest_per_alarm(
    start_notifier, topic, caster, receivers
):
    """``endpoint-pause``: alarms accumulate (listed, with their count; counted in
    /metrics); ``endpoint-resume``: each alarm receives its latest transition, and
    a paused endpoint got nothing meanwhile."""
    target = receivers("127.0.0.7")
    port = helpers.free_port()
    notifier = start_notifier(
        topic,
        alarm=RETRIES,
        extra={"endpoint_health": HEALTH, "metrics": {"port": port}},
    )
    paused = _manage(notifier, "endpoint-pause", target.url("any?x=1"))
    assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr
    time.sleep(HEALTH["sync_seconds"] * 3)
    client = caster(topic)
    for current in ("alarm", "ok", "alarm"):  # an evaluation apart, not all at once
        client.cast(alarm([target.url("p")], alarm_id="paused-a", current=current))
        time.sleep(0.5)
    client.cast(alarm([target.url("q")], alarm_id="paused-b", current="ok"))

    # ENDPOINT STATE FAILURES SINCE UNTIL WAITING REASON: two wait (one per alarm).
    row = re.escape(target.endpoint) + r"\s+paused\s+0\s+\S+ \S+\s+-\s+2\s+paused by an operator"
    assert wait_until(lambda: re.search(row, _manage(notifier, "endpoints").stdout), 15), _manage(
        notifier, "endpoints"
    ).stdout
    metrics = get(f"http://127.0.0.1:{port}/metrics")[1]
    assert 'ceilo_notifier_endpoints{state="paused"} 1.0' in metrics, metrics
    assert target.seen() == []
    resumed = _manage(notifier, "endpoint-resume", target.url("other"))
    assert resumed.returncode == 0, resumed.stderr
    assert wait_until(lambda: len(target.delivered()) == 2, 15), target.delivered()
    time.sleep(1)
    assert target.delivered() == {"paused-a": ["alarm"], "paused-b": ["ok"]}
    rows = journaled(notifier, "paused-a")
    assert sorted(r.state for r in rows) == ["delivered", "superseded", "superseded"]
    assert "paused" not in _manage(notifier, "endpoints").stdout


def test_held_deliveries_age_out_as_endpoint_unavailable_and_are_never_sent(
    start_notifier, topic, caster, receivers
):
    """Open for longer than the deliveries may live: they fail with the cause
    ``endpoint unavailable`` at their age, and nothing reaches the receiver later."""
    target = receivers("127.0.0.8")
    target.down = 503
    notifier = start_notifier(
        topic,
        alarm={**RETRIES, "rest_notifier_retry_max_age": 4},
        extra={"endpoint_health": {**HEALTH, "failure_threshold": 2, "open_seconds": 60}},
    )
    client = caster(topic)
    for i in range(2):
        client.cast(alarm([target.url(f"o{i}")], alarm_id=f"age-open-{i}"))
    assert notifier.wait_for_log(r"Endpoint http://127\.0\.0\.8:\d+ now open", 10)
    opened = len(target.seen())
    for i in range(5):
        client.cast(alarm([target.url(f"h{i}")], alarm_id=f"aged-{i}"))
    assert notifier.wait_for_log(r"endpoint unavailable", 15, count=5), notifier.log()
    target.down = None
    time.sleep(2)
    assert len(target.seen()) == opened
    for i in range(5):
        (row,) = journaled(notifier, f"aged-{i}")
        assert row.state == events.FAILED and row.attempts == 0
        assert row.error.startswith("endpoint unavailable: http://127.0.0.8:"), row.error


def test_held_deliveries_survive_kill_9_and_are_still_held_after_it(
    start_notifier, topic, caster, receivers, tmp_path
):
    """Deliveries held for an open endpoint are in the journal: after ``kill -9`` and a
    restart they are still held (nothing is sent), then delivered once it is resumed."""
    target = receivers("127.0.0.9")
    target.down = 503
    health = {**HEALTH, "failure_threshold": 2, "open_seconds": 300, "max_open_seconds": 300}
    config = {"alarm": RETRIES, "extra": {"endpoint_health": health}}
    first = start_notifier(topic, **config, default={"host": "held-host"})
    client = caster(topic)
    for i in range(2):
        client.cast(alarm([target.url(f"o{i}")], alarm_id=f"kill-open-{i}"))
    assert first.wait_for_log(r"now open", 10)
    for i in range(4):
        client.cast(alarm([target.url(f"h{i}")], alarm_id=f"kill-held-{i}"))
    assert all(first.wait_journaled(f"kill-held-{i}") for i in range(4))
    time.sleep(3)  # held, and parked
    first.stop(signal.SIGKILL)
    sent = len(target.seen())
    target.down = None
    second = start_notifier(topic, **config, default={"host": "held-host"})
    time.sleep(4)
    assert len(target.seen()) == sent, "a held delivery went out after the restart"
    listing = _manage(second, "endpoints").stdout
    row = re.escape(target.endpoint) + r"\s+open\s+\d+\s+\S+ \S+\s+\S+ \S+\s+6\s"
    assert re.search(row, listing), listing
    assert _manage(second, "endpoint-resume", target.endpoint).returncode == 0
    assert wait_until(lambda: len(target.delivered()) == 6, 15), target.delivered()


def test_an_endpoint_opened_by_one_host_is_not_attempted_by_another(
    start_notifier, caster, receivers, pg_schema_url, rabbit_url
):
    """Two hosts on one PostgreSQL journal, each on a topic of its own: once one host
    opens an endpoint, the other holds its deliveries to it too."""
    empty_journal(pg_schema_url)
    journal.upgrade(pg_schema_url)
    target = receivers("127.0.0.10")
    target.down = 503
    health = {**HEALTH, "failure_threshold": 2, "open_seconds": 300, "max_open_seconds": 300}
    common = {
        "alarm": RETRIES,
        "extra": {"endpoint_health": health, "database": {"connection": pg_schema_url}},
    }
    one = start_notifier("health-one", name="one", **common)
    two = start_notifier("health-two", name="two", **common)
    caster("health-one").cast(alarm([target.url("x"), target.url("y")], alarm_id="opener"))
    assert one.wait_for_log(r"now open", 10)
    opened = len(target.seen())
    time.sleep(3 * health["sync_seconds"])
    other = caster("health-two")
    for i in range(3):
        other.cast(alarm([target.url(f"z{i}")], alarm_id=f"second-host-{i}"))
    assert all(two.wait_journaled(f"second-host-{i}") for i in range(3))
    time.sleep(2)
    assert len(target.seen()) == opened, "the second host attempted an open endpoint"
    target.down = None
    assert _manage(two, "endpoint-resume", target.endpoint).returncode == 0
    assert wait_until(lambda: len(target.delivered()) == 4, 15), target.delivered()
