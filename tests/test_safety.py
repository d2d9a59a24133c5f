"""Target safety: denied and allowed networks, checked on the resolved address."""

from __future__ import annotations

import logging

import pytest

from ceilo_notifier import events


def test_cloud_metadata_is_refused_by_default_without_retries(run, caplog):
    caplog.set_level(logging.INFO)
    (d,) = run(rest_notifier_max_retries=3, rest_notifier_allowed_networks=[]).deliver(
        ["http://169.254.169.254/latest/meta-data/"], alarm_id="ssrf"
    )
    assert d.outcome == events.FAILED and d.attempt == 1
    assert (
        "target refused: 169.254.169.254 resolves to 169.254.169.254, in denied network "
        "169.254.0.0/16" in d.error
    )
    lines = [r for r in caplog.records if "target refused" in r.getMessage()]
    assert len(lines) == 1 and "Alarm ssrf" in lines[0].getMessage()


def test_a_host_name_resolving_to_a_denied_address_is_refused(run, webhook):
    url = webhook.url("ok").replace("127.0.0.1", "localhost")
    (d,) = run(
        rest_notifier_denied_networks=["127.0.0.0/8", "::1/128"], rest_notifier_allowed_networks=[]
    ).deliver([url])
    assert d.outcome == events.FAILED and d.attempt == 1
    assert "localhost resolves to" in d.error and "denied network" in d.error
    assert webhook.requests_for(url) == []


@pytest.mark.parametrize(
    ("denied", "allowed", "delivered"),
    [
        (["127.0.0.0/8"], [], False),
        ([], ["10.0.0.0/8"], False),
        (["127.0.0.0/8"], ["127.0.0.1/32"], True),
        ([], ["127.0.0.0/8", "::1/128"], True),
    ],
)
def test_allowed_networks_win_and_restrict(run, webhook, denied, allowed, delivered):
    url = webhook.url("ok")
    (d,) = run(
        rest_notifier_denied_networks=denied, rest_notifier_allowed_networks=allowed
    ).deliver([url])
    assert (d.outcome == events.DELIVERED) is delivered
    assert len(webhook.requests_for(url)) == (1 if delivered else 0)


def test_tls_still_verifies_the_host_name_after_the_address_check(run, https_webhook, tls):
    url = https_webhook.url("ok").replace("127.0.0.1", "localhost")
    (d,) = run(rest_notifier_ca_bundle_certificate_path=str(tls.ca_path)).deliver([url])
    assert d.outcome == events.DELIVERED
