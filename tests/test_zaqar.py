"""``zaqar://`` and ``trust+zaqar://`` against the real Zaqar and the real Keystone.

Zaqar is the ``zaqar`` package from PyPI (API v2, Redis storage, Keystone
auth through keystonemiddleware), installed into a virtualenv of its own and
found by the plugin in the Keystone catalog as service type ``messaging``;
see ``tests/zaqar``. Subscribers are this suite's webhook: Zaqar itself
notifies them when the plugin posts.
"""

from __future__ import annotations

import logging
import uuid

import pytest

from ceilo_notifier import events
from tests import keystone as ks

pytestmark = pytest.mark.timeout(900)  # the first use installs Keystone and Zaqar


@pytest.fixture
def run(keystone_runs, real_keystone, zaqar):
    def make(**kw):
        return keystone_runs(real_keystone, **kw)

    return make


def zaqar_action(**query) -> str:
    from urllib import parse

    return "zaqar://?" + parse.urlencode(query, doseq=True)


def test_topic_subscribes_and_posts_and_zaqar_notifies_the_subscriber(run, zaqar, webhook):
    r = run()
    alarm_id = str(uuid.uuid4())
    subscriber = webhook.url(f"zaqar-subscriber-{uuid.uuid4().hex}")
    action = zaqar_action(topic="ops", subscriber=subscriber, ttl=600)
    (d,) = r.deliver([action], alarm_id=alarm_id, alarm_name="disk full", severity="critical")
    assert d.outcome == events.DELIVERED
    queue = f"{alarm_id}-ops"
    (body,) = zaqar.messages(zaqar.service_project_id, queue)
    assert body["alarm_id"] == alarm_id and body["alarm_name"] == "disk full"
    assert (body["previous"], body["current"], body["severity"]) == ("ok", "alarm", "critical")
    (subscription,) = zaqar.subscriptions(zaqar.service_project_id, queue)
    assert subscription["subscriber"] == subscriber and subscription["ttl"] == 600
    # Zaqar delivers the message to the subscriber by itself.
    (notified,) = webhook.wait_for(subscriber, timeout=30)
    assert notified.json()["body"]["alarm_id"] == alarm_id

    # The next transition subscribes again (Zaqar keeps one subscription) and posts again.
    (d2,) = r.deliver([action], alarm_id=alarm_id, previous="alarm", current="ok")
    assert d2.outcome == events.DELIVERED
    assert [m["current"] for m in zaqar.messages(zaqar.service_project_id, queue)] == [
        "alarm",
        "ok",
    ]
    assert len(zaqar.subscriptions(zaqar.service_project_id, queue)) == 1


def test_a_presigned_queue_gets_the_message_without_a_token(run, zaqar, real_keystone, caplog):
    project = real_keystone.project_id
    queue = f"signed-{uuid.uuid4().hex[:8]}"
    zaqar.create_queue(project, queue)
    signed = zaqar.presign(project, queue)
    query = {
        "queue_name": queue,
        "project_id": signed["project"],
        "paths": ",".join(signed["paths"]),
        "methods": ",".join(signed["methods"]),
        "expires": signed["expires"],
        "signature": signed["signature"],
    }
    r = run()
    caplog.set_level(logging.DEBUG)
    (d,) = r.deliver([zaqar_action(**query)])
    assert d.outcome == events.DELIVERED
    (body,) = zaqar.messages(project, queue)
    assert body["alarm_id"] == d.notification.alarm_id
    assert signed["signature"] not in caplog.text
    assert all(signed["signature"] not in str(e) for e in r.events)

    # A forged signature is refused by Zaqar: failed at once, with Zaqar's answer.
    forged = zaqar_action(**{**query, "signature": "0" * len(signed["signature"])})
    (bad,) = r.deliver([forged])
    assert bad.outcome == events.FAILED
    assert r.outcomes(bad) == [events.FAILED]
    assert "Zaqar answered HTTP 404" in r.events[-1].error
    assert len(zaqar.messages(project, queue)) == 1


def test_trust_zaqar_posts_to_the_users_own_queue(run, zaqar, real_keystone, caplog):
    trust = real_keystone.create_trust()
    queue = f"mine-{uuid.uuid4().hex[:8]}"
    r = run()
    caplog.set_level(logging.DEBUG)
    (d,) = r.deliver([f"trust+zaqar://{trust}@?queue_name={queue}"])
    assert d.outcome == events.DELIVERED
    (body,) = zaqar.messages(real_keystone.project_id, queue)
    assert body["alarm_id"] == d.notification.alarm_id
    assert trust not in caplog.text and trust not in d.masked_action

    real_keystone.delete_trust(trust)
    r2 = run()
    (gone,) = r2.deliver([f"trust+zaqar://{trust}@?queue_name={queue}"])
    assert gone.outcome == events.FAILED
    assert "Keystone" in r2.events[-1].error and trust not in r2.events[-1].error


