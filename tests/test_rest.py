"""The http/https notifier against real HTTP and HTTPS servers on 127.0.0.1.

These run the real engine and plugin in the test process (no broker
needed to talk to a webhook); the RPC path is covered in test_service.
"""

from __future__ import annotations

import base64
import logging

import pytest

from ceilo_notifier import engine, events
from ceilo_notifier.consumers import rpc as rpc_consumer


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 425, 429])
def test_retryable_status_is_retried_max_retries_times_with_one_request_id(run, webhook, status):
    url = webhook.url(f"status/{status}")
    (d,) = run(rest_notifier_max_retries=2).deliver([url])
    requests = webhook.requests_for(url)
    assert len(requests) == 3
    assert {r.headers["x-openstack-request-id"] for r in requests} == {d.request_id}
    assert d.outcome == events.FAILED and d.status_code == status


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_other_4xx_fail_at_once(run, webhook, status):
    url = webhook.url(f"status/{status}")
    (d,) = run(rest_notifier_max_retries=3).deliver([url])
    assert len(webhook.requests_for(url)) == 1
    assert d.outcome == events.FAILED and d.status_code == status


def test_redirect_is_not_followed_and_not_delivered(run, webhook):
    url = webhook.url("redirect")
    (d,) = run(rest_notifier_max_retries=3).deliver([url])
    assert len(webhook.requests_for(url)) == 1
    assert not [r for r in webhook.server.requests if r.path == "/ok/redirected"]
    assert d.outcome == events.FAILED and d.status_code == 302
    assert "not followed" in d.error


def test_2xx_is_delivered_after_a_transient_error(run, webhook):
    url = webhook.url("flaky/1/503")
    r = run(rest_notifier_max_retries=2)
    (d,) = r.deliver([url])
    assert len(webhook.requests_for(url)) == 2
    assert d.outcome == events.DELIVERED and d.status_code == 200
    assert r.outcomes(d) == [events.RETRYING, events.DELIVERED]


def test_retry_after_is_honoured(run, webhook):
    url = webhook.url("retry-after/1")
    (d,) = run(rest_notifier_max_retries=1).deliver([url])
    first, second = webhook.requests_for(url)
    assert d.outcome == events.DELIVERED
    assert second.received - first.received >= 0.95


def test_retry_after_beyond_the_max_age_fails_at_once(run, webhook):
    url = webhook.url("retry-after/120")
    (d,) = run(rest_notifier_max_retries=5, rest_notifier_retry_max_age=30).deliver([url])
    assert len(webhook.requests_for(url)) == 1
    assert d.outcome == events.FAILED


def test_connection_refused_is_retried_then_failed(run):
    (d,) = run(rest_notifier_max_retries=2).deliver(["http://127.0.0.1:9/refused"])
    assert d.outcome == events.FAILED and d.attempt == 3
    assert "connection" in d.error.lower()


def test_a_hanging_webhook_times_out_per_attempt(run, webhook):
    url = webhook.url("hang")
    (d,) = run(rest_notifier_timeout=0.5, rest_notifier_max_retries=1).deliver([url])
    assert d.outcome == events.FAILED and d.attempt == 2
    assert "no complete answer within 0.5 s" in d.error
    assert len(webhook.requests_for(url)) == 2


def test_a_slow_webhook_within_the_timeout_is_delivered(run, webhook):
    url = webhook.url("slow/0.5")
    (d,) = run(rest_notifier_timeout=2).deliver([url])
    assert d.outcome == events.DELIVERED and d.duration >= 0.5


def test_basic_auth_from_userinfo_and_no_credentials_in_the_url_sent(run, webhook, caplog):
    caplog.set_level(logging.DEBUG)
    url = webhook.url("ok", userinfo="user%40corp:p%3Ass-word")
    (d,) = run().deliver([url])
    (request,) = webhook.requests_for(url)
    expected = base64.b64encode(b"user@corp:p:ss-word").decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert d.outcome == events.DELIVERED
    assert "p%3Ass-word" not in caplog.text and "p:ss-word" not in caplog.text


def test_https_without_trust_fails_without_retry(run, https_webhook):
    url = https_webhook.url("ok")
    (d,) = run(rest_notifier_max_retries=3).deliver([url])
    assert d.outcome == events.FAILED and d.attempt == 1
    assert "TLS" in d.error and "certificate" in d.error.lower()
    assert https_webhook.requests_for(url) == []


def test_https_with_ca_bundle_is_verified_and_delivered(run, https_webhook, tls):
    url = https_webhook.url("ok")
    (d,) = run(rest_notifier_ca_bundle_certificate_path=str(tls.ca_path)).deliver([url])
    assert d.outcome == events.DELIVERED and len(https_webhook.requests_for(url)) == 1


