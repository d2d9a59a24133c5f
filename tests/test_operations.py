"""Operating it: workers, several hosts, metrics and health."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request

import pytest

from tests import helpers
from tests.conftest import empty_journal
from tests.helpers import alarm, free_port, wait_until


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text, name, **labels):
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(2))
    return 0.0


def cast(client, url, alarm_id):
    client.cast(alarm([url], alarm_id=alarm_id))


def test_two_hosts_share_the_topic_and_deliver_each_alarm_once(
    start_notifier, topic, caster, webhook
):
    one = start_notifier(topic, name="one")
    two = start_notifier(topic, name="two")
    client = caster(topic)
    urls = [webhook.url("ok") for _ in range(40)]
    for i, url in enumerate(urls):
        cast(client, url, f"share-{i}")
    for url in urls:
        assert len(webhook.wait_for(url)) >= 1

    # A webhook records a request before it answers; the line comes after the answer.
    def counts():
        return [len(re.findall(r"Alarm share-\d+ delivered", p.log())) for p in (one, two)]

    assert wait_until(lambda: sum(counts()) >= 40, 10), counts()
    time.sleep(0.5)
    assert all(len(webhook.requests_for(url)) == 1 for url in urls)
    assert sum(counts()) == 40 and min(counts()) > 0, counts()


def test_workers_are_full_consumers_and_stop_with_the_parent(
    start_notifier, topic, caster, webhook
):
    notifier = start_notifier(topic, default={"workers": 2})
    workers = helpers.children(notifier.proc.pid)
    assert len(workers) == 2
    client = caster(topic)
    urls = [webhook.url("ok") for _ in range(30)]
    for i, url in enumerate(urls):
        cast(client, url, f"w-{i}")
    for url in urls:
        assert len(webhook.wait_for(url)) == 1
    # Each delivery's log line follows it shortly (it is written with its event).
    line = re.compile(r" (\d+) INFO ceilo_notifier.announce \[-\] Alarm w-\d+ delivered")
    assert notifier.wait_for_log(line.pattern, 10, count=30)
    pids = collections.Counter(line.findall(notifier.log()))
    assert set(map(int, pids)) <= set(workers) and len(pids) == 2, pids
    assert notifier.stop(signal.SIGTERM) == 0
    for pid in workers:
        assert wait_until(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), 10), pid


def test_a_fanout_cast_reaches_a_host_of_two_workers_once(start_notifier, topic, caster, webhook):
    notifier = start_notifier(topic, default={"workers": 2})
    assert len(helpers.children(notifier.proc.pid)) == 2
    client = caster(topic)
    urls = [webhook.url("ok") for _ in range(5)]
    for i, url in enumerate(urls):
        client.cast(alarm([url], alarm_id=f"fan-{i}"), fanout=True)
    for url in urls:
        assert webhook.wait_for(url)
    time.sleep(1)
    assert [len(webhook.requests_for(url)) for url in urls] == [1] * 5


def test_a_fanout_cast_reaches_each_host_sharing_a_journal(
    start_notifier, topic, caster, webhook, tmp_path
):
    """One message, one id, on every host's fanout queue: each host handles its copy."""
    shared = {"database": {"connection": f"sqlite:///{tmp_path}/shared.sqlite"}}
    notifiers = [start_notifier(topic, name=n, extra=shared) for n in ("one", "two")]
    url = webhook.url("ok")
    caster(topic).cast(alarm([url], alarm_id="fan-shared"), fanout=True)
    got = webhook.wait_for(url, 2)
    assert len(got) == 2, [n.log()[-4000:] for n in notifiers]
    time.sleep(1)
    assert len(webhook.requests_for(url)) == 2


def test_a_killed_worker_is_replaced_and_its_deliveries_resumed_at_once(
    start_notifier, topic, caster, webhook
):
    notifier = start_notifier(topic, default={"workers": 2}, alarm={"rest_notifier_max_retries": 3})
    client = caster(topic)
    url = webhook.url("retry-after/8")  # 503 + Retry-After: 8 once, then 200
    cast(client, url, "orphaned")
    assert webhook.wait_for(url)
    assert notifier.wait_for_log(r"Alarm orphaned: attempt 1 .* retrying in 8\.\d s")
    assert notifier.wait_journaled("orphaned", "retrying")
    owner = int(re.search(r" (\d+) WARNING \S+ \[-\] Alarm orphaned: attempt 1", notifier.log())[1])
    os.kill(owner, signal.SIGKILL)
    killed = time.monotonic()
    # The parent starts a worker in its place, which resumes the delivery; it
    # goes out when its Retry-After is over, not at the next start of the service.
    assert notifier.wait_for_log(r"Resumed 1 unfinished deliveries from the journal", 20)
    requests = webhook.wait_for(url, 2, timeout=20)
    assert len(requests) == 2 and time.monotonic() - killed < 15
    assert notifier.alive()