@pytest.mark.parametrize(
    ("action", "cause"),
    [
        (zaqar_action(subscriber="http://h/x"), "no topic in the query"),
        (zaqar_action(topic="t", ttl="10"), "ttl='10' is not a number of seconds"),
        (zaqar_action(queue_name="q", signature="s3cret"), "pre-signed queue data incomplete"),
        ("trust+zaqar://trust-id@", "no queue_name in the query"),
        ("trust+zaqar://trust-id@?queue_name=a.b", "is not a Zaqar queue name"),
    ],
)
def test_bad_actions_fail_with_one_line_and_the_rest_of_the_alarm_goes_out(
    run, webhook, caplog, action, cause
):
    r = run()
    url = webhook.url(f"beside-{uuid.uuid4().hex}")
    alarm_id = f"alarm-{uuid.uuid4().hex}"
    bad, good = r.deliver([action, url], alarm_id=alarm_id)
    assert good.outcome == events.DELIVERED
    assert bad.outcome == events.FAILED and r.outcomes(bad) == [events.FAILED]
    lines = [
        rec.getMessage()
        for rec in caplog.records
        if rec.levelno >= logging.ERROR and cause in rec.getMessage()
    ]
    assert len(lines) == 1 and alarm_id in lines[0]
    assert "s3cret" not in caplog.text


def test_a_subscriber_aimed_at_the_metadata_service_is_refused(run, zaqar):
    """Zaqar would POST to it from inside the cloud: the same target safety as for
    http:// actions, before any subscription is made."""
    r = run(rest_notifier_allowed_networks="")  # the default policy: denied networks only
    alarm_id = str(uuid.uuid4())
    action = zaqar_action(
        topic="meta",
        subscriber=["mailto:ops@example.org", "http://user:pw@169.254.169.254/latest/meta-data/"],
    )
    (d,) = r.deliver([action], alarm_id=alarm_id)
    assert d.outcome == events.FAILED and r.outcomes(d) == [events.FAILED]
    assert "169.254.169.254" in d.error and "denied network 169.254.0.0/16" in d.error
    assert "pw" not in d.error
    queue = f"{alarm_id}-meta"
    assert zaqar.subscriptions(zaqar.service_project_id, queue) == []
    assert zaqar.messages(zaqar.service_project_id, queue) == []


@pytest.mark.parametrize(
    "subscriber",
    [
        "http://１６９.２５４.１６９.２５４/latest/meta-data/",
        "http://169。254。169。254/latest/meta-data/",
        "http://0xa9fea9fe/latest/meta-data/",
        "http://169.254.43518/latest/meta-data/",
        "http://169.254.169.254./latest/meta-data/",
    ],
)
def test_a_subscriber_aimed_at_the_metadata_service_in_another_spelling_is_refused(
    run, zaqar, subscriber
):
    """Zaqar's client would read these as 169.254.169.254 (IDNA, inet_aton)."""
    r = run(rest_notifier_allowed_networks="")
    alarm_id = str(uuid.uuid4())
    (d,) = r.deliver([zaqar_action(topic="meta", subscriber=subscriber)], alarm_id=alarm_id)
    assert d.outcome == events.FAILED and r.outcomes(d) == [events.FAILED]
    assert "resolves to 169.254.169.254, in denied network 169.254.0.0/16" in d.error, d.error
    assert zaqar.subscriptions(zaqar.service_project_id, f"{alarm_id}-meta") == []


def test_a_topic_that_makes_too_long_a_queue_name_fails_clearly(run):
    r = run()
    (d,) = r.deliver([zaqar_action(topic="t" * 28)], alarm_id=str(uuid.uuid4()))
    assert d.outcome == events.FAILED
    assert "topic 'tttttttttttttttttttttttttttt' cannot make a Zaqar queue name" in d.error
    # An alarm id longer than a UUID leaves less room than the check at registration.
    (d,) = r.deliver([zaqar_action(topic="t" * 20)], alarm_id="x" * 50)
    assert d.outcome == events.FAILED
    assert "alarm id and topic make the queue name" in d.error


def test_too_many_subscribers_are_refused_before_any_request(run, zaqar):
    r = run()
    subscribers = [f"http://h{i}.example.org/" for i in range(21)]
    (d,) = r.deliver([zaqar_action(topic="many", subscriber=subscribers)])
    assert d.outcome == events.FAILED and "21 subscribers, more than 20" in d.error


