"""The service end to end: a real RabbitMQ, a real notifier process, real webhooks."""

from __future__ import annotations

import dataclasses
import re
import signal
import time
import uuid

import pytest

from tests import helpers
from tests.conftest import notifier_sections
from tests.helpers import alarm


@pytest.fixture
def notifier(start_notifier, topic):
    return start_notifier(topic, alarm={"rest_notifier_max_retries": 1})


@dataclasses.dataclass
class Shared:
    notifier: helpers.NotifierProcess
    topic: str


@pytest.fixture(scope="module")
def shared(tmp_path_factory, rabbit_url):
    """The ``notifier`` above, one for the tests that only cast to it and read the log
    lines of their own alarms: starting and stopping a service takes seconds. Its
    configuration is start_notifier's."""
    d = tmp_path_factory.mktemp("shared-notifier")
    topic = f"alarm_notifier_{uuid.uuid4().hex[:10]}"
    sections = notifier_sections(
        rabbit_url,
        topic,
        alarm={"rest_notifier_max_retries": 1},
        extra={"database": {"connection": f"sqlite:///{d}/notifier-journal.sqlite"}},
    )
    config = helpers.write_config(d / "notifier.conf", sections)
    proc = helpers.NotifierProcess(config, d / "notifier.log")
    try:
        proc.wait_ready()
        yield Shared(proc, topic)
    finally:
        proc.stop(timeout=20)


def test_ceilometer_2014_cast_is_delivered_with_documented_body_and_headers(
    shared, caster, webhook
):
    topic = shared.topic
    url = webhook.url("ok")
    data = alarm([url])
    caster(topic).cast(data)
    (request,) = webhook.wait_for(url)
    assert request.json() == {
        "alarm_id": data["alarm_id"],
        "alarm_name": None,
        "severity": None,
        "previous": "ok",
        "current": "alarm",
        "reason": data["reason"],
        "reason_data": data["reason_data"],
    }
    assert request.headers["content-type"] == "application/json"
    assert re.fullmatch(r"req-[0-9a-f-]{36}", request.headers["x-openstack-request-id"])
    assert re.fullmatch(r"ceilo-notifier/\S+", request.headers["user-agent"])


def test_client_library_picks_the_actions_of_the_new_state(shared, caster, webhook):
    topic = shared.topic
    alarm_url, ok_url = webhook.url("ok"), webhook.url("ok")
    model = {
        "alarm_id": "lib-1",
        "name": "cpu high",
        "severity": "critical",
        "state": "ok",
        "alarm_actions": [alarm_url],
        "ok_actions": [ok_url],
        "insufficient_data_actions": [],
    }
    client = caster(topic)
    assert client.notify(model, "alarm", "back to normal", {"n": 1}) is True
    (request,) = webhook.wait_for(ok_url)
    assert request.json()["alarm_name"] == "cpu high"
    assert request.json()["severity"] == "critical"
    assert request.json()["current"] == "ok" and request.json()["previous"] == "alarm"
    assert webhook.requests_for(alarm_url) == []
    assert client.notify({**model, "state": "insufficient data"}, "ok", "no data", {}) is False


def test_host_topic_reaches_one_instance_and_fanout_reaches_all(
    start_notifier, topic, caster, webhook
):
    first = start_notifier(topic, name="one")
    second = start_notifier(topic, name="two")
    client = caster(topic)

    url = webhook.url("ok")
    client.cast(alarm([url], alarm_id="to-second"), server=second.host)
    webhook.wait_for(url)
    assert second.wait_for_log(r"Alarm to-second delivered", timeout=5)
    time.sleep(0.5)
    assert "to-second" not in first.log()
    assert len(webhook.requests_for(url)) == 1

    url = webhook.url("ok")
    client.cast(alarm([url], alarm_id="to-all"), fanout=True)
    assert len(webhook.wait_for(url, count=2)) == 2
    # Each log line follows its delivery shortly (it is written with its event).
    assert first.wait_for_log(r"Alarm to-all delivered", timeout=5)
    assert second.wait_for_log(r"Alarm to-all delivered", timeout=5)


