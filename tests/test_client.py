"""The client library as an alarm evaluator uses it (SPEC 7).

The evaluator builds its own ConfigOpts from its own config file and knows
nothing of ceilo-notifier's options: ``RPCAlarmNotifier`` registers what it
reads (the RPC topic, oslo.messaging's transport options) itself.
"""

from __future__ import annotations

import types
import uuid

from oslo_config import cfg

from ceilo_notifier import rpc
from tests import helpers


def evaluator_conf(tmp_path, sections) -> cfg.ConfigOpts:
    """A ConfigOpts as an evaluator has it: its own file parsed, no option of ours registered."""
    path = helpers.write_config(tmp_path / "evaluator.conf", sections)
    conf = cfg.ConfigOpts()
    conf(["--config-file", str(path)], project="my-evaluator", default_config_files=[])
    return conf


def test_an_evaluator_with_its_own_config_casts_without_registering_anything(
    tmp_path, start_notifier, topic, rabbit_url, webhook
):
    start_notifier(topic)
    conf = evaluator_conf(
        tmp_path,
        {"DEFAULT": {"transport_url": rabbit_url}, "alarm": {"notifier_rpc_topic": topic}},
    )
    notifier = rpc.RPCAlarmNotifier(conf)
    try:
        url = webhook.url(f"client-{uuid.uuid4().hex}")
        alarm = types.SimpleNamespace(
            alarm_id=str(uuid.uuid4()),
            name="cpu high",
            severity="critical",
            state="alarm",
            alarm_actions=[url],
            ok_actions=[],
            insufficient_data_actions=[],
        )
        assert notifier.notify(alarm, "ok", "cpu > 90%", {"type": "threshold"}) is True
        (request,) = webhook.wait_for(url, timeout=20)
        body = request.json()
        assert body["alarm_id"] == alarm.alarm_id
        assert (body["alarm_name"], body["previous"], body["current"]) == (
            "cpu high",
            "ok",
            "alarm",
        )
        # Nothing is cast for a state without actions.
        alarm.state = "ok"
        assert notifier.notify(alarm, "alarm", "back to normal", None) is False
    finally:
        notifier.close()


def test_the_client_registers_only_what_it_reads_and_twice_is_harmless(tmp_path, rabbit_url):
    conf = evaluator_conf(tmp_path, {"DEFAULT": {"transport_url": rabbit_url}})
    rpc.register_client_opts(conf)
    rpc.register_client_opts(conf)
    assert conf.alarm.notifier_rpc_topic == "alarm_notifier"
    assert conf.transport_url == rabbit_url
    # The service's own options stay out of the evaluator's configuration.
    assert "rest_notifier_max_retries" not in conf.alarm
