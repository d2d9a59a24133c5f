"""An aodh.conf as it is: aodh's option spellings take effect in the real service.

aodh keeps its notifier options in ``[DEFAULT]`` (``rest_notifier_*``,
``notifier_topic``) and ``[notifier]`` (``workers``, ``batch_size``,
``batch_timeout``); ceilo-notifier accepts them as deprecated names of its own
options. Each test runs the ``ceilo-notifier`` process on a config file written
as aodh operators write it, with only ``[alarm] notification_listener = true``
added (and the ceilo-only knobs that keep the tests quick and let them reach
webhooks on loopback), and checks what a user would notice: the attempts a
webhook gets, TLS verification with a CA bundle or without verification, the
client certificate a webhook sees, the worker processes, the alarm.update
notifications consumed on aodh's topic. Where both spellings are set,
ceilo-notifier's own wins. The generated sample config names every aodh spelling.
"""

from __future__ import annotations

import re
import uuid

import pytest
from oslo_config import cfg

from ceilo_notifier import opts
from tests import helpers
from tests.conftest import LOOPBACK
from tests.helpers import ROOT, NotifierProcess, alarm, write_config

SAMPLE = ROOT / "etc/ceilo-notifier/ceilo-notifier.conf.sample"

# aodh's (group, name) -> the group of ceilo-notifier's option of that name
AODH_SPELLINGS = [
    ("DEFAULT", "rest_notifier_certificate_file", "alarm"),
    ("DEFAULT", "rest_notifier_certificate_key", "alarm"),
    ("DEFAULT", "rest_notifier_ca_bundle_certificate_path", "alarm"),
    ("DEFAULT", "rest_notifier_ssl_verify", "alarm"),
    ("DEFAULT", "rest_notifier_max_retries", "alarm"),
    ("DEFAULT", "notifier_topic", "alarm"),
    ("notifier", "workers", "DEFAULT"),
    ("notifier", "batch_size", "alarm"),
    ("notifier", "batch_timeout", "alarm"),
]


def aodh_conf(path, rabbit_url, rpc_topic, default=None, notifier=None, alarm_opts=None):
    """An aodh.conf (aodh's groups, options ceilo-notifier does not know included)."""
    tag = uuid.uuid4().hex[:6]
    sections = {
        "DEFAULT": {
            "transport_url": rabbit_url,
            "host": f"aodh-{tag}",
            "evaluation_interval": 60,  # aodh's evaluator's: ignored here
            "state_path": path.parent,
            "shutdown_grace_period": 5,
            "graceful_shutdown_timeout": 20,
            **(default or {}),
        },
        "notifier": dict(notifier or {}),
        "evaluator": {"workers": 3},  # aodh's other services: not ours
        "listener": {"workers": 3},
        "oslo_messaging_notifications": {"driver": "messagingv2"},
        "database": {"connection": f"sqlite:///{path.parent}/journal-{tag}.sqlite"},
        "alarm": {
            "notification_listener": True,
            # ceilo-only: a topic of this test, quick retries, loopback webhooks
            "notifier_rpc_topic": rpc_topic,
            "rest_notifier_timeout": 2,
            "rest_notifier_retry_backoff": 0.05,
            "rest_notifier_allowed_networks": LOOPBACK,
            **(alarm_opts or {}),
        },
    }
    return write_config(path, sections)


def load(config_path) -> cfg.ConfigOpts:
    """The options as the service reads them from that file."""
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf(["--config-file", str(config_path)], project="ceilo-notifier", default_config_files=[])
    return conf


def outcome(proc, alarm_id, text, timeout=15.0):
    """Wait for the outcome log line of one alarm (written just after the webhook is hit)."""
    pattern = rf"Alarm {re.escape(alarm_id)}{text}"
    assert proc.wait_for_log(pattern, timeout), proc.log()[-3000:]
    return re.search(pattern + r".*", proc.log())[0]


class AodhService:
    def __init__(self, proc, config, rpc_topic, aodh_topic):
        self.proc = proc
        self.config = config
        self.rpc_topic = rpc_topic
        self.aodh_topic = aodh_topic


@pytest.fixture(scope="module")
def aodh(tmp_path_factory, rabbit_url, tls):
    """One service on an aodh.conf: CA bundle, client certificate, retries, topic, workers."""
    d = tmp_path_factory.mktemp("aodh")
    rpc_topic = f"alarm_notifier_{uuid.uuid4().hex[:10]}"
    aodh_topic = f"alarming_{uuid.uuid4().hex[:10]}"
    config = aodh_conf(
        d / "aodh.conf",
        rabbit_url,
        rpc_topic,
        default={
            "rest_notifier_ca_bundle_certificate_path": tls.ca_path,
            "rest_notifier_certificate_file": tls.client_cert_path,
            "rest_notifier_certificate_key": tls.client_key_path,
            "rest_notifier_max_retries": 2,
            "notifier_topic": aodh_topic,
        },
        notifier={"workers": 2, "batch_size": 7, "batch_timeout": 0.3},
    )
    proc = NotifierProcess(config, d / "aodh.log")
    try:
        proc.wait_ready(workers=2)  # [notifier] workers = 2
        yield AodhService(proc, config, rpc_topic, aodh_topic)
    finally:
        proc.stop(timeout=20)