def test_metrics_and_health_are_served_for_all_workers(start_notifier, topic, caster, webhook):
    port = free_port()
    start_notifier(
        topic,
        default={"workers": 2},
        alarm={"rest_notifier_max_retries": 1},
        extra={"metrics": {"port": port}},
    )
    base = f"http://127.0.0.1:{port}"
    client = caster(topic)
    good = [webhook.url("ok") for _ in range(10)]
    for i, url in enumerate(good):
        cast(client, url, f"metrics-{i}")
    cast(client, webhook.url("status/503"), "metrics-bad")

    def scraped():
        status, text = get(f"{base}/metrics")
        if status != 200:
            assert status == 500 and "metrics unavailable" in text, (status, text)
            return None  # a scrape that met a sample file mid-write; the next one reads it
        done = metric(text, "ceilo_notifier_deliveries_total", scheme="http", outcome="delivered")
        failed = metric(text, "ceilo_notifier_deliveries_total", scheme="http", outcome="failed")
        # The counters move before the journal's writer commits the outcome.
        settled = "ceilo_notifier_journal_backlog 0.0" in text and not metric(
            text, "ceilo_notifier_deliveries_in_flight"
        )
        attempts = metric(text, "ceilo_notifier_attempt_duration_seconds_count", scheme="http")
        return text if (done, failed, attempts) == (10, 1, 12) and settled else None

    text = wait_until(scraped, 15)
    assert text, get(f"{base}/metrics")[1]
    assert metric(text, "ceilo_notifier_retries_total", scheme="http") == 1
    assert metric(text, "ceilo_notifier_attempt_duration_seconds_count", scheme="http") == 12
    assert metric(text, "ceilo_notifier_deliveries_in_flight") == 0
    assert "ceilo_notifier_journal_backlog 0.0" in text
    assert "ceilo_notifier_journal_oldest_pending_age_seconds" in text

    status, body = get(f"{base}/healthz")
    report = json.loads(body)
    assert status == 200 and report["status"] == "ok"
    assert report["broker"]["ok"] and report["journal"]["ok"]


def served_with_broker_and_journal_down(make_conf, *paths: str) -> tuple[int, list]:
    """The metrics server of a service whose broker and journal are both
    unreachable (a port nothing listens on): the unreachable port, and the
    (status, body) of each path."""
    from ceilo_notifier import journal, metrics

    dead = free_port()
    conf = make_conf(transport_url=f"rabbit://guest:guest@127.0.0.1:{dead}/")
    conf.set_override("port", free_port(), group="metrics")
    broken = journal.Journal(f"postgresql+psycopg2://nobody@127.0.0.1:{dead}/x", "h/L/1")
    server = metrics.MetricsServer(conf, broken)
    server.start()
    try:
        return dead, [get(f"http://127.0.0.1:{conf.metrics.port}{path}") for path in paths]
    finally:
        server.stop()


def test_health_is_503_when_broker_or_journal_is_down(make_conf):
    dead, [(status, body)] = served_with_broker_and_journal_down(make_conf, "/healthz")
    report = json.loads(body)
    assert status == 503 and report["status"] == "unhealthy"
    assert report["broker"] == {"ok": False, "detail": f"127.0.0.1:{dead}: ConnectionRefusedError"}
    assert report["journal"]["ok"] is False
    assert "connection" in report["journal"]["detail"].lower()


@pytest.mark.parametrize("path", ["/", "/nope"])
def test_unknown_paths_are_404(make_conf, path):
    from ceilo_notifier import metrics

    conf = make_conf()
    conf.set_override("port", free_port(), group="metrics")
    server = metrics.MetricsServer(conf)
    server.start()
    try:
        assert get(f"http://127.0.0.1:{conf.metrics.port}{path}")[0] == 404
    finally:
        server.stop()


def test_the_eventlet_backend_is_opt_in_and_delivers(start_notifier, topic, caster, webhook):
    notifier = start_notifier(topic, env={"CEILO_NOTIFIER_BACKEND": "eventlet"})
    assert "eventlet executor" in notifier.log()
    url = webhook.url("ok")
    cast(caster(topic), url, "green")
    assert len(webhook.wait_for(url)) == 1
    assert notifier.stop(signal.SIGTERM) == 0


def test_threading_is_the_default_backend(start_notifier, topic):
    assert "threading executor" in start_notifier(topic).log()


def test_an_unreachable_journal_stops_the_start_with_one_clear_line(start_notifier, topic):
    dead = free_port()
    notifier = start_notifier(
        topic,
        ready=False,
        extra={
            "database": {"connection": f"postgresql+psycopg2://svc:Pa55w0rd@127.0.0.1:{dead}/j"}
        },
    )
    assert notifier.proc.wait(30) == 1
    log = notifier.log()
    assert re.search(
        r"CRITICAL .*The journal at postgresql\+psycopg2://svc:\*\*\*@127\.0\.0\.1:\d+/j "
        r"cannot be opened \(.*\); not starting",
        log,
    ), log
    assert "Pa55w0rd" not in log and "Traceback" not in log