def test_ceilometer_control_exchange_works_unchanged(start_notifier, topic, caster, webhook):
    start_notifier(topic, default={"control_exchange": "ceilometer"})
    url = webhook.url("ok")
    caster(topic, control_exchange="ceilometer").cast(alarm([url]))
    assert len(webhook.wait_for(url)) == 1


BAD_INPUTS = [
    ("not-a-dict", "a string", r"Alarm <unknown>: notification rejected: data is a str"),
    ("no-actions", {"alarm_id": "bad-no-actions"}, r"Alarm bad-no-actions: .*no actions"),
    (
        "empty-actions",
        {"alarm_id": "bad-empty", "actions": []},
        r"Alarm bad-empty: .*actions is an empty list",
    ),
    (
        "actions-not-list",
        {"alarm_id": "bad-str", "actions": "http://x/"},
        r"Alarm bad-str: .*actions is a str, not a list",
    ),
]


def test_bad_casts_are_rejected_with_one_line_and_the_service_carries_on(shared, caster, webhook):
    notifier, topic = shared.notifier, shared.topic
    client = caster(topic)
    for _, data, _ in BAD_INPUTS:
        client.cast(data)
    url = webhook.url("ok")
    client.cast(alarm([url]))
    assert webhook.wait_for(url)
    for name, _, pattern in BAD_INPUTS:  # casts are handled in parallel
        assert notifier.wait_for_log(pattern, 10), (name, notifier.log())
    time.sleep(0.5)
    log = notifier.log()
    for name, _, pattern in BAD_INPUTS:
        assert len(re.findall(pattern, log)) == 1, (name, log)
    assert "Traceback" not in log
    assert notifier.alive()


def test_bad_actions_do_not_stop_the_other_actions_of_the_alarm(shared, caster, webhook):
    notifier, topic = shared.notifier, shared.topic
    good = webhook.url("ok")
    refused = "http://127.0.0.1:9/closed-port"
    erroring = webhook.url("status/500")
    actions = [
        42,
        "http://[::1:bad/",
        "nosuch://x/",
        refused,
        erroring,
        "http://user:pw-s3cr3t@",
        good,
    ]
    data = alarm(actions, alarm_id="bad-actions")
    caster(topic).cast(data)
    (request,) = webhook.wait_for(good)
    assert request.json()["alarm_id"] == "bad-actions"
    assert notifier.wait_for_log(
        r"Alarm bad-actions: delivery to http://127.0.0.1:9/closed-port "
        r"failed after 2 attempt\(s\)"
    )
    assert notifier.wait_for_log(
        r"Alarm bad-actions: delivery to http://127.0.0.1:\d+/status/500/"
        r"\w+ failed after 2 attempt\(s\): HTTP 500"
    )
    log = notifier.log()
    assert re.search(
        r"Alarm bad-actions: action 42 dropped: action is of type int, not a string", log
    )
    assert re.search(r"Alarm bad-actions: action http://\[::1:bad/ dropped: unparsable URL", log)
    assert re.search(r"Alarm bad-actions: action nosuch://x/ dropped: unknown scheme 'nosuch'", log)
    assert "pw-s3cr3t" not in log
    assert notifier.alive()


def test_oversized_fields_are_logged_truncated_and_delivered(
    start_notifier, topic, caster, webhook
):
    notifier = start_notifier(topic, alarm={"max_field_length": 100, "max_reason_data_size": 200})
    url = webhook.url("ok")
    caster(topic).cast(
        alarm([url], alarm_id="big-fields", reason="x" * 500, reason_data={"blob": "y" * 1000})
    )
    (request,) = webhook.wait_for(url)
    body = request.json()
    assert body["reason"] == "x" * 100
    assert body["reason_data"] == {}
    log = notifier.log()
    assert re.search(
        r"Alarm big-fields: field reason is 500 characters long, truncated to 100", log
    )
    assert re.search(r"Alarm big-fields: reason_data is \d+ bytes of JSON, more than 200", log)


