"""``trust+http://`` and ``trust+https://`` against Keystone.

Every test runs twice: against the real Keystone (``keystone`` from PyPI,
installed once into a virtualenv of its own in the user's cache directory,
bootstrapped on SQLite, Fernet tokens, served on 127.0.0.1; skipped with the
reason where it cannot be installed) and against ``tests.keystone.fake``, a
stand-in for its token API that always runs. See ``tests/keystone``.

The engine and the plugin run in the test process, as in test_rest; one
test goes through the real service process and RabbitMQ.
"""

from __future__ import annotations

import datetime
import logging
import time
import uuid

import pytest
from keystoneauth1 import exceptions as ka_exceptions
from oslo_config import cfg

from ceilo_notifier import events, keystone, notifiers, opts
from ceilo_notifier.notifiers import trust as trust_notifier
from tests import conftest, helpers, hostile
from tests import keystone as ks
from tests.keystone import fake


# Installing Keystone the first time takes a minute or two, inside the first
# test that needs it: the real-Keystone variants get a longer timeout.
@pytest.fixture(
    scope="session", params=[pytest.param("keystone", marks=pytest.mark.timeout(900)), "fake"]
)
def identity(request):
    """The real Keystone, then the fake one: each test runs against both."""
    if request.param == "fake":
        server = fake.FakeKeystone()
    else:
        server = request.getfixturevalue("real_keystone")
    yield server
    if request.param == "fake":
        server.close()


@pytest.fixture
def run(keystone_runs, identity):
    """Make a Run whose [service_credentials] come from a config file, as in production."""

    def make(credentials=None, on_event=None, **alarm_opts):
        r = keystone_runs(identity, credentials, on_event, **alarm_opts)
        r.plugin = r.engine.plugins["trust+http"]
        return r

    return make


def trust_action(url: str, trust_id: str) -> str:
    """``http://host/...`` → ``trust+http://TRUST_ID@host/...``."""
    scheme, rest = url.split("://", 1)
    return f"trust+{scheme}://{trust_id}@{rest}"


def test_the_webhook_gets_a_token_of_the_trust_and_a_plain_url(run, identity, webhook):
    trust_id = identity.create_trust()
    url = webhook.url("ok", query="team=db")
    r = run()
    (d,) = r.deliver([trust_action(url, trust_id)])
    assert d.outcome == events.DELIVERED and d.status_code == 200
    (request,) = webhook.requests_for(url)
    token = request.headers["x-auth-token"]
    body = identity.validate(token)
    assert body is not None, "the webhook got a token Keystone does not know"
    assert body["OS-TRUST:trust"]["id"] == trust_id
    assert body["OS-TRUST:trust"]["trustee_user"]["id"] == identity.trustee_id
    assert body["user"]["id"] == identity.trustor_id  # impersonation: acts as the owner
    assert body["project"]["id"] == identity.project_id
    # The receiver sees http://host/path?team=db: no trust+ prefix, no trust id.
    assert request.headers["host"] == f"127.0.0.1:{webhook.port}"
    assert request.query == {"team": ["db"]}
    assert trust_id not in request.path and "authorization" not in request.headers
    assert trust_id not in d.masked_action and d.masked_action.startswith("trust+http://***@")
    assert {e.scheme for e in r.events} == {"trust+http"}


def test_trust_https_with_a_ca_bundle(run, identity, https_webhook, tls):
    trust_id = identity.create_trust()
    url = https_webhook.url("ok")
    r = run(rest_notifier_ca_bundle_certificate_path=str(tls.ca_path))
    (d,) = r.deliver([trust_action(url, trust_id)])
    assert d.outcome == events.DELIVERED
    (request,) = https_webhook.requests_for(url)
    assert identity.validate(request.headers["x-auth-token"])["OS-TRUST:trust"]["id"] == trust_id


def test_aodh_style_userinfo_and_the_v3password_plugin(run, identity, webhook):
    """aodh writes trust+http://TRUST_ID:delete@host; v3password scopes to trusts too."""
    trust_id = identity.create_trust()
    url = webhook.url("ok")
    r = run(credentials={"auth_type": "v3password"})
    (d,) = r.deliver([trust_action(url, f"{trust_id}:delete")])
    assert d.outcome == events.DELIVERED
    (request,) = webhook.requests_for(url)
    assert identity.validate(request.headers["x-auth-token"])["OS-TRUST:trust"]["id"] == trust_id
    assert "authorization" not in request.headers


