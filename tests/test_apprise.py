"""Apprise services as actions (SPEC 16), against real servers only.

The receivers listen on 127.0.0.2, the one address these tests allow
(``rest_notifier_allowed_networks = 127.0.0.2/32``); the rest of loopback,
169.254.0.0/16 and everything else stay refused, so both sides of target
safety are tested with servers that would answer.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from urllib import parse

import pytest
from aiosmtpd.controller import Controller

from ceilo_notifier import events, masking
from ceilo_notifier.notifiers import destinations, egress
from tests import helpers, hostile
from tests.helpers import ROOT, alarm

# As the service does when it loads its plugins: before any test replaces
# socket.getaddrinfo (hostile.Names), so that the check wraps the real one.
egress.install()

ALLOWED = "127.0.0.2"
SAFE = {"rest_notifier_allowed_networks": [f"{ALLOWED}/32"]}
NAME = "cpu_high on web-1"
REASON = "Transition to alarm due to 3 samples outside threshold"


@pytest.fixture(scope="module")
def receiver():
    """An HTTP receiver on the allowed address (tests/helpers.py Webhook)."""
    server = helpers.Webhook(host=ALLOWED)
    yield server
    server.close()


class Mailbox:
    """An SMTP server (aiosmtpd) on an address of loopback; keeps every message."""

    def __init__(self, host: str = ALLOWED) -> None:
        self.messages: list[email.message.EmailMessage] = []
        box = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                box.messages.append(
                    email.message_from_bytes(envelope.content, policy=email.policy.default)
                )
                return "250 OK"

        self.controller = Controller(Handler(), hostname=host, port=helpers.free_port())
        self.controller.start()
        self.port = self.controller.port

    def close(self) -> None:
        self.controller.stop()


@pytest.fixture(scope="module")
def mailbox():
    box = Mailbox()
    yield box
    box.close()


class Listener:
    """TCP listeners on one port of 127.0.0.1 and ::1 that count what connects."""

    def __init__(self) -> None:
        for _ in range(20):
            port = helpers.free_port()
            self.socks = []
            try:
                for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                    sock = socket.socket(family, socket.SOCK_STREAM)
                    self.socks.append(sock)
                    sock.bind((host, port))
                    sock.listen(64)
                    sock.setblocking(False)
            except OSError:
                for sock in self.socks:
                    sock.close()
                continue
            self.port = port
            return
        raise RuntimeError("no port free on both 127.0.0.1 and ::1")

    def arrived(self) -> int:
        count = 0
        for sock in self.socks:
            while True:
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    break
                conn.close()
                count += 1
        return count

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


@pytest.fixture(scope="module")
def listener():
    server = Listener()
    yield server
    server.close()


def body_of(request) -> str:
    return request.body.decode()


# -- what arrives ---------------------------------------------------------------


def test_json_form_and_ntfy_carry_the_alarm(run, receiver):
    port = receiver.port
    path = uuid.uuid4().hex[:8]
    actions = [
        f"json://{ALLOWED}:{port}/ok/json-{path}",
        f"form://{ALLOWED}:{port}/ok/form-{path}",
        f"ntfy://{ALLOWED}:{port}/alarms-{path}",
    ]
    deliveries = run(**SAFE).deliver(actions, alarm_name=NAME, severity="critical", reason=REASON)
    assert [d.outcome for d in deliveries] == [events.DELIVERED] * 3, [d.error for d in deliveries]
    assert {d.endpoint for d in deliveries} == {f"http://{ALLOWED}:{port}"}

    (got,) = receiver.wait_for(actions[0])
    sent = got.json()
    assert NAME in sent["title"] and "ok → alarm" in sent["title"] and "critical" in sent["title"]
    assert REASON in sent["message"] and "Severity: critical" in sent["message"]

    (got,) = receiver.wait_for(actions[1])
    form = parse.parse_qs(body_of(got))
    assert NAME in form["title"][0] and "ok → alarm" in form["title"][0]
    assert REASON in form["message"][0]

    posted = helpers.wait_until(
        lambda: [r for r in receiver.server.requests if f"alarms-{path}" in r.path + body_of(r)]
    )
    sent = json.loads(body_of(posted[0]))
    assert NAME in sent["title"] and REASON in sent["message"]


def test_a_template_renders_the_body_of_an_apprise_action(run, receiver):
    """``ceilo-notifier-template`` on an Apprise action: the rendered template is the
    message (the control parameter never reaches the service); an unknown one is
    refused at intake while the other action of the alarm goes."""
    port = receiver.port
    path = uuid.uuid4().hex[:8]
    templated = f"json://{ALLOWED}:{port}/ok/t-{path}?ceilo-notifier-template=cloudevents"
    unknown = f"json://{ALLOWED}:{port}/ok/u-{path}?ceilo-notifier-template=nope"
    r = run(**SAFE)
    deliveries = r.deliver([templated, unknown], alarm_name=NAME)
    assert [d.outcome for d in deliveries] == [events.DELIVERED], [d.error for d in deliveries]
    (got,) = receiver.wait_for(templated)
    assert "ceilo-notifier-template" not in got.path and not got.query
    event = json.loads(got.json()["message"])
    assert event["id"] == deliveries[0].request_id and event["data"]["alarm_name"] == NAME
    assert receiver.requests_for(unknown) == []


def test_mail_subject_is_the_title(run, mailbox):
    to = f"ops-{uuid.uuid4().hex[:6]}@example.org"
    action = f"mailto://{ALLOWED}:{mailbox.port}?to={to}&from=alarms@example.org"
    (d,) = run(**SAFE).deliver([action], alarm_name=NAME, severity="low", reason=REASON)
    assert d.outcome == events.DELIVERED, d.error
    assert d.endpoint == f"smtp://{ALLOWED}:{mailbox.port}"
    (message,) = [m for m in mailbox.messages if to in m["To"]]
    assert message["Subject"] == f"{NAME}: ok → alarm [low]"
    text = message.get_body(("plain",)).get_content()
    assert REASON in text and "Severity: low" in text


# -- target safety on every connection ---------------------------------------------


# The last: names resolving to a denied address (IPv4, and IPv4 mapped in IPv6).
DENIED_HOSTS = ["127.0.0.1", "169.254.169.254", "[::1]", "evil.test", "evil6.test"]
# Apprise itself reads no such host (json:// and ntfy:// refuse the URL, mailto://
# takes no host): final at once, and nothing sent anywhere.
MAPPED = "[::ffff:127.0.0.1]"


def action_to(kind: str, host: str, port: int) -> str:
    if kind == "json":
        return f"json://{host}:{port}/ok/denied"
    if kind == "ntfy":
        return f"ntfy://{host}:{port}/denied"
    return f"mailto://{host}:{port}?to=ops@example.org&from=alarms@example.org"


@pytest.mark.parametrize("kind", ["json", "ntfy", "mailto"])
def test_denied_targets_are_refused_and_nothing_arrives(
    run, kind, listener, receiver, mailbox, monkeypatch
):
    names = hostile.Names()
    names.set("evil.test", ["127.0.0.1"])
    names.set("evil6.test", ["::ffff:127.0.0.1"])
    monkeypatch.setattr(socket, "getaddrinfo", names.getaddrinfo)
    actions = [action_to(kind, host, listener.port) for host in DENIED_HOSTS]
    # localhost through the real resolver: every address it has is judged
    actions.append(action_to(kind, "localhost", listener.port))
    actions.append(action_to(kind, MAPPED, listener.port))
    control = action_to(kind, ALLOWED, mailbox.port if kind == "mailto" else receiver.port)
    if kind == "json":
        control = f"json://{ALLOWED}:{receiver.port}/ok/control-{uuid.uuid4().hex[:8]}"
    before = len(mailbox.messages)
    deliveries = run(rest_notifier_max_retries=2, **SAFE).deliver([*actions, control])
    *refused, mapped, allowed = deliveries
    for d in refused:
        assert d.outcome == events.FAILED and d.attempt == 1, (d.masked_action, d.error)
        assert d.error.startswith("target refused:"), (d.masked_action, d.error)
    assert mapped.outcome == events.FAILED  # ntfy:// goes to ntfy.sh (refused or unresolved)
    assert "169.254.169.254" in refused[1].error
    assert "resolves to 127.0.0.1" in refused[3].error
    assert "resolves to 127.0.0.1" in refused[4].error  # judged as the IPv4 it maps
    assert listener.arrived() == 0
    assert allowed.outcome == events.DELIVERED, allowed.error
    if kind == "mailto":
        assert len(mailbox.messages) == before + 1
    elif kind == "json":
        assert receiver.wait_for(control)


def test_the_guard_is_only_in_aprises_threads(listener):
    """The rest of the service (the broker, the journal) connects where it must."""
    with socket.create_connection(("127.0.0.1", listener.port), timeout=2):
        pass
    assert listener.arrived() == 1


# -- deadline, pool and retries -----------------------------------------------------


def test_a_hung_service_is_cut_at_the_deadline_while_webhooks_flow(run, receiver):
    blackhole = hostile.Blackhole(host=ALLOWED)
    try:
        r = run(rest_notifier_timeout=1.5, rest_notifier_max_retries=0, **SAFE)
        hung = r.endpoint.handle(alarm([f"json://{ALLOWED}:{blackhole.port}/hang"]))
        time.sleep(0.2)
        start = time.monotonic()
        hooks = [receiver.url("ok") for _ in range(10)]
        flowing = r.deliver(hooks)
        took = time.monotonic() - start
        assert [d.outcome for d in flowing] == [events.DELIVERED] * 10
        assert took < 1.0, took  # not behind the hung service
        (d,) = hung
        assert d.wait(5)
        assert d.outcome == events.FAILED and blackhole.accepted >= 1
        assert d.duration < 1.5 + 0.5, d.duration
        assert "timed out" in d.error or "no complete answer" in d.error, d.error
    finally:
        blackhole.close()


def test_a_full_pool_is_retried_not_queued_for_ever(make_conf):
    """An attempt that finds every Apprise thread held past the deadline never starts."""
    conf = make_conf(alarm={"rest_notifier_timeout": 0.5, **SAFE})
    conf.set_override("pool_size", 1, group="apprise")
    plugin = destinations.AppriseNotifier(conf)
    blackhole = hostile.Blackhole(host=ALLOWED)
    try:
        from ceilo_notifier import notifiers
        from ceilo_notifier.notification import AlarmNotification

        url = parse.urlsplit(f"json://{ALLOWED}:{blackhole.port}/hang")
        n = AlarmNotification(alarm_id="a", previous="ok", current="alarm", reason="r")

        async def two():
            return await asyncio.gather(
                plugin.notify_async(url, n), plugin.notify_async(url, n), return_exceptions=True
            )

        first, second = asyncio.run(two())
        assert isinstance(first, notifiers.TimedOut), first
        assert isinstance(second, notifiers.NotReached), second
    finally:
        plugin.close()
        blackhole.close()


def test_503_503_200_is_three_requests_and_delivered(run, receiver):
    url = receiver.url("flaky/2/503")
    action = url.replace("http://", "json://", 1)
    (d,) = run(rest_notifier_max_retries=3, **SAFE).deliver([action])
    assert d.outcome == events.DELIVERED, d.error
    assert len(receiver.requests_for(url)) == 3 and d.attempt == 3


def test_a_4xx_fails_at_once_with_the_status(run, receiver):
    action = receiver.url("status/404").replace("http://", "json://", 1)
    (d,) = run(rest_notifier_max_retries=3, **SAFE).deliver([action])
    assert d.outcome == events.FAILED and d.attempt == 1
    assert d.status_code == 404 and "HTTP 404" in d.error


def test_a_refused_connection_is_retried(run):
    port = helpers.free_port()
    (d,) = run(rest_notifier_max_retries=1, **SAFE).deliver([f"json://{ALLOWED}:{port}/x"])
    assert d.outcome == events.FAILED and d.attempt == 2, d.error
    assert "connection error" in d.error and "Connection refused" in d.error


# -- validation and masking ------------------------------------------------------------


SLACK = "slack://TSECRETA1/BSECRETB2/XSECRETC3xyzxyzxyzxyz"
SLACK_SECRETS = ("TSECRETA1", "BSECRETB2", "XSECRETC3xyzxyzxyzxyz")


def test_masked_in_apprises_privacy_form():
    assert masking.mask_url(SLACK).startswith("slack://T...1/B...2/X...z/")
    assert masking.mask_url("json://user:S3cretPass@h/p").startswith("json://user:****@h/p")
    assert masking.mask_url("slack://TSECRETA1") == "slack://***"  # Apprise cannot read it
    # The existing rules still serve every other scheme.
    assert masking.mask_url("http://user:secret@h/p") == "http://user:***@h/p"


def manage(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ceilo_notifier.cmd.manage", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_check_action_knows_apprise_and_gives_its_reason(tmp_path):
    config = helpers.write_config(
        tmp_path / "manage.conf",
        {"DEFAULT": {"transport_url": "rabbit://u:p@127.0.0.1:1/"}, "apprise": {}},
    )
    urls = [
        SLACK,
        "slack://TSECRETA1/BSECRETB2",
        "rsyslog://logs.example.org",
        "workflow://h.example/wf/sig?template=/etc/passwd",
    ]
    result = manage("--config-file", str(config), "check-action", *urls)
    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stderr
    assert lines[0].startswith("ok  slack://T...1/B...2/X...z/")
    assert lines[1] == (
        "invalid  slack://***: Apprise refuses it: An invalid Slack (third) Token (None) "
        "was specified."
    )
    assert lines[2].startswith("invalid  rsyslog://") and "unknown scheme 'rsyslog'" in lines[2]
    assert "Apprise services)" in lines[2]
    assert "files and attachments are not allowed" in lines[3]
    assert not [s for s in SLACK_SECRETS if s in result.stdout + result.stderr]


def test_only_the_schemes_an_operator_lists(tmp_path):
    config = helpers.write_config(
        tmp_path / "manage.conf",
        {
            "DEFAULT": {"transport_url": "rabbit://u:p@127.0.0.1:1/"},
            "apprise": {"schemes": "slack,syslog"},
        },
    )
    result = manage("--config-file", str(config), "check-action", SLACK, "discord://1/abcdef")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok  slack://")
    assert "unknown scheme 'discord'" in lines[1] and "abcdef" not in result.stdout
    assert "and 1 Apprise services" in lines[1]


def test_no_secret_in_the_log_journal_history_check_action_or_events(
    start_notifier, topic, caster, receiver, rabbit_url
):
    from tests.test_notifications import Collector

    versioned = f"versioned_{uuid.uuid4().hex[:8]}"
    collector = Collector(rabbit_url, [versioned])
    failing = receiver.url("status/500").replace("http://", "json://user:S3cretPass@", 1)
    delivered = receiver.url("ok").replace("http://", "json://user:S3cretPass@", 1)
    secrets = ("S3cretPass", *SLACK_SECRETS)
    try:
        notifier = start_notifier(
            topic,
            alarm={"rest_notifier_max_retries": 1, **SAFE},
            default={"event_dispatchers": ["database", "message"]},
            extra={"notifications": {"versioned_notifications_topics": versioned}},
            debug=True,
        )
        caster(topic).cast(alarm([failing, delivered, SLACK], alarm_id="apprise-secrets"))
        assert receiver.wait_for(delivered)
        assert receiver.wait_for(failing, 2)
        got = collector.wait(3)
        assert helpers.wait_until(
            lambda: (
                notifier.wait_journaled("apprise-secrets", "failed", 1)
                and len(_rows(notifier)) == 3
                and all(r[1] in ("delivered", "failed") for r in _rows(notifier))
            ),
            20,
        )
    finally:
        collector.close()
    rows = _rows(notifier)
    assert sorted(r[1] for r in rows) == ["delivered", "failed", "failed"], rows
    masked = {r[0] for r in rows}
    assert any(m.startswith("slack://T...1/B...2/X...z/") for m in masked), masked
    history = manage("--config-file", str(notifier.config_path), "history", "--events")
    assert history.returncode == 0, history.stderr
    assert "json://user:****@" in history.stdout
    checked = manage("--config-file", str(notifier.config_path), "check-action", failing, SLACK)
    assert checked.returncode == 0 and "json://user:****@" in checked.stdout
    db = sqlite3.connect(notifier.journal_url.removeprefix("sqlite:///"))
    events_rows = db.execute("SELECT action, error FROM delivery_events").fetchall()
    db.close()
    texts = {
        "log": notifier.log(),
        "journal": repr(rows),
        "journal events": repr(events_rows),
        "history": history.stdout + history.stderr,
        "check-action": checked.stdout + checked.stderr,
        "events": json.dumps(got, ensure_ascii=False),
    }
    assert "HTTP 500" in texts["journal"]
    for where, text in texts.items():
        assert not [s for s in secrets if s in text], (where, text[-3000:])


def _rows(notifier) -> list[tuple]:
    db = sqlite3.connect(notifier.journal_url.removeprefix("sqlite:///"))
    try:
        return db.execute(
            "SELECT action_masked, state, error FROM deliveries WHERE alarm_id = ?",
            ("apprise-secrets",),
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def test_threads_are_kept_apart():
    """A thread of the service is never guarded, whatever Apprise's threads do."""
    seen = []

    def other():
        seen.append(egress.is_guarded())

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [False]


