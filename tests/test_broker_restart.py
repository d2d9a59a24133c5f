"""Broker restarts, on a RabbitMQ node of these tests' own (the shared one is never touched)."""

from __future__ import annotations

import shutil
import uuid

import pytest

from tests.helpers import alarm

pytestmark = pytest.mark.skipif(
    shutil.which("rabbitmq-server") is None and shutil.which("rabbitmqctl") is None,
    reason="RabbitMQ server scripts are not installed",
)

QUORUM = {"rabbit_quorum_queue": True, "rabbit_transient_quorum_queue": True}


@pytest.fixture(scope="module")
def _module_node(tmp_path_factory):
    """One node for the module (starting one takes seconds): each test has a vhost
    of its own on it and restarts it itself."""
    from bench.rabbit import OwnNode

    node = OwnNode(tmp_path_factory.mktemp("rabbit-node"))
    try:
        node.start()
        yield node
    finally:
        node.__exit__(None, None, None)


@pytest.fixture
def own_node(_module_node):
    if not _module_node.running:  # a test before this one failed in its restart
        _module_node.start()
    return _module_node


@pytest.mark.parametrize("queues", ["default", "quorum"])
def test_consumers_reconnect_and_casts_after_the_restart_are_delivered(
    own_node, start_notifier, make_conf, topic, webhook, queues
):
    from ceilo_notifier import rpc

    url = own_node.add_vhost(f"restart-{uuid.uuid4().hex[:6]}")
    rabbit = QUORUM if queues == "quorum" else {}
    notifier = start_notifier(
        topic, default={"transport_url": url}, extra={"oslo_messaging_rabbit": rabbit}
    )
    conf = make_conf(topic, transport_url=url)
    for key, value in rabbit.items():  # the casting side must match the service
        conf.set_override(key, value, group="oslo_messaging_rabbit")
    client = rpc.RPCAlarmNotifier(conf)
    try:
        before = webhook.url("ok")
        client.cast(alarm([before], alarm_id="before-restart"))
        assert webhook.wait_for(before)

        own_node.restart()
        if queues == "default":
            # Transient queues are gone with the broker: casts count only once
            # the service has declared its queues again.
            assert notifier.wait_for_log(r"Reconnected to AMQP server", timeout=60)
        after = [webhook.url("ok") for _ in range(5)]
        for i, target in enumerate(after):
            client.cast(alarm([target], alarm_id=f"after-restart-{i}"))
        for target in after:
            assert len(webhook.wait_for(target, timeout=60)) == 1, notifier.log()[-3000:]
        assert notifier.alive()
    finally:
        client.close()