def test_one_keystone_authentication_for_many_notifications_of_a_trust(run, identity, webhook):
    trust_id = identity.create_trust()
    r = run()
    first, second = webhook.url("ok"), webhook.url("ok")
    r.deliver([trust_action(first, trust_id)])
    r.deliver([trust_action(second, trust_id)])
    # Then many at once, from many delivery threads.
    urls = [webhook.url("ok") for _ in range(12)]
    deliveries = r.deliver([trust_action(u, trust_id) for u in urls])
    assert {d.outcome for d in deliveries} == {events.DELIVERED}
    tokens = {webhook.requests_for(u)[0].headers["x-auth-token"] for u in [first, second, *urls]}
    assert len(tokens) == 1
    assert identity.trust_auths(trust_id) == 1


def test_each_trust_has_its_own_token(run, identity, webhook):
    r = run()
    trusts = [identity.create_trust() for _ in range(3)]
    urls = [webhook.url("ok") for _ in trusts]
    r.deliver([trust_action(u, t) for u, t in zip(urls, trusts, strict=True)])
    for url, trust_id in zip(urls, trusts, strict=True):
        (request,) = webhook.requests_for(url)
        assert identity.validate(request.headers["x-auth-token"])["OS-TRUST:trust"]["id"] == (
            trust_id
        )
        assert identity.trust_auths(trust_id) == 1