def test_a_host_that_goes_silent_has_its_deliveries_taken_over_by_another(
    start_notifier, topic, caster, webhook, tmp_path
):
    shared = {"database": {"connection": f"sqlite:///{tmp_path}/shared.sqlite", "owner_lease": 5}}
    gone = start_notifier(topic, name="gone", extra=shared, alarm={"rest_notifier_max_retries": 3})
    client = caster(topic)
    url = webhook.url("retry-after/6")  # 503 + Retry-After: 6 once, then 200
    client.cast(alarm([url], alarm_id="adopted"), server=gone.host)
    assert webhook.wait_for(url)
    assert gone.wait_for_log(r"Alarm adopted: attempt 1 .* retrying in 6\.\d s")
    assert gone.wait_journaled("adopted", "retrying")
    gone.stop(signal.SIGKILL)  # and it never comes back
    heir = start_notifier(topic, name="heir", extra=shared, alarm={"rest_notifier_max_retries": 3})
    assert heir.wait_for_log(rf"Of the 1 deliveries taken over from {gone.host}/\S+: 1 resumed", 20)
    requests = webhook.wait_for(url, 2, timeout=20)
    assert len(requests) == 2
    assert (
        requests[0].headers["x-openstack-request-id"]
        == requests[1].headers["x-openstack-request-id"]
    )
    assert heir.wait_for_log(r"Alarm adopted delivered .* attempt 2", 10)


def test_a_waiting_retry_of_a_dead_host_is_superseded_at_once_by_a_newer_transition(
    start_notifier, topic, caster, webhook, pg_schema_url
):
    """Host one retries "alarm" to a webhook answering 503 and is killed; host two
    gets "ok" for the same alarm and action. The older delivery only waits: two
    supersedes it in the journal at once, instead of waiting for one's lease to
    run out (120 s) and someone to take it over."""
    empty_journal(pg_schema_url)
    shared = {"database": {"connection": pg_schema_url}}
    retry = {"rest_notifier_max_retries": 3}
    one = start_notifier(topic, name="one", extra=shared, alarm=retry)
    two = start_notifier(topic, name="two", extra=shared, alarm=retry)
    client = caster(topic)
    url = webhook.url("retry-after/3")  # 503 + Retry-After: 3 on the first request only
    client.cast(alarm([url], alarm_id="flap", current="alarm"), server=one.host)
    assert webhook.wait_for(url)
    assert one.wait_for_log(r"Alarm flap: attempt 1 .* retrying in 3\.\d s")
    assert one.wait_journaled("flap", "retrying")
    one.stop(signal.SIGKILL)
    started = time.monotonic()
    client.cast(alarm([url], alarm_id="flap", previous="alarm", current="ok"), server=two.host)
    assert len(webhook.wait_for(url, 2)) == 2
    assert time.monotonic() - started < 10, "the newer transition waited for a dead host"
    assert two.wait_for_log(r"Alarm flap: delivery \S+ to \S+ superseded .* waiting", 10)
    assert two.wait_journaled("flap", "superseded")
    time.sleep(1)
    # The receiver never gets the stale "alarm" after "ok".
    assert [r.json()["current"] for r in webhook.requests_for(url)] == ["alarm", "ok"]


def test_transitions_handled_by_two_hosts_reach_the_receiver_in_order(
    start_notifier, topic, caster, webhook, tmp_path
):
    """The older transition is held up on one host while the newer one reaches another:
    the newer waits for the older, or the older is superseded; it never arrives last."""
    shared = {"database": {"connection": f"sqlite:///{tmp_path}/shared.sqlite", "owner_lease": 5}}
    one = start_notifier(topic, name="one", extra=shared, alarm={"per_host_concurrency": 1})
    two = start_notifier(topic, name="two", extra=shared)
    assert two.wait_for_log(r"consuming topic", 5)
    client = caster(topic)
    blocker = webhook.url("slow/2")  # takes host one's only slot to this webhook for 2 s
    url = webhook.url("ok")
    client.cast(alarm([blocker], alarm_id="blocker"), server=one.host)
    assert webhook.wait_for(blocker)
    client.cast(alarm([url], alarm_id="order", current="alarm"), server=one.host)
    assert one.wait_journaled("order")  # host one holds it, waiting for the slot
    client.cast(alarm([url], alarm_id="order", previous="alarm", current="ok"), server=two.host)
    assert webhook.wait_for(url, 1, timeout=15)
    assert one.wait_for_log(r"Alarm order", 15)  # host one settled its transition
    time.sleep(1)
    got = [r.json()["current"] for r in webhook.requests_for(url)]
    # "alarm" first and then "ok", or "alarm" superseded: never "alarm" after "ok".
    assert got in (["alarm", "ok"], ["ok"]), got