def test_an_unloadable_client_certificate_fails_https_at_once_and_spares_http(
    run, webhook, https_webhook, tls, tmp_path, caplog
):
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
    r = run(
        rest_notifier_certificate_file=str(broken),
        rest_notifier_ca_bundle_certificate_path=str(tls.ca_path),
        rest_notifier_max_retries=3,
    )
    assert "cannot be loaded" in caplog.text  # said once, when the plugin starts
    plain, secure = webhook.url("ok"), https_webhook.url("ok")
    http_delivery, https_delivery = r.deliver([plain, secure])
    assert http_delivery.outcome == events.DELIVERED
    assert https_delivery.outcome == events.FAILED and https_delivery.attempt == 1
    assert "TLS setup failed" in https_delivery.error
    assert https_webhook.requests_for(secure) == []


def test_ssl_verify_off_in_config(run, https_webhook):
    url = https_webhook.url("ok")
    (d,) = run(rest_notifier_ssl_verify=False).deliver([url])
    assert d.outcome == events.DELIVERED


@pytest.mark.parametrize("param", ["ceilometer-alarm-ssl-verify", "aodh-alarm-ssl-verify"])
def test_per_url_verify_off_overrides_config_and_is_removed(run, https_webhook, param):
    url = https_webhook.url("ok", query=f"{param}=0&team=db")
    (d,) = run(rest_notifier_ssl_verify=True).deliver([url])
    assert d.outcome == events.DELIVERED
    (request,) = https_webhook.requests_for(url)
    assert request.query == {"team": ["db"]}


@pytest.mark.parametrize("param", ["ceilometer-alarm-ssl-verify", "aodh-alarm-ssl-verify"])
def test_per_url_verify_on_overrides_config_off(run, https_webhook, param):
    url = https_webhook.url("ok", query=f"{param}=1")
    (d,) = run(rest_notifier_ssl_verify=False).deliver([url])
    assert d.outcome == events.FAILED and "TLS" in d.error


def test_mutual_tls_with_certificate_and_key_files(run, mtls_webhook, tls):
    url = mtls_webhook.url("ok")
    (d,) = run(
        rest_notifier_ca_bundle_certificate_path=str(tls.ca_path),
        rest_notifier_certificate_file=str(tls.client_cert_path),
        rest_notifier_certificate_key=str(tls.client_key_path),
    ).deliver([url])
    assert d.outcome == events.DELIVERED
    (request,) = mtls_webhook.requests_for(url)
    assert ("email", "ceilo-notifier-client@example.org") in request.client_cert["subjectAltName"]


def test_mutual_tls_with_one_combined_pem(run, mtls_webhook, tls):
    url = mtls_webhook.url("ok")
    (d,) = run(
        rest_notifier_ca_bundle_certificate_path=str(tls.ca_path),
        rest_notifier_certificate_file=str(tls.client_combined_path),
    ).deliver([url])
    assert d.outcome == events.DELIVERED


def test_mutual_tls_without_client_certificate_is_refused(run, mtls_webhook, tls):
    url = mtls_webhook.url("ok")
    (d,) = run(
        rest_notifier_ca_bundle_certificate_path=str(tls.ca_path), rest_notifier_max_retries=1
    ).deliver([url])
    # The webhook's TLS alert is its configuration, not an outage: not retried.
    assert d.outcome == events.FAILED and d.attempt == 1
    assert "TLS error" in d.error and "CERTIFICATE_REQUIRED" in d.error
    assert mtls_webhook.requests_for(url) == []


def test_non_json_reason_data_is_logged_and_sent_as_text(run, webhook, caplog):
    url = webhook.url("ok")
    (d,) = run().deliver([url], alarm_id="odd-data", reason_data={"ids": {1}, "at": object()})
    assert d.outcome == events.DELIVERED
    body = webhook.requests_for(url)[0].json()
    assert body["reason_data"]["ids"] == "{1}"
    assert "Alarm odd-data: reason_data is not JSON-serialisable" in caplog.text


def test_a_plugin_that_raises_fails_only_its_own_action(make_conf, webhook, caplog):
    from ceilo_notifier import notifiers

    class Broken(notifiers.AlarmNotifier):
        def notify(self, action, notification):
            raise RuntimeError("boom")

    conf = make_conf()
    plugins = engine.load_plugins(conf)
    plugins["broken"] = Broken(conf)
    the_engine = engine.Engine(conf, plugins=plugins)
    try:
        good = webhook.url("ok")
        deliveries = rpc_consumer.NotifierEndpoint(conf, the_engine).handle(
            {"alarm_id": "raiser", "actions": ["broken://x", good]}
        )
        for d in deliveries:
            assert d.wait(10)
    finally:
        the_engine.stop()
    assert [d.outcome for d in deliveries] == [events.FAILED, events.DELIVERED]
    assert (
        "Alarm raiser: delivery to broken://x failed after 1 attempt(s): plugin Broken "
        "raised RuntimeError: boom" in caplog.text
    )