def test_a_token_is_renewed_shortly_before_it_expires(run, identity, webhook):
    trust_id = identity.create_trust()
    r = run()
    first, second, third = (webhook.url("ok") for _ in range(3))
    r.deliver([trust_action(first, trust_id)])
    r.deliver([trust_action(second, trust_id)])
    token = webhook.requests_for(first)[0].headers["x-auth-token"]
    assert webhook.requests_for(second)[0].headers["x-auth-token"] == token
    # keystoneauth renews a token that expires within 120 s.
    expires = datetime.datetime.fromisoformat(
        identity.validate(token)["expires_at"].replace("Z", "+00:00")
    )
    left = (expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert 120 < left <= ks.TOKEN_LIFETIME
    time.sleep(left - 120 + 0.3)
    r.deliver([trust_action(third, trust_id)])
    renewed = webhook.requests_for(third)[0].headers["x-auth-token"]
    assert renewed != token and identity.validate(renewed) is not None
    assert identity.trust_auths(trust_id) == 2


def test_an_unknown_trust_fails_at_once_with_a_clear_error(run, identity, webhook):
    bogus = uuid.uuid4().hex
    url = webhook.url("ok")
    (d,) = run(rest_notifier_max_retries=3).deliver([trust_action(url, bogus)])
    assert d.outcome == events.FAILED and d.attempt == 1
    assert "Keystone refused the token request for the trust" in d.error
    assert bogus not in d.error
    assert webhook.requests_for(url) == []


def test_a_deleted_trust_fails_once_the_webhook_refuses_its_cached_token(run, identity, webhook):
    trust_id = identity.create_trust()
    r = run(rest_notifier_max_retries=3)
    (d,) = r.deliver([trust_action(webhook.url("ok"), trust_id)])
    assert d.outcome == events.DELIVERED
    identity.delete_trust(trust_id)
    # The cached token is refused (as a webhook validating it would): the plugin
    # drops it, Keystone refuses a new one, and the delivery fails.
    url = webhook.url("status/401")
    (d,) = r.deliver([trust_action(url, trust_id)])
    assert r.outcomes(d) == [events.RETRYING, events.FAILED]
    assert "Keystone refused the token request for the trust" in d.error
    assert len(webhook.requests_for(url)) == 1
    assert identity.trust_auths(trust_id) == 2


def test_a_refused_token_is_renewed_and_retried_once(run, identity, webhook):
    trust_id = identity.create_trust()
    r = run(rest_notifier_max_retries=3)
    flaky = webhook.url("flaky/1/401")
    (d,) = r.deliver([trust_action(flaky, trust_id)])
    assert r.outcomes(d) == [events.RETRYING, events.DELIVERED]
    first, second = webhook.requests_for(flaky)
    assert first.headers["x-auth-token"] != second.headers["x-auth-token"]
    assert identity.validate(second.headers["x-auth-token"]) is not None
    assert identity.trust_auths(trust_id) == 2

    # A webhook that refuses every token: one renewal, then failed, despite 3 retries.
    always = webhook.url("status/401")
    (d,) = r.deliver([trust_action(always, trust_id)])
    assert r.outcomes(d) == [events.RETRYING, events.FAILED]
    assert d.status_code == 401 and "refused a new Keystone token" in d.error
    assert len(webhook.requests_for(always)) == 2


def test_wrong_service_credentials_fail_with_a_clear_error(run, identity, webhook):
    trust_id = identity.create_trust()
    url = webhook.url("ok")
    r = run(credentials={"password": "not-the-password"}, rest_notifier_max_retries=3)
    (d,) = r.deliver([trust_action(url, trust_id)])
    assert d.outcome == events.FAILED and d.attempt == 1
    assert "service credentials in [service_credentials]" in d.error
    assert webhook.requests_for(url) == []


def test_a_service_user_that_is_not_the_trustee_is_forbidden(run, identity, webhook):
    trust_id = identity.create_trust()
    url = webhook.url("ok")
    r = run(
        credentials={
            "username": ks.TRUSTOR_USER,
            "password": ks.TRUSTOR_PASSWORD,
            "project_name": ks.TRUSTOR_PROJECT,
        }
    )
    (d,) = r.deliver([trust_action(url, trust_id)])
    assert d.outcome == events.FAILED and d.attempt == 1
    assert "HTTP 403" in d.error and "not the trustee" in d.error
    assert webhook.requests_for(url) == []


def test_keystone_down_is_retried_and_a_cached_token_outlives_it(run, identity, webhook):
    forwarder = ks.Forwarder(int(identity.url.rsplit(":", 1)[1]))
    try:
        trust_id = identity.create_trust()

        # Down for good: every attempt is retried, then the delivery fails.
        r = run(credentials={"auth_url": forwarder.url()}, rest_notifier_max_retries=2)
        url = webhook.url("ok")
        (d,) = r.deliver([trust_action(url, trust_id)])
        assert r.outcomes(d) == [events.RETRYING, events.RETRYING, events.FAILED]
        assert "Keystone unreachable" in d.error and trust_id not in d.error
        assert webhook.requests_for(url) == []

        # Back before the retry: delivered.
        def back_on_first_retry(event):
            if event.outcome == events.RETRYING:
                forwarder.up()

        r = run(
            credentials={"auth_url": forwarder.url()},
            on_event=back_on_first_retry,
            rest_notifier_max_retries=3,
        )
        url = webhook.url("ok")
        (d,) = r.deliver([trust_action(url, trust_id)])
        assert r.outcomes(d) == [events.RETRYING, events.DELIVERED]
        token = webhook.requests_for(url)[0].headers["x-auth-token"]

        # Down again: the cached token still serves, Keystone is not needed.
        forwarder.down()
        url = webhook.url("ok")
        (d,) = r.deliver([trust_action(url, trust_id)])
        assert d.outcome == events.DELIVERED
        assert webhook.requests_for(url)[0].headers["x-auth-token"] == token
    finally:
        forwarder.close()


@pytest.mark.parametrize(
    ("userinfo", "message"),
    [("", "no trust id in the action"), (":secret", "empty trust id in the action")],
)
def test_an_action_without_a_trust_id_fails_clearly(run, identity, webhook, userinfo, message):
    url = webhook.url("ok")
    action = "trust+" + (url.replace("http://", f"http://{userinfo}@") if userinfo else url)
    (d,) = run(rest_notifier_max_retries=3).deliver([action])
    assert d.outcome == events.FAILED and d.attempt == 1 and message in d.error
    assert webhook.requests_for(url) == []


def test_trust_ids_and_tokens_are_never_logged(run, identity, webhook, caplog):
    trust_id, bogus = identity.create_trust(), uuid.uuid4().hex
    caplog.clear()  # the test's own Keystone calls above are not the plugin's
    caplog.set_level(logging.DEBUG)
    url = webhook.url("ok")
    r = run()
    r.deliver([trust_action(url, trust_id), trust_action(webhook.url("ok"), bogus)])
    token = webhook.requests_for(url)[0].headers["x-auth-token"]
    assert "keystoneauth" in caplog.text  # keystoneauth's own debug lines are in
    assert trust_id not in caplog.text and bogus not in caplog.text
    assert token not in caplog.text and ks.SERVICE_PASSWORD not in caplog.text
    for event in r.events:
        assert trust_id not in str(event) and bogus not in str(event)


def test_without_service_credentials_the_plugin_loads_and_fails_clearly(make_conf, webhook):
    """[service_credentials] unset: the plugin registers its options itself and
    every trust+ delivery fails with the reason; other schemes are unaffected."""
    conf = make_conf(alarm={"rest_notifier_max_retries": 2})
    r = conftest.KeystoneRun(conf)
    try:
        url = webhook.url("ok")
        (d,) = r.deliver([trust_action(url, uuid.uuid4().hex)])
        assert d.outcome == events.FAILED and d.attempt == 1
        assert "[service_credentials] auth_type is not set" in d.error
        assert webhook.requests_for(url) == []
        assert isinstance(r.engine.plugins["trust+http"], trust_notifier.TrustRestAlarmNotifier)
        (d,) = r.deliver([webhook.url("ok")])
        assert d.outcome == events.DELIVERED
    finally:
        r.engine.stop()


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (ka_exceptions.ConnectFailure("refused"), True),
        (ka_exceptions.ConnectTimeout("slow"), True),
        (ka_exceptions.DiscoveryFailure("no versions"), True),
        (ka_exceptions.ServiceUnavailable(), True),
        (ka_exceptions.InternalServerError(), True),
        (ka_exceptions.TooManyRequests(), True),
        (ka_exceptions.Unauthorized(), False),
        (ka_exceptions.Forbidden(), False),
        (ka_exceptions.NotFound(), False),
        (ka_exceptions.BadRequest(), False),
        (ka_exceptions.SSLError("bad certificate"), False),
        (keystone.NotConfigured("no endpoint of service type 'x' in the Keystone catalog"), False),
    ],
)
def test_keystone_failures_map_to_retry_or_failure(exc, retryable):
    error = trust_notifier._keystone_error(exc)
    assert isinstance(error, notifiers.DeliveryError)
    assert isinstance(error, notifiers.RetryableError) is retryable
    assert error.status_code is None  # a status code is the webhook's, never Keystone's
    assert "Keystone" in error.reason


