"""Payload templates: built-ins and operators' own, delivered to a real receiver
by the in-process engine; the sandbox, the deadline, the memory cap and the
size bound; a template name checked at intake and in ``validate``."""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import time
from urllib import parse

import pytest
from oslo_config import cfg

from ceilo_notifier import actions, events, opts, templates
from ceilo_notifier.notification import AlarmNotification
from tests.conftest import LOOPBACK, Run

OPERATOR_TEMPLATES = {
    "fields.json.j2": (
        '{"name": {{ alarm_name|tojson }}, "reason": {{ reason|tojson }}, '
        '"data": {{ reason_data|tojson }}, "rid": {{ request_id|tojson }}, '
        '"at": {{ timestamp|tojson }}}'
    ),
    "plain.txt.j2": "{{ alarm_name }} is {{ current }}: {{ reason }}",
    "raises.txt.j2": "{{ 1 / (reason_data|length) }}",
    "huge.txt.j2": "{% for i in range(100000) %}0123456789{% endfor %}",
    "invalid.json.j2": '{"name": {{ alarm_name }}}',
    "escape.txt.j2": "{{ cycler.__init__.__globals__ }}",
    "mro.txt.j2": "{{ ''.__class__.__mro__ }}",
    "runaway.txt.j2": (
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    ),
    "memory.txt.j2": (
        '{% set ns = namespace(s="x") %}{% for i in range(40) %}'
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}"
    ),
    "undefined.txt.j2": "{{ alarm_nmae }}",
}

HOSTILE = 'q"uote \\back\\slash\nnew line {{ 7*7 }} {% raw %} </script> \x01\x1b[31m \u2028 é'


def write_templates(folder, files):
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def make_conf(tmp_path, alarm=None, **template_opts):
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf([], project="ceilo-notifier", default_config_files=[])
    conf.set_override("state_path", str(tmp_path))
    conf.set_override("rest_notifier_allowed_networks", LOOPBACK.split(","), group="alarm")
    settings = {"rest_notifier_timeout": 3, "rest_notifier_retry_backoff": 0.01, **(alarm or {})}
    for key, value in settings.items():
        conf.set_override(key, value, group="alarm")
    for key, value in template_opts.items():
        conf.set_override(key, value, group="templates")
    return conf


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_templates(tmp_path_factory.mktemp("templates"), OPERATOR_TEMPLATES)


@pytest.fixture(scope="module")
def shared(tmp_path_factory, folder):
    """One engine for the tests that need no option of their own."""
    r = Run(make_conf(tmp_path_factory.mktemp("state"), path=str(folder)))
    yield r
    r.engine.stop()


def templated(url, name, extra=""):
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}{extra}{templates.PARAM}={name}"


def body_of(webhook, url):
    (request,) = webhook.requests_for(url)
    return request, json.loads(request.body)


# -- the built-ins, delivered -------------------------------------------------------


def test_each_builtin_is_delivered_in_its_shape_and_the_parameter_is_not_sent(shared, webhook):
    urls = {name: webhook.url("ok", query="keep=1") for name in templates.BUILTINS}
    plain = webhook.url("ok")
    deliveries = shared.deliver(
        [templated(u, n) for n, u in urls.items()] + [plain],
        alarm_id="builtin-shapes",
        alarm_name="cpu high",
        severity="critical",
    )
    assert [d.outcome for d in deliveries] == [events.DELIVERED] * 5
    by_url = {d.action: d for d in deliveries}

    for name, url in urls.items():
        request, body = body_of(webhook, url)
        assert request.query == {"keep": ["1"]}  # the control parameter is removed
        assert request.headers["x-openstack-request-id"] == by_url[templated(url, name)].request_id

    request, slack = body_of(webhook, urls["slack"])
    assert request.headers["content-type"] == "application/json"
    assert "cpu high" in slack["text"]
    (attachment,) = slack["attachments"]
    assert attachment["color"] == "#d62728" and attachment["title"] == "cpu high is alarm"

    _, teams = body_of(webhook, urls["teams"])
    assert teams["type"] == "message"
    (card,) = teams["attachments"]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["type"] == "AdaptiveCard" and card["content"]["version"] == "1.4"
    assert card["content"]["body"][0]["text"] == "cpu high is alarm"

    _, chat = body_of(webhook, urls["googlechat"])
    assert chat["cardsV2"][0]["card"]["header"]["title"] == "cpu high"

    request, event = body_of(webhook, urls["cloudevents"])
    assert request.headers["content-type"] == "application/cloudevents+json"
    assert event["specversion"] == "1.0" and event["source"] == "ceilo-notifier"
    assert event["type"] == "org.openstack.alarm.transition"
    assert event["id"] == request.headers["x-openstack-request-id"]
    assert event["subject"] == "builtin-shapes"
    assert event["datacontenttype"] == "application/json"
    when = datetime.datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
    assert abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) < 60
    # The default body, unchanged (no timestamp in it), is the event's data.
    _, default = body_of(webhook, plain)
    assert event["data"] == default
    assert set(default) == {
        "alarm_id",
        "alarm_name",
        "severity",
        "previous",
        "current",
        "reason",
        "reason_data",
    }