@pytest.fixture
def start_aodh(tmp_path, rabbit_url, topic):
    """Start the service on an aodh.conf of this test (one process, unless told)."""
    started = []

    def start(**sections):
        config = aodh_conf(tmp_path / f"aodh-{len(started)}.conf", rabbit_url, topic, **sections)
        proc = NotifierProcess(config, tmp_path / f"aodh-{len(started)}.log")
        started.append(proc)
        proc.config = config
        proc.wait_ready()
        return proc

    yield start
    for proc in started:
        proc.stop(timeout=20)


def test_the_options_are_read_from_aodhs_groups(aodh, tls):
    conf = load(aodh.config)
    assert conf.workers == 2
    assert conf.alarm.batch_size == 7
    assert conf.alarm.batch_timeout == 0.3
    assert conf.alarm.notifier_topic == aodh.aodh_topic
    assert conf.alarm.rest_notifier_max_retries == 2
    assert conf.alarm.rest_notifier_ca_bundle_certificate_path == str(tls.ca_path)
    assert conf.alarm.rest_notifier_certificate_file == str(tls.client_cert_path)
    assert conf.alarm.rest_notifier_certificate_key == str(tls.client_key_path)


def test_notifier_workers_start_that_many_worker_processes(aodh):
    assert len(helpers.children(aodh.proc.proc.pid)) == 2, aodh.proc.log()[-3000:]
    ready = re.findall(r" (\d+) INFO \S+ \[-\] ceilo-notifier consuming topic", aodh.proc.log())
    assert len(set(ready)) == 2, ready


def test_default_max_retries_bounds_the_attempts(aodh, caster, webhook):
    url = webhook.url("status/503")
    caster(aodh.rpc_topic).cast(alarm([url], alarm_id="aodh-retries"))
    line = outcome(aodh.proc, "aodh-retries", r": delivery to .* failed after \d+ attempt")
    assert "failed after 3 attempt(s)" in line
    assert len(webhook.requests_for(url)) == 3


def test_ca_bundle_verifies_an_https_webhook(aodh, caster, https_webhook):
    url = https_webhook.url("ok")
    caster(aodh.rpc_topic).cast(alarm([url], alarm_id="aodh-ca-bundle"))
    outcome(aodh.proc, "aodh-ca-bundle", r" delivered to ")
    assert len(https_webhook.requests_for(url)) == 1


def test_client_certificate_and_key_are_presented(aodh, caster, mtls_webhook):
    url = mtls_webhook.url("ok")
    caster(aodh.rpc_topic).cast(alarm([url], alarm_id="aodh-client-cert"))
    outcome(aodh.proc, "aodh-client-cert", r" delivered to ")
    (request,) = mtls_webhook.requests_for(url)
    assert ("email", "ceilo-notifier-client@example.org") in request.client_cert["subjectAltName"]


def test_alarm_updates_on_aodhs_notifier_topic_are_delivered(aodh, aodh_evaluator, webhook):
    assert (
        f"Listening for alarm.update notifications on exchange aodh, topic {aodh.aodh_topic}"
        in aodh.proc.log()
    )
    url = webhook.url("ok")
    payload = aodh_evaluator(aodh.aodh_topic)([url], "aodh-topic")
    (request,) = webhook.wait_for(url)
    assert request.json() == {k: v for k, v in payload.items() if k != "actions"}
    outcome(aodh.proc, "aodh-topic", r" delivered to ")


def test_ssl_verify_false_delivers_without_a_ca_bundle(start_aodh, caster, topic, https_webhook):
    proc = start_aodh(default={"rest_notifier_ssl_verify": False})
    assert load(proc.config).alarm.rest_notifier_ssl_verify is False
    url = https_webhook.url("ok")
    caster(topic).cast(alarm([url], alarm_id="aodh-no-verify"))
    outcome(proc, "aodh-no-verify", r" delivered to ")
    assert len(https_webhook.requests_for(url)) == 1


def test_ceilo_spellings_win_and_without_trust_https_fails(
    start_aodh, caster, topic, webhook, https_webhook
):
    proc = start_aodh(
        default={"rest_notifier_max_retries": 5, "workers": 1},
        notifier={"workers": 2},
        alarm_opts={"rest_notifier_max_retries": 1},
    )
    conf = load(proc.config)
    assert (conf.workers, conf.alarm.rest_notifier_max_retries) == (1, 1)
    client = caster(topic)

    # [DEFAULT] workers = 1 over [notifier] workers = 2: the service runs in one process.
    assert helpers.children(proc.proc.pid) == []
    assert proc.log().count("ceilo-notifier consuming topic") == 1

    # [alarm] rest_notifier_max_retries = 1 over [DEFAULT] ... = 5: two attempts.
    url = webhook.url("status/503")
    client.cast(alarm([url], alarm_id="aodh-precedence"))
    line = outcome(proc, "aodh-precedence", r": delivery to .* failed after \d+ attempt")
    assert "failed after 2 attempt(s)" in line
    assert len(webhook.requests_for(url)) == 2

    # Neither a CA bundle nor verification off: the test CA is not trusted.
    url = https_webhook.url("ok")
    client.cast(alarm([url], alarm_id="aodh-untrusted"))
    line = outcome(proc, "aodh-untrusted", r": delivery to .* failed after \d+ attempt")
    assert "TLS error" in line and "certificate" in line.lower(), line
    assert https_webhook.requests_for(url) == []


def sample_sections() -> dict[str, str]:
    parts = re.split(r"^\[(\w+)\]$", SAMPLE.read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize(("group", "name", "own_group"), AODH_SPELLINGS)
def test_the_sample_names_each_aodh_spelling(group, name, own_group):
    line = f"# Deprecated group/name - [{group}]/{name}\n#{name} ="
    assert line in sample_sections()[own_group]