def test_options_for_the_sample_config_and_idempotent_registration():
    options = dict(opts.list_opts())["service_credentials"]
    names = {o.dest for o in options}
    assert {"auth_type", "auth_url", "username", "password", "user_domain_name"} <= names
    assert {"project_name", "cafile", "insecure", "timeout"} <= names
    conf = cfg.ConfigOpts()
    keystone.register_opts(conf)
    keystone.register_opts(conf)
    conf([], project="ceilo-notifier", default_config_files=[])
    assert conf.service_credentials.auth_type is None


def test_end_to_end_through_the_service(start_notifier, topic, caster, identity, webhook):
    notifier = start_notifier(
        topic,
        debug=True,
        extra={"service_credentials": identity.service_credentials()},
    )
    trust_id = identity.create_trust()
    url = webhook.url("ok")
    caster(topic).cast(helpers.alarm([trust_action(url, trust_id)], alarm_id="trusted"))
    (request,) = webhook.wait_for(url, timeout=30)
    body = identity.validate(request.headers["x-auth-token"])
    assert body["OS-TRUST:trust"]["id"] == trust_id
    assert notifier.wait_for_log(r"Alarm trusted delivered to trust\+http://\*\*\*@127\.0\.0\.1")
    log = notifier.log()
    assert trust_id not in log and request.headers["x-auth-token"] not in log
    assert ks.SERVICE_PASSWORD not in log


def test_a_keystone_that_never_answers_holds_its_own_threads_only(keystone_runs, webhook):
    """Token fetches run in keystone_pool_size threads with a deadline of half
    rest_notifier_timeout; the loop, and plain webhooks, never wait for them."""
    identity = fake.FakeKeystone()
    blackhole = hostile.Blackhole()
    try:
        r = keystone_runs(
            identity,
            credentials={"auth_url": f"http://127.0.0.1:{blackhole.port}/v3"},
            keystone_pool_size=2,
            rest_notifier_timeout=2,
            rest_notifier_max_retries=0,
        )
        trusts = [trust_action(webhook.url("ok"), uuid.uuid4().hex) for _ in range(6)]
        stalled = r.endpoint.handle(helpers.alarm(trusts, alarm_id="keystone-hangs"))
        time.sleep(0.2)
        plain = webhook.url("ok")
        handed = time.monotonic()
        (d,) = r.deliver([plain], alarm_id="beside-keystone")
        assert d.outcome == events.DELIVERED and time.monotonic() - handed < 1
        for s in stalled:
            assert s.wait(10), s.masked_action
            assert s.outcome == events.FAILED, (s.outcome, s.error)
            assert "Keystone token: no result from the keystone threads within 1 s" in s.error
        assert blackhole.accepted <= 2, f"{blackhole.accepted} token requests at once"
        assert r.engine.loop._default_executor is None, "the loop's default executor was used"
    finally:
        blackhole.close()
        identity.close()
