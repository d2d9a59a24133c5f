"""A drop-in for aodh-notifier: consuming what aodh's evaluator emits."""

from __future__ import annotations

import sqlite3
import time
import uuid

from tests import helpers
from tests.helpers import alarm, wait_until


def listening(start_notifier, topic, **alarm):
    aodh_topic = f"alarming_{uuid.uuid4().hex[:8]}"
    notifier = start_notifier(
        topic, alarm={"notification_listener": True, "notifier_topic": aodh_topic, **alarm}
    )
    assert (
        f"Listening for alarm.update notifications on exchange aodh, topic {aodh_topic}"
        in notifier.log()
    )
    return notifier, aodh_topic


def test_what_aodh_evaluator_sends_is_delivered(start_notifier, topic, aodh_evaluator, webhook):
    notifier, aodh_topic = listening(start_notifier, topic)
    url = webhook.url("ok")
    aodh_evaluator(aodh_topic)([url], "from-aodh")
    (request,) = webhook.wait_for(url)
    assert request.json() == {
        "alarm_id": "from-aodh",
        "alarm_name": "cpu-high",
        "severity": "moderate",
        "previous": "ok",
        "current": "alarm",
        "reason": "Transition to alarm",
        "reason_data": {"type": "threshold"},
    }
    assert notifier.wait_for_log(r"Alarm from-aodh delivered")


def test_batches_are_delivered_in_full(start_notifier, topic, aodh_evaluator, webhook):
    _, aodh_topic = listening(start_notifier, topic, batch_size=10, batch_timeout=0.2)
    send = aodh_evaluator(aodh_topic)
    urls = [webhook.url("ok") for _ in range(25)]
    for i, url in enumerate(urls):
        send([url], f"batch-{i}")
    for url in urls:
        assert len(webhook.wait_for(url, timeout=10)) == 1


def test_a_batch_is_requeued_while_the_journal_cannot_be_written(
    start_notifier, topic, aodh_evaluator, webhook, tmp_path
):
    notifier, aodh_topic = listening(start_notifier, topic)
    db = sqlite3.connect(tmp_path / "notifier-journal.sqlite")
    db.execute("ALTER TABLE deliveries RENAME TO deliveries_hidden")
    db.commit()
    url = webhook.url("ok")
    aodh_evaluator(aodh_topic)([url], "requeued")
    assert notifier.wait_for_log(r"Journal unavailable .*; 1 alarm notification\(s\) requeued")
    time.sleep(0.5)
    assert webhook.requests_for(url) == []  # not acknowledged, and not delivered either
    db.execute("ALTER TABLE deliveries_hidden RENAME TO deliveries")
    db.commit()
    db.close()
    assert len(webhook.wait_for(url, timeout=15)) == 1
    assert wait_until(lambda: "Alarm requeued delivered" in notifier.log(), 5)
    time.sleep(1)
    assert len(webhook.requests_for(url)) == 1


def test_batch_timeout_zero_does_not_wait_for_a_full_batch(
    start_notifier, topic, aodh_evaluator, webhook
):
    _, aodh_topic = listening(start_notifier, topic, batch_size=100, batch_timeout=0)
    url = webhook.url("ok")
    started = time.monotonic()
    aodh_evaluator(aodh_topic)([url], "lone-notification")
    assert webhook.wait_for(url, timeout=5), "a lone notification waited for a full batch"
    assert time.monotonic() - started < 5


def _notification(payload: object, **fields) -> dict:
    """An alarm.update notification as oslo.messaging's messagingv2 driver writes it."""
    body = {
        "message_id": str(uuid.uuid4()),
        "publisher_id": "alarming.evaluator",
        "event_type": "alarm.update",
        "priority": "SAMPLE",
        "payload": payload,
        "timestamp": "2026-01-01 00:00:00.000000",
    }
    return {**body, **fields}


def test_each_unreadable_notification_is_one_line_and_its_neighbours_go_on(
    start_notifier, topic, aodh_evaluator, webhook, rabbit_url
):
    """oslo.messaging's batch dispatcher reads a batch in one go: one bad message
    used to requeue the whole batch, again and again."""
    notifier, aodh_topic = listening(start_notifier, topic, batch_size=50)
    notifier.stop()  # the queue exists, nobody consumes it
    urls = [webhook.url("ok") for _ in range(5)]
    bad = {
        "unreadable (AttributeError": _notification(alarm([urls[0]], alarm_id="bad-p"), priority=5),
        "data is a list, not a dict": _notification([1]),
    }
    messages = [
        _notification(alarm([url], alarm_id=f"good-{i}")) for i, url in enumerate(urls[1:3])
    ]
    messages[1:1] = [*bad.values(), [1, 2]]
    helpers.publish_raw(rabbit_url, "aodh", f"{aodh_topic}.sample", messages)
    send = aodh_evaluator(aodh_topic)
    for i, url in enumerate(urls[3:]):
        send([url], f"sent-{i}")

    notifier = start_notifier(
        topic,
        alarm={"notification_listener": True, "notifier_topic": aodh_topic, "batch_size": 50},
        name="second",
    )
    for url in urls[1:]:
        assert len(webhook.wait_for(url, timeout=10)) == 1, url
    assert webhook.requests_for(urls[0]) == []
    log = notifier.log()
    helpers.assert_one_line_each(log, [*bad, "the message is not a dict"])
    assert "Alarm bad-p: notification rejected: unreadable" in log
    assert "Exception during messages handling" not in log
    assert helpers.queues_drained(rabbit_url, aodh_topic), helpers.queue_counts(
        rabbit_url, aodh_topic
    )