def test_basic_auth_is_sent_and_the_password_never_logged_even_at_debug(
    start_notifier, topic, caster, webhook
):
    notifier = start_notifier(topic, debug=True)
    url = webhook.url("ok", userinfo="alice:s3cr3t-Pa55")
    tokened = webhook.url("ok", query="token=T0ken-Value&team=db")
    caster(topic).cast(alarm([tokened], alarm_id="auth-token"))
    caster(topic).cast(
        alarm([url, webhook.url("status/503", userinfo="bob:0ther-Pa55")], alarm_id="auth")
    )
    (request,) = webhook.wait_for(url)
    assert request.headers["authorization"] == "Basic YWxpY2U6czNjcjN0LVBhNTU="
    assert notifier.wait_for_log(r"Alarm auth: delivery to http://bob:\*\*\*@.* failed after")
    assert webhook.wait_for(tokened)[0].query == {"token": ["T0ken-Value"], "team": ["db"]}
    assert notifier.wait_for_log(r"Alarm auth-token delivered to http://\S+\?token=\*\*\*&team=db")
    log = notifier.log()
    assert " DEBUG " in log
    assert "s3cr3t-Pa55" not in log and "0ther-Pa55" not in log and "T0ken-Value" not in log
    assert "YWxpY2U6czNjcjN0LVBhNTU" not in log


def test_a_hung_webhook_delays_only_itself(start_notifier, topic, caster, webhook):
    start_notifier(
        topic,
        # The hung delivery is still running when the test ends: the service
        # gives it 1 s, not 5, when it is stopped afterwards.
        default={"shutdown_grace_period": 1},
        alarm={
            "rest_notifier_timeout": 5,
            "rest_notifier_max_retries": 0,
            "per_host_concurrency": 4,
            "dispatch_pool_size": 16,
        },
    )
    client = caster(topic)
    hung_host = webhook  # same server, but /hang never answers
    good = webhook.url("ok")
    start = time.monotonic()
    client.cast(alarm([hung_host.url("hang"), good], alarm_id="hung-beside-good"))
    webhook.wait_for(good, timeout=5)
    assert webhook.requests_for(good)[0].received - start < 2.0  # the hung one takes 5 s


def test_many_alarms_to_a_hung_webhook_do_not_exhaust_the_pool(
    request, start_notifier, topic, caster, webhook
):
    # The hung receiver is a host of its own: another address, since deliveries
    # to one address share its slots whatever the port.
    hung = helpers.Webhook(host="127.0.0.2")
    request.addfinalizer(hung.close)
    notifier = start_notifier(
        topic,
        alarm={
            "rest_notifier_timeout": 8,
            "rest_notifier_max_retries": 0,
            "rest_notifier_ssl_verify": False,
            "per_host_concurrency": 4,
            "dispatch_pool_size": 16,
        },
    )
    client = caster(topic)
    for i in range(40):
        client.cast(alarm([hung.url("hang")], alarm_id=f"hung-{i}"))
    time.sleep(0.5)
    healthy = [webhook.url("ok") for _ in range(10)]
    start = time.monotonic()
    for i, url in enumerate(healthy):
        client.cast(alarm([url], alarm_id=f"healthy-{i}"))
    for url in healthy:
        assert webhook.wait_for(url, timeout=3), notifier.log()[-3000:]
    latest = max(webhook.requests_for(url)[0].received for url in healthy)
    assert latest - start < 2.0


def test_sigterm_stops_cleanly_with_exit_code_zero(notifier):
    assert notifier.stop(signal.SIGTERM) == 0
    assert "ceilo-notifier stopped" in notifier.log()


def test_https_webhook_verified_with_the_configured_ca_bundle(
    start_notifier, topic, caster, https_webhook, tls
):
    start_notifier(topic, alarm={"rest_notifier_ca_bundle_certificate_path": tls.ca_path})
    url = https_webhook.url("ok")
    caster(topic).cast(alarm([url]))
    assert len(https_webhook.wait_for(url)) == 1
