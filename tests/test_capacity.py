"""Capacity: what one tenant's failing webhooks, a flood of casts or a low file
limit may cost everyone else (a real service, a real broker, real webhooks)."""

from __future__ import annotations

import re
import resource
import subprocess
import time
from urllib import parse

from ceilo_notifier import journal
from tests import helpers, hostile
from tests.helpers import alarm, wait_until


def journaled(notifier, alarm_id: str) -> list[journal.Record]:
    reader = journal.Journal(notifier.journal_url, "tests/reader/0")
    try:
        return reader.find(alarm_id=alarm_id)
    finally:
        reader.engine.dispose()


def test_retries_a_webhook_defers_for_an_hour_hold_no_intake(
    start_notifier, topic, caster, webhook
):
    """One tenant's 100 actions answer 503 + Retry-After: 3000, five times more than
    max_pending_deliveries: the other tenants' alarms still go out at once, and the
    retries wait rest_notifier_retry_after_max (300 s), parked in the journal.
    Per-delivery retries: endpoint health, which would hold the whole endpoint at
    the first Retry-After, is off."""
    notifier = start_notifier(
        topic,
        alarm={"max_pending_deliveries": 20, "rest_notifier_max_retries": 3},
        extra={"endpoint_health": {"enabled": False}},
    )
    client = caster(topic)
    busy = []
    for i in range(10):
        urls = [webhook.url("busy/3000") for _ in range(10)]
        busy += urls
        client.cast(alarm(urls, alarm_id=f"busy-{i}"))
    assert wait_until(lambda: all(webhook.requests_for(u) for u in busy), 20), (
        f"{sum(bool(webhook.requests_for(u)) for u in busy)} of 100 first attempts made"
    )
    took = list(helpers.time_healthy_alarms(client, webhook, 5, "other").values())
    assert all(t is not None and t < 5 for t in took), f"other tenants waited: {took}"

    now = journal.utcnow()
    rows = journaled(notifier, "busy-0")
    assert len(rows) == 10 and all(r.state == "retrying" for r in rows), rows
    for row in rows:
        assert row.parked_until is not None  # out of memory
        wait = (row.next_attempt_at - now).total_seconds()
        assert 280 < wait <= 300, f"Retry-After 3000 not capped at 300 s: {wait:.0f} s"
    assert notifier.wait_for_log(r"Alarm busy-0: attempt 1 .* retrying in 300\.0 s")
    # Each webhook was asked once: no retry came early.
    assert all(len(webhook.requests_for(u)) == 1 for u in busy)


def test_a_parked_retry_is_attempted_when_due_and_superseded_by_a_newer_transition(
    start_notifier, topic, caster, webhook
):
    notifier = start_notifier(
        topic, alarm={"rest_notifier_retry_after_max": 3, "rest_notifier_max_retries": 3}
    )
    client = caster(topic)
    url = webhook.url("retry-after/3000")  # 503 + Retry-After: 3000 once, then 200
    client.cast(alarm([url], alarm_id="parked"))
    assert webhook.wait_for(url)
    assert wait_until(lambda: any(r.parked_until for r in journaled(notifier, "parked")), 3)
    requests = webhook.wait_for(url, 2, timeout=10)
    assert len(requests) == 2
    assert 2.8 < requests[1].received - requests[0].received < 5
    assert notifier.wait_for_log(r"Alarm parked delivered .* attempt 2")
    assert notifier.wait_journaled("parked", "delivered")
    (row,) = journaled(notifier, "parked")
    assert row.parked_until is None

    flip = webhook.url("retry-after/3000")
    client.cast(alarm([flip], alarm_id="flip", current="alarm"))
    assert webhook.wait_for(flip)
    assert wait_until(lambda: any(r.parked_until for r in journaled(notifier, "flip")), 3)
    client.cast(alarm([flip], alarm_id="flip", previous="alarm", current="ok"))
    assert len(webhook.wait_for(flip, 2)) == 2
    assert notifier.wait_for_log(r"Alarm flip: delivery \S+ to \S+ superseded", 5)
    time.sleep(3.5)  # past when the parked "alarm" was due
    # The receiver never gets the stale "alarm" after "ok".
    assert [r.json()["current"] for r in webhook.requests_for(flip)] == ["alarm", "ok"]
    states = sorted(r.state for r in journaled(notifier, "flip"))
    assert states == ["delivered", "superseded"]