def test_cloudevents_id_and_time_are_the_same_on_a_retry(shared, webhook):
    url = webhook.url("flaky/1/503")
    (d,) = shared.deliver([templated(url, "cloudevents")], alarm_id="ce-retry")
    assert d.outcome == events.DELIVERED
    first, second = webhook.requests_for(url)
    assert first.body == second.body
    assert first.json()["id"] == d.request_id == second.headers["x-openstack-request-id"]


# -- operators' templates and hostile alarm fields ------------------------------------


def test_hostile_fields_arrive_as_typed_in_json_and_in_text(shared, webhook):
    as_json, as_text = webhook.url("ok"), webhook.url("ok")
    reason_data = {"quote": '"', "back": "\\", "code": "{{ 7*7 }}", "nested": [HOSTILE]}
    deliveries = shared.deliver(
        [templated(as_json, "fields"), templated(as_text, "plain")],
        alarm_id="hostile-fields",
        alarm_name=HOSTILE,
        reason=HOSTILE,
        reason_data=reason_data,
    )
    assert [d.outcome for d in deliveries] == [events.DELIVERED] * 2
    request, body = body_of(webhook, as_json)
    assert body["name"] == HOSTILE and body["reason"] == HOSTILE
    assert body["data"] == reason_data
    assert body["rid"] == deliveries[0].request_id
    assert b"</script>" not in request.body  # tojson writes < and > as escapes
    (text,) = webhook.requests_for(as_text)
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.body.decode() == f"{HOSTILE} is alarm: {HOSTILE}"


def test_the_signature_covers_the_rendered_body(tmp_path, folder, webhook):
    standardwebhooks = pytest.importorskip("standardwebhooks")
    secret = f"whsec_{base64.b64encode(os.urandom(24)).decode()}"
    conf = make_conf(tmp_path, {"rest_notifier_signing_keys": [secret]}, path=str(folder))
    r = Run(conf)
    try:
        url = webhook.url("ok")
        (d,) = r.deliver([templated(url, "fields")], alarm_id="signed", alarm_name=HOSTILE)
    finally:
        r.engine.stop()
    assert d.outcome == events.DELIVERED
    (request,) = webhook.requests_for(url)
    payload = standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    assert payload["name"] == HOSTILE
    assert request.headers["webhook-id"] == d.request_id


# -- failures: that action alone, at once, one line --------------------------------

FAILURES = {
    "raises": "ZeroDivisionError",
    "huge": "renders more than max_body_bytes (65536 bytes)",
    "invalid": "renders invalid JSON",
    "escape": "refused by the sandbox: access to attribute '__init__'",
    "mro": "refused by the sandbox: access to attribute '__class__'",
    "undefined": "'alarm_nmae' is undefined",
    "runaway": "render took longer than render_timeout (1 s); stopped",
    "memory": "out of memory",
}


@pytest.mark.parametrize("name", list(FAILURES))
def test_a_failing_template_fails_its_action_alone_at_once(shared, webhook, caplog, name):
    caplog.set_level(logging.INFO)
    failing, control = webhook.url("ok"), webhook.url("ok")
    alarm_id = f"failing-{name}"
    start = time.monotonic()
    bad, good = shared.deliver(
        [templated(failing, name), control], alarm_id=alarm_id, alarm_name="n"
    )
    took = time.monotonic() - start
    assert good.outcome == events.DELIVERED and webhook.requests_for(control)
    assert bad.outcome == events.FAILED
    assert shared.outcomes(bad) == [events.FAILED]  # not retried
    assert not webhook.requests_for(failing)
    assert f"template '{name}' failed: " in bad.error and FAILURES[name] in bad.error
    lines = [line for line in caplog.text.splitlines() if f"Alarm {alarm_id}:" in line]
    assert len(lines) == 1, lines
    assert parse.urlsplit(failing).path in lines[0] and f"template '{name}'" in lines[0]
    # The runaway render is stopped at its deadline (a new worker takes a moment).
    assert took < (3.0 if name == "runaway" else 2.5)


