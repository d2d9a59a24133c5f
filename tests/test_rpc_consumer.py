"""The RPC consumer on a real broker: casts handled in batches, calls answered."""

from __future__ import annotations

import time
import uuid

import oslo_messaging
import pytest

from ceilo_notifier import rpc
from ceilo_notifier.consumers import rpc as rpc_consumer
from tests.conftest import Run
from tests.helpers import (
    alarm,
    assert_one_line_each,
    publish_raw,
    queue_counts,
    queues_drained,
    wait_until,
)


@pytest.fixture
def consumer(make_conf, rabbit_url, topic):
    """Start and stop RPC servers of one host on the test's topic; records the batch
    sizes the endpoint is handed."""
    conf = make_conf(topic, transport_url=rabbit_url, alarm={"rest_notifier_timeout": 2})
    conf.set_override("host", f"consumer-{uuid.uuid4().hex[:6]}")
    run = Run(conf)
    batches: list[int] = []
    handle_many = run.endpoint.handle_many

    def recorded(batch, strict=False, message_ids=None):
        batches.append(len(batch))
        return handle_many(batch, strict, message_ids)

    run.endpoint.handle_many = recorded
    transport = rpc.get_transport(conf)
    servers = []

    class Consumer:
        def __init__(self):
            self.run, self.batches, self.conf, self.transport = run, batches, conf, transport

        def start(self):
            server = rpc_consumer.get_server(
                transport, rpc.get_target(conf, server=conf.host), run.endpoint
            )
            server.start()
            servers.append(server)
            return server

        def stop(self, server):
            server.stop()
            server.wait()
            servers.remove(server)

    yield Consumer()
    for server in servers:
        server.stop()
        server.wait()
    run.engine.stop()
    transport.cleanup()


def test_casts_waiting_in_the_queue_are_accepted_and_acknowledged_in_batches(
    consumer, caster, topic, webhook
):
    consumer.stop(consumer.start())  # the queues exist, nobody consumes them
    client = caster(topic)
    urls = [webhook.url("ok") for _ in range(120)]
    for i, url in enumerate(urls):
        client.cast(alarm([url], alarm_id=f"batched-{i}"))
    server = consumer.start()
    for url in urls:
        assert webhook.wait_for(url), url
    # Acknowledged: a server that starts after this one stopped gets none again.
    consumer.stop(server)
    consumer.start()
    time.sleep(1)
    assert [len(webhook.requests_for(url)) for url in urls] == [1] * 120
    assert sum(consumer.batches) == 120
    # Taken together, at most batch_size at a time, not one by one.
    assert max(consumer.batches) > 1, consumer.batches
    assert max(consumer.batches) <= consumer.conf.alarm.batch_size
    assert len(consumer.batches) < 120 / 2, consumer.batches


def test_transitions_of_one_alarm_in_one_batch_reach_the_receiver_in_order(
    consumer, caster, topic, webhook
):
    consumer.stop(consumer.start())
    client = caster(topic)
    url = webhook.url("ok")
    states = ["alarm", "ok", "alarm", "ok", "alarm"]
    previous = "insufficient data"
    for state in states:
        client.cast(alarm([url], alarm_id="flapping", previous=previous, current=state))
        previous = state
    consumer.start()
    assert wait_until(lambda: len(webhook.requests_for(url)) >= len(states), 10)
    assert [r.json()["current"] for r in webhook.requests_for(url)] == states
    assert max(consumer.batches) > 1, consumer.batches


def test_a_notify_alarm_call_is_answered(consumer, webhook):
    consumer.start()
    client = oslo_messaging.get_rpc_client(
        consumer.transport, rpc.get_target(consumer.conf), timeout=10
    )
    url = webhook.url("ok")
    assert client.call({}, "notify_alarm", data=alarm([url], alarm_id="called")) is None
    assert webhook.wait_for(url)


def test_batch_timeout_zero_does_not_wait_for_a_full_batch(start_notifier, caster, topic, webhook):
    """0 means "do not wait": a lone cast is not held back until 100 others come."""
    start_notifier(topic, alarm={"batch_size": 100, "batch_timeout": 0})
    url = webhook.url("ok")
    started = time.monotonic()
    caster(topic).cast(alarm([url], alarm_id="lone-cast"))
    assert webhook.wait_for(url, timeout=5), "a lone cast waited for a full batch"
    assert time.monotonic() - started < 5


def _cast(data: object, **fields) -> dict:
    """A notify_alarm cast as oslo.messaging's RPC client writes it, fields replaced."""
    body = {"method": "notify_alarm", "namespace": None, "version": "1.0", "args": {"data": data}}
    return {**body, "_unique_id": uuid.uuid4().hex, **fields}


def test_each_unreadable_cast_is_one_line_and_its_neighbours_go_on(
    start_notifier, caster, topic, webhook, rabbit_url
):
    """Bad casts in the middle of a batch: each is logged and acknowledged alone."""
    start_notifier(topic).stop()  # the queues exist, nobody consumes them
    urls = [webhook.url("ok") for _ in range(6)]
    bad = {
        "args is a list, not a dict": _cast(None, args=[1]),
        "data is a int, not a dict": _cast(5),
        "version is not a version number": _cast(alarm([urls[0]], alarm_id="bad-v"), version=7),
    }
    messages = [_cast(alarm([url], alarm_id=f"good-{i}")) for i, url in enumerate(urls[1:4])]
    messages[1:1] = list(bad.values())
    messages.insert(3, [1, 2])  # not even a dict
    publish_raw(rabbit_url, "openstack", topic, messages)
    client = caster(topic)
    for i, url in enumerate(urls[4:]):
        client.cast(alarm([url], alarm_id=f"cast-{i}"))

    started = time.monotonic()
    notifier = start_notifier(topic, alarm={"batch_size": 50})
    for url in urls[1:]:
        assert webhook.wait_for(url, timeout=10), url
    assert time.monotonic() - started < 15
    assert webhook.requests_for(urls[0]) == []  # the cast of unknown version is not delivered
    log = notifier.log()
    assert_one_line_each(log, [*bad, "the message is not a dict"])
    assert "Alarm bad-v: cast rejected: version is not a version number" in log
    # Nothing is left in the queues, acknowledged or not.
    assert queues_drained(rabbit_url, topic), queue_counts(rabbit_url, topic)
    assert notifier.alive()