def publish_casts(rabbit_url: str, topic: str, data: dict, count: int, threads: int = 2) -> None:
    """Publish ``count`` notify_alarm casts of ``data`` as oslo.messaging's rabbit driver
    does (its JSON envelope on the topic exchange), straight with py-amqp: a cast a
    millisecond through oslo.messaging would make 100,000 take minutes. ``{n}`` in
    ``data``'s alarm_id becomes the cast's number."""
    import json
    import threading
    import uuid
    from urllib import parse

    import amqp

    url = parse.urlsplit(rabbit_url)
    message = {
        "method": "notify_alarm",
        "args": {"data": {**data, "alarm_id": data["alarm_id"].replace("{n}", "@N@")}},
        "version": "1.0",
        "_unique_id": "@ID@",
    }
    template = json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)})

    def publish(numbers: range) -> None:
        conn = amqp.Connection(
            f"{url.hostname}:{url.port or 5672}",
            userid=parse.unquote(url.username),
            password=parse.unquote(url.password),
            virtual_host=parse.unquote(url.path[1:]),
        )
        conn.connect()
        try:
            channel = conn.channel()
            for n in numbers:
                body = template.replace("@ID@", uuid.uuid4().hex).replace("@N@", str(n))
                channel.basic_publish(
                    amqp.Message(body, content_type="application/json", content_encoding="utf-8"),
                    exchange="openstack",
                    routing_key=topic,
                )
        finally:
            conn.close()

    workers = [
        threading.Thread(target=publish, args=(range(i, count, threads),)) for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def queue_counts(rabbit_url: str, queue: str) -> tuple[int, int]:
    """(ready, unacknowledged) messages of a queue of the test run's vhost."""
    vhost = parse.unquote(parse.urlsplit(rabbit_url).path[1:])
    out = subprocess.run(
        [
            "rabbitmqctl",
            "-q",
            "list_queues",
            "-p",
            vhost,
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] == queue:
            return int(fields[1]), int(fields[2])
    raise AssertionError(f"no queue {queue} in {out}")


def test_a_flood_waits_in_the_broker_not_in_the_service(start_notifier, topic, rabbit_url):
    """100,000 casts while every delivery hangs: the service takes what it can hold
    and leaves the rest ready in RabbitMQ, its memory flat."""
    dead = hostile.Blackhole()
    notifier = start_notifier(
        topic, alarm={"max_pending_deliveries": 50, "rest_notifier_timeout": 60}
    )
    try:
        pid = notifier.proc.pid
        before = hostile.tree_rss(pid)
        sampler = hostile.RssSampler(pid, interval=0.1)
        publish_casts(rabbit_url, topic, alarm([dead.url()], alarm_id="flood-{n}"), 100_000)
        time.sleep(4)  # the service takes what it will (prefetch fills in well under 1 s)
        peak = sampler.stop()
        ready, unacked = queue_counts(rabbit_url, topic)
        growth = peak - before
        assert growth < 60 * hostile.MB, (
            f"the service grew {growth / hostile.MB:.0f} MB under a flood "
            f"({ready} ready, {unacked} unacknowledged in RabbitMQ)"
        )
        assert ready > 95_000, f"only {ready} of 100,000 casts left in RabbitMQ ({unacked} held)"
        assert notifier.alive()
    finally:
        vhost = parse.unquote(parse.urlsplit(rabbit_url).path[1:])
        subprocess.run(
            ["rabbitmqctl", "-q", "purge_queue", "-p", vhost, topic],
            capture_output=True,
            timeout=60,
        )
        notifier.stop(timeout=10)
        dead.close()


def test_a_low_open_file_limit_shrinks_the_pool_instead_of_running_out(
    start_notifier, topic, caster, webhook
):
    """Soft and hard limit 1024 (systemd's soft default, and no way up), the default
    dispatch_pool_size of 1024, and 1,500 deliveries to five hosts that accept and
    never answer: the pool shrinks to what fits, and the journal and a healthy
    alarm still work, with no EMFILE anywhere."""

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    dead = [hostile.Blackhole(f"127.0.0.{i}") for i in range(2, 7)]
    try:
        notifier = start_notifier(
            topic,
            alarm={
                "dispatch_pool_size": 1024,
                "per_host_concurrency": 256,
                "rest_notifier_timeout": 4,
                "rest_notifier_max_retries": 0,
            },
            preexec_fn=low_limit,
        )
        shrunk = re.search(r"WARNING .* dispatch_pool_size 1024 .*: (\d+) attempts", notifier.log())
        assert shrunk, notifier.log()[-3000:]
        pool = int(shrunk[1])
        client = caster(topic)
        for i in range(300):
            for j, host in enumerate(dead):
                client.cast(alarm([host.url()], alarm_id=f"hung-{j}-{i}"))
        assert wait_until(lambda: sum(h.accepted for h in dead) >= pool, 15), [
            h.accepted for h in dead
        ]
        (took,) = helpers.time_healthy_alarms(client, webhook, 1, "healthy", 15).values()
        # Behind a full pool of hung attempts it waits at most one timeout for a slot.
        assert took is not None and took < 10, took
        assert notifier.wait_journaled("healthy-0", "delivered")
        assert notifier.wait_for_log(r"Alarm hung-\d-\d+: delivery to .* failed", 10)
        log = notifier.log()
        assert "Too many open files" not in log and "EMFILE" not in log, log[-3000:]
        assert len(re.findall(r"dispatch_pool_size 1024 does not fit", log)) == 1
        assert notifier.alive()
    finally:
        for host in dead:
            host.close()


def test_the_soft_open_file_limit_is_raised_to_the_hard_one_at_start(
    start_notifier, topic, caster, webhook
):
    def systemd_default():  # its soft limit, a hard one of our own
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))

    notifier = start_notifier(topic, preexec_fn=systemd_default)
    log = notifier.log()
    assert log.count("Open file limit raised from 1024 to 4096") == 1, log[-3000:]
    assert "does not fit under the open file limit" not in log
    with open(f"/proc/{notifier.proc.pid}/limits") as limits:
        (line,) = [x for x in limits if x.startswith("Max open files")]
    assert line.split()[3:5] == ["4096", "4096"]
    (took,) = helpers.time_healthy_alarms(caster(topic), webhook, 1, "raised").values()
    assert took is not None and took < 5