def test_custom_headers_parameters_and_fields_are_masked():
    """json://, form:// and xml:// carry API keys and bearer tokens as custom
    headers (+), query parameters (-) and payload fields (:): never shown."""
    for url in (
        "json://h.example/p?+Authorization=Bearer%20SECRETTOKEN123",
        "form://h.example/p?-apikey=SECRETQUERY1",
        "xml://h.example/p?:token=SECRETFIELD1",
    ):
        shown = masking.mask_url(url)
        assert "SECRET" not in shown, shown


def test_a_proxy_from_the_environment_does_not_carry_a_denied_target(
    run, receiver, listener, monkeypatch
):
    """With HTTP_PROXY set (a proxy on an allowed address), an action aimed at a
    denied address is judged on that address, not on the proxy's: refused, and
    neither the proxy nor the target gets anything."""
    monkeypatch.setenv("HTTP_PROXY", f"http://{ALLOWED}:{receiver.port}")
    monkeypatch.setenv("http_proxy", f"http://{ALLOWED}:{receiver.port}")
    before = len(receiver.server.requests)
    (d,) = run(**SAFE).deliver([f"json://127.0.0.1:{listener.port}/meta-data"])
    assert d.outcome == events.FAILED and d.error.startswith("target refused:"), d.error
    assert len(receiver.server.requests) == before
    assert listener.arrived() == 0