def test_zaqar_unreachable_is_retried(keystone_runs, real_keystone, zaqar, webhook):
    """Zaqar behind a port that is down at the first attempt and back for the retry."""
    port = int(zaqar.url.rsplit(":", 1)[1])
    forwarder = ks.Forwarder(port)
    service_type = f"messaging-{uuid.uuid4().hex[:6]}"
    real_keystone.add_endpoint(service_type, f"http://127.0.0.1:{forwarder.port}")
    try:

        def back_on_retry(event):
            if event.outcome == events.RETRYING:
                forwarder.up()

        r = keystone_runs(
            real_keystone,
            on_event=back_on_retry,
            sections={"service_types": {"zaqar": service_type}},
            rest_notifier_max_retries=3,
        )
        alarm_id = str(uuid.uuid4())
        (d,) = r.deliver([zaqar_action(topic="outage")], alarm_id=alarm_id)
        assert r.outcomes(d) == [events.RETRYING, events.DELIVERED]
        assert "Zaqar unreachable" in r.events[0].error
        assert len(zaqar.messages(zaqar.service_project_id, f"{alarm_id}-outage")) == 1
    finally:
        forwarder.close()


def test_no_zaqar_in_the_catalog_fails_clearly(keystone_runs, real_keystone, zaqar):
    r = keystone_runs(real_keystone, sections={"service_types": {"zaqar": "no-such-service"}})
    (d,) = r.deliver([zaqar_action(topic="t")])
    assert d.outcome == events.FAILED
    assert "service type 'no-such-service'" in r.events[-1].error


def test_every_scheme_aodh_ships_is_installed():
    from ceilo_notifier import actions

    aodh = {"log", "test", "http", "https", "trust+http", "trust+https"}
    aodh |= {"zaqar", "trust+zaqar", "trust+heat"}
    assert aodh <= set(actions.installed())


TOKEN_SUBSCRIBERS = [
    "trust+https://attacker.example/steal",
    "TRUST+HTTP://attacker.example/steal",
    "Trust+Https://attacker.example/steal",
    " trust+https://attacker.example/steal",
    "\ttrust+http://attacker.example/steal",
]


@pytest.mark.parametrize("subscriber", TOKEN_SUBSCRIBERS)
def test_a_subscriber_that_would_get_a_token_is_refused(run, zaqar, webhook, caplog, subscriber):
    """Zaqar sends a trust+ subscriber a token of the subscribing user, here the
    service user: refused before Zaqar is asked, while the alarm's other action goes out."""
    from ceilo_notifier import actions
    from tests.test_actions import bare_conf

    r = run()
    alarm_id = str(uuid.uuid4())
    good = webhook.url(f"zaqar-subscriber-{uuid.uuid4().hex}")
    bad_action = zaqar_action(topic="bad", subscriber=subscriber)
    with pytest.raises(actions.InvalidAction, match="subscriber"):
        actions.validate(bare_conf(), bad_action)
    bad, ok = r.deliver(
        [bad_action, zaqar_action(topic="good", subscriber=good)], alarm_id=alarm_id
    )
    assert bad.outcome == events.FAILED and r.outcomes(bad) == [events.FAILED]
    assert "subscriber" in bad.error and "attacker" not in bad.error
    lines = [
        rec.getMessage()
        for rec in caplog.records
        if rec.levelno >= logging.WARNING and alarm_id in rec.getMessage()
    ]
    assert len(lines) == 1 and "subscriber" in lines[0], lines
    assert zaqar.subscriptions(zaqar.service_project_id, f"{alarm_id}-bad") == []
    assert zaqar.messages(zaqar.service_project_id, f"{alarm_id}-bad") == []
    # The other action of the alarm: subscribed, posted, and notified by Zaqar.
    assert ok.outcome == events.DELIVERED
    (subscription,) = zaqar.subscriptions(zaqar.service_project_id, f"{alarm_id}-good")
    assert subscription["subscriber"] == good
    (notified,) = webhook.wait_for(good, timeout=30)
    assert notified.json()["body"]["alarm_id"] == alarm_id


@pytest.mark.parametrize(
    ("subscriber", "cause"),
    [
        ("ftp://files.example/x", "subscriber scheme 'ftp' refused"),
        ("http://bob:s3cr＃et@h.example/", "NFKC"),
        ("http://h.example\\@169.254.169.254/", "backslashes"),
        ("https:no-host", "an https subscriber has no host"),
    ],
)
def test_only_http_https_and_mailto_subscribers_are_accepted(subscriber, cause):
    from ceilo_notifier import actions
    from tests.test_actions import bare_conf

    for ok in ("http://h.example/x", "HTTPS://h.example/x", "mailto:ops@example.org"):
        actions.validate(bare_conf(), zaqar_action(topic="t", subscriber=ok))
    with pytest.raises(actions.InvalidAction, match=cause) as refused:
        actions.validate(bare_conf(), zaqar_action(topic="t", subscriber=subscriber))
    assert "s3cr" not in str(refused.value)