def test_a_flood_to_a_dead_host_waits_in_the_journal_not_in_intake(
    start_notifier, topic, caster, webhook
):
    """500 deliveries to a host that accepts and never answers, more than
    max_pending_deliveries: beyond half of max_pending_deliveries (more than twice its
    per-host slots, here) they wait in the journal, so the consumers still take other
    tenants' alarms at once."""
    dead = hostile.Blackhole("127.0.0.2")
    small = {"max_pending_deliveries": 200, "per_host_concurrency": 10}
    try:
        notifier = start_notifier(
            topic, alarm={**small, "rest_notifier_timeout": 30, "rest_notifier_max_retries": 0}
        )
        client = caster(topic)
        for i in range(50):
            client.cast(alarm([dead.url() for _ in range(10)], alarm_id=f"dead-{i}"))
        assert wait_until(lambda: dead.accepted >= 10, 10)
        assert notifier.wait_for_log(r"deliveries wait in the journal: their hosts \(127\.0\.0\.2")
        took = list(helpers.time_healthy_alarms(client, webhook, 5, "healthy").values())
        assert all(t is not None and t < 5 for t in took), f"other tenants waited: {took}"
        # 500, less the 100 of half the bound, less those the retry reader has
        # taken back into memory at that moment (it holds them again while the
        # host is full; on a busy machine a batch of them may be in memory for a
        # while): never more than max_pending_deliveries in memory.
        counts: list[int] = []

        def held() -> bool:
            parked = [r for i in range(50) for r in journaled(notifier, f"dead-{i}")]
            counts.append(sum(1 for r in parked if r.parked_until))
            return counts[-1] >= 500 - small["max_pending_deliveries"]

        assert wait_until(held, 10, 0.2), counts
        assert dead.accepted == 10  # its slots, no more
    finally:
        dead.close()


def test_a_burst_to_a_healthy_webhook_is_never_held_in_the_journal(
    start_notifier, topic, caster, webhook
):
    """The same crowding as a dead host's flood, to a webhook known to answer: held
    back, a burst would wait seconds for nothing, so none of it is."""
    small = {"max_pending_deliveries": 200, "per_host_concurrency": 10}
    notifier = start_notifier(topic, alarm=small)
    client = caster(topic)
    first = webhook.url("ok")
    client.cast(alarm([first], alarm_id="first"))
    assert webhook.wait_for(first, timeout=10)
    urls = [webhook.url("ok") for _ in range(500)]
    for i in range(50):
        client.cast(alarm(urls[i * 10 : (i + 1) * 10], alarm_id=f"burst-{i}"))
    assert wait_until(lambda: all(webhook.requests_for(u) for u in urls), 30)
    assert not re.search(r"deliveries wait in the journal", notifier.log())