def test_the_service_carries_on_after_a_killed_render(shared, webhook):
    url = webhook.url("ok")
    (stopped,) = shared.deliver([templated(url, "runaway")], alarm_id="runaway-then")
    assert stopped.outcome == events.FAILED
    after = [webhook.url("ok") for _ in range(4)]
    deliveries = shared.deliver([templated(u, "fields") for u in after], alarm_id="after")
    assert [d.outcome for d in deliveries] == [events.DELIVERED] * 4


def test_an_unknown_template_is_bad_input_at_intake(shared, webhook, caplog):
    unknown, twice, control = webhook.url("ok"), webhook.url("ok"), webhook.url("ok")
    actions_ = [
        templated(unknown, "nope"),
        templated(twice, "slack", extra=f"{templates.PARAM}=teams&"),
        control,
    ]
    deliveries = shared.deliver(actions_, alarm_id="unknown-template")
    assert [d.action for d in deliveries] == [control]
    assert deliveries[0].outcome == events.DELIVERED
    dropped = [e for e in shared.events if e.alarm_id == "unknown-template"]
    dropped = [e for e in dropped if e.outcome == events.DROPPED]
    assert len(dropped) == 2
    assert dropped[0].error.startswith("unknown template 'nope'; installed: cloudevents, ")
    assert "given 2 times" in dropped[1].error
    line = [x for x in caplog.text.splitlines() if "unknown template 'nope'" in x]
    assert len(line) == 1 and "Alarm unknown-template: action" in line[0]
    assert not webhook.requests_for(unknown) and not webhook.requests_for(twice)


# -- validate and check ---------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "https", "trust+http", "trust+https"])
def test_validate_knows_the_templates_of_every_scheme_that_renders_them(scheme, tmp_path):
    conf = cfg.ConfigOpts()
    actions.validate(conf, f"{scheme}://example.org/hook?{templates.PARAM}=slack")
    with pytest.raises(actions.InvalidAction, match="unknown template 'nope'; installed: "):
        actions.validate(conf, f"{scheme}://example.org/hook?{templates.PARAM}=nope")


def test_check_escapes_control_characters_and_names_a_template_that_does_not_parse(tmp_path):
    folder = write_templates(tmp_path / "t", {"broken.txt.j2": "{% if %}"})
    found = templates.Templates(make_conf(tmp_path, path=str(folder)))
    with pytest.raises(ValueError) as exc:
        found.check("evil\nname")
    assert "\n" not in str(exc.value) and "evil\\nname" in str(exc.value)
    with pytest.raises(ValueError, match="template 'broken' does not parse: TemplateSyntaxError"):
        found.check("broken")


def test_an_operator_template_replaces_a_builtin_and_odd_files_are_ignored_once(tmp_path, caplog):
    folder = write_templates(
        tmp_path / "t",
        {
            "slack.json.j2": '{"text": {{ alarm_id|tojson }}}',
            "bad name.txt.j2": "x",
            "dotted.name.txt.j2": "x",
            "notes.md": "x",
        },
    )
    found = templates.Templates(make_conf(tmp_path, path=str(folder)))
    assert found.names == sorted(templates.BUILTINS)
    notification = AlarmNotification(alarm_id="a").for_delivery("req-1")
    try:
        assert found.render("slack", notification).body == b'{"text": "a"}'
    finally:
        found.close()
    warnings = [r for r in caplog.records if "ignored" in r.getMessage()]
    assert len(warnings) == 1
    for name in ("bad name.txt.j2", "dotted.name.txt.j2", "notes.md"):
        assert name in warnings[0].getMessage()


def test_name_of_and_strip_keep_the_other_parameters_as_written():
    action = parse.urlsplit(f"https://h/p?a=%2F1&{templates.PARAM}=slack&b=x+y")
    assert templates.name_of(action) == "slack"
    assert templates.strip(action).query == "a=%2F1&b=x+y"
    assert templates.name_of(parse.urlsplit("https://h/p?a=1")) is None


def test_a_template_stopped_three_times_in_a_row_is_not_rendered_for_a_while(tmp_path, folder):
    """Tenants choose the template: one that is always stopped at its deadline would
    cost a worker killed and started again at every delivery. After three in a row
    it fails at once, and the other templates still render."""
    from ceilo_notifier.notification import AlarmNotification

    chosen = templates.Templates(make_conf(tmp_path, path=str(folder), render_timeout=0.3))
    n = AlarmNotification(alarm_id="a", request_id="req-1", timestamp="2026-12-07T00:00:00.000Z")
    try:
        for _ in range(3):
            with pytest.raises(templates.TemplateError, match="render_timeout"):
                chosen.render("runaway", n)
        start = time.monotonic()
        with pytest.raises(templates.TemplateError, match="not rendered again"):
            chosen.render("runaway", n)
        assert time.monotonic() - start < 0.1
        assert json.loads(chosen.render("fields", n).body)
    finally:
        chosen.close()
