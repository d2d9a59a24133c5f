"""Outcomes on the bus: the message dispatcher, versioned payloads, consumers' view."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import uuid

import oslo_messaging
import pytest
from oslo_config import cfg

from ceilo_notifier import payloads
from tests.helpers import ROOT, wait_until

SAMPLES = ROOT / "doc" / "notification_samples"
# Values that differ on every run; everything else must match the sample.
VOLATILE = {"request_id", "duration", "action"}

FINGERPRINTS = {"AlarmActionPayload": "1.0-9f51eb1e6b53ca71c6b8bf5e126a75c8"}


def test_payload_fingerprints_match_their_versions():
    """A field changed without a version bump fails here: bump VERSION, then update the hash."""
    from oslo_versionedobjects import fixture

    checker = fixture.ObjectVersionChecker(payloads.PAYLOADS)
    expected, actual = checker.test_hashes(FINGERPRINTS)
    assert expected == actual


class Collector:
    """A consumer of the service's notifications, as a monitoring system would run it."""

    def __init__(self, url, topics, pool=None, event_type=None):
        conf = cfg.ConfigOpts()
        conf([], default_config_files=[])
        self.transport = oslo_messaging.get_notification_transport(conf, url=url)
        self.received: list[dict] = []
        self.lock = threading.Lock()
        collector = self

        class Endpoint:
            if event_type:
                filter_rule = oslo_messaging.NotificationFilter(event_type=event_type)

            def _keep(self, ctxt, publisher_id, event_type, payload, metadata, priority):
                with collector.lock:
                    collector.received.append(
                        {
                            "publisher_id": publisher_id,
                            "event_type": event_type,
                            "payload": payload,
                            "priority": priority,
                        }
                    )

            def info(self, ctxt, publisher_id, event_type, payload, metadata):
                self._keep(ctxt, publisher_id, event_type, payload, metadata, "INFO")

            def error(self, ctxt, publisher_id, event_type, payload, metadata):
                self._keep(ctxt, publisher_id, event_type, payload, metadata, "ERROR")

        targets = [oslo_messaging.Target(topic=t) for t in topics]
        self.listener = oslo_messaging.get_notification_listener(
            self.transport, targets, [Endpoint()], executor="threading", pool=pool
        )
        self.listener.start()

    def wait(self, count, timeout=15.0):
        wait_until(lambda: len(self.received) >= count, timeout)
        with self.lock:
            return list(self.received)

    def close(self):
        self.listener.stop()
        self.listener.wait()
        self.transport.cleanup()


@pytest.fixture
def collect(rabbit_url):
    made = []

    def make(topics, **kw):
        c = Collector(rabbit_url, topics, **kw)
        made.append(c)
        return c

    yield make
    # A listener takes about a second to stop: several stop side by side.
    with concurrent.futures.ThreadPoolExecutor(max(len(made), 1)) as pool:
        for closed in [pool.submit(c.close) for c in made]:
            closed.result()


def strip_volatile(primitive):
    data = dict(primitive["ceilo_notifier_object.data"])
    for key in VOLATILE:
        data.pop(key, None)
    return {**primitive, "ceilo_notifier_object.data": data}


def sample(name):
    return json.loads((SAMPLES / f"{name}.json").read_text())


def cast_alarm(caster, topic, actions, alarm_id):
    caster(topic).cast(
        {
            "alarm_id": alarm_id,
            "alarm_name": "cpu-high",
            "severity": "critical",
            "actions": actions,
            "previous": "ok",
            "current": "alarm",
            "reason": "cpu > 90%",
            "reason_data": {},
        }
    )


def test_emitted_versioned_notifications_match_their_samples(
    start_notifier, topic, caster, collect, webhook
):
    versioned = f"versioned_{uuid.uuid4().hex[:8]}"
    collector = collect([versioned])
    notifier = start_notifier(
        topic,
        default={"event_dispatchers": ["database", "message"], "host": "notifier-1"},
        alarm={"rest_notifier_max_retries": 0},
        extra={"notifications": {"versioned_notifications_topics": versioned}},
    )
    cast_alarm(caster, topic, [webhook.url("ok")], "8d2e4b5a-sample-end")
    cast_alarm(caster, topic, [webhook.url("status/404")], "8d2e4b5a-sample-error")
    got = collector.wait(2)
    by_type = {n["event_type"]: n for n in got}
    assert set(by_type) == {"alarm_action.deliver.end", "alarm_action.deliver.error"}, got
    for event_type, name in (
        ("alarm_action.deliver.end", "alarm_action-deliver-end"),
        ("alarm_action.deliver.error", "alarm_action-deliver-error"),
    ):
        emitted, expected = by_type[event_type], sample(name)
        assert emitted["publisher_id"] == expected["publisher_id"] == "ceilo-notifier:notifier-1"
        assert emitted["priority"] == expected["priority"]
        assert set(emitted["payload"]["ceilo_notifier_object.data"]) == set(
            expected["payload"]["ceilo_notifier_object.data"]
        )
        assert strip_volatile(emitted["payload"]) == strip_volatile(expected["payload"])
    assert notifier.alive()


def test_unversioned_and_both_formats(start_notifier, topic, caster, collect, webhook):
    versioned, legacy = (f"{n}_{uuid.uuid4().hex[:8]}" for n in ("v", "legacy"))
    collector = collect([versioned, legacy])
    start_notifier(
        topic,
        default={"event_dispatchers": ["message"]},
        extra={
            "notifications": {
                "versioned_notifications_topics": versioned,
                "notification_format": "both",
            },
            "oslo_messaging_notifications": {"topics": legacy},
        },
    )
    cast_alarm(caster, topic, [webhook.url("ok")], "both-formats")
    got = collector.wait(2)
    payload_kinds = sorted("ceilo_notifier_object.name" in n["payload"] for n in got)
    assert payload_kinds == [False, True]
    plain = next(n["payload"] for n in got if "ceilo_notifier_object.name" not in n["payload"])
    assert plain["alarm_id"] == "both-formats" and plain["outcome"] == "delivered"


def test_a_filtered_consumer_gets_only_its_event_type_and_every_pool_gets_a_copy(
    start_notifier, topic, caster, collect, webhook
):
    versioned = f"versioned_{uuid.uuid4().hex[:8]}"
    errors_only = collect([versioned], pool="errors", event_type=r"^alarm_action\.deliver\.error$")
    audit_a = collect([versioned], pool="audit-a")
    audit_b = collect([versioned], pool="audit-b")
    start_notifier(
        topic,
        default={"event_dispatchers": ["message"]},
        alarm={"rest_notifier_max_retries": 0},
        extra={"notifications": {"versioned_notifications_topics": versioned}},
    )
    cast_alarm(caster, topic, [webhook.url("ok"), webhook.url("status/410")], "pools")
    assert len(audit_a.wait(2)) == 2 and len(audit_b.wait(2)) == 2
    (only,) = errors_only.wait(1)
    assert only["event_type"] == "alarm_action.deliver.error"
    assert only["payload"]["ceilo_notifier_object.data"]["status_code"] == 410
