"""Target safety: denied and allowed networks, checked on the resolved address."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import uuid

import pytest

from ceilo_notifier import events
from ceilo_notifier.notifiers import safety
from tests import helpers


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


# -- the host as the client reads it ---------------------------------------------------

# 127.0.0.1 as yarl's IDNA (UTS 46) normalisation makes it; ipaddress reads none of them.
UNICODE_LOOPBACK = [
    "１２７.０.０.１",  # full-width digits
    "127。0。0。1",  # ideographic full stops
    "127．0．0．1",  # full-width full stops
    "127｡0｡0｡1",  # half-width ideographic full stops
    "①②⑦.0.0.1",  # circled digits
    "𝟏𝟐𝟕.0.0.1",  # mathematical bold digits
]
# Loopback (and 0.0.0.0, which Linux connects to loopback) in the forms getaddrinfo, inet_aton
# and proxies read as addresses.
NUMERIC_LOOPBACK = [
    "2130706433",
    "0177.0.0.1",
    "0x7f.1",
    "0X7F.0.0.1",
    "127.1",
    "017700000001",
    "127.0.0.1.",
    "0",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
]


@pytest.fixture
def lone_webhook():
    """A webhook of the test's own, so that the connections it counts are the test's."""
    server = helpers.Webhook()
    yield server
    server.close()


@pytest.fixture
def default_policy(make_conf):
    return safety.AddressPolicy(make_conf().alarm.rest_notifier_denied_networks)


def on(host: str, server, path: str = "ok") -> str:
    return f"http://{host}:{server.port}/{path}/{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("host", UNICODE_LOOPBACK + NUMERIC_LOOPBACK)
def test_loopback_in_any_spelling_is_refused_without_a_connection(run, lone_webhook, host):
    url = on(host, lone_webhook)
    (d,) = run(rest_notifier_allowed_networks=[], rest_notifier_max_retries=2).deliver([url])
    assert d.outcome == events.FAILED and d.attempt == 1, (d.outcome, d.attempt, d.error)
    assert "target refused" in d.error and "in denied network" in d.error, d.error
    assert lone_webhook.server.connections == 0


@pytest.mark.parametrize("host", ["127.0.0.1", *UNICODE_LOOPBACK])
def test_loopback_in_those_spellings_is_delivered_where_allowed(run, lone_webhook, host):
    url = on(host, lone_webhook)
    (d,) = run().deliver([url])
    assert d.outcome == events.DELIVERED, d.error
    assert len(lone_webhook.requests_for(url)) == 1


def test_a_legacy_numeric_form_is_no_name_to_look_up_even_where_allowed(run, lone_webhook):
    """getaddrinfo would read ``0x7f.1`` as 127.0.0.1; the resolver looks up host
    names only, so it is never connected to, wherever it would point."""
    (d,) = run(rest_notifier_max_retries=0).deliver([on("0x7f.1", lone_webhook)])
    assert d.outcome == events.FAILED and "name resolution failed" in d.error, d.error
    assert lone_webhook.server.connections == 0


@pytest.mark.parametrize("host", ["%31%32%37.0.0.1", "0x7f%2e1", "127.0.0.1%2500.example.org"])
def test_a_host_proxies_and_resolvers_may_read_differently_is_refused(run, lone_webhook, host):
    (d,) = run(rest_notifier_max_retries=2).deliver([on(host, lone_webhook)])
    assert d.outcome == events.FAILED and d.attempt == 1, (d.outcome, d.error)
    assert "target refused" in d.error and "neither a host name nor an IP address" in d.error
    assert lone_webhook.server.connections == 0


def test_an_ipv6_literal_that_is_not_one_is_dropped(run, lone_webhook):
    actions = [on(host, lone_webhook) for host in ("[::１]", "[::ffff:0x7f.1]")]
    assert run().deliver(actions) == []
    assert lone_webhook.server.connections == 0


def test_the_socket_check_alone_stops_a_literal_the_first_check_missed(
    run, lone_webhook, monkeypatch
):
    """Every connection's peer is judged just before connecting, whatever was checked before."""
    monkeypatch.setattr(safety.AddressPolicy, "check_literal", lambda self, host: None)
    r = run(rest_notifier_allowed_networks=[], rest_notifier_max_retries=2)
    for host in ("１２７.０.０.１", "127.0.0.1", "[::ffff:127.0.0.1]"):
        (d,) = r.deliver([on(host, lone_webhook)])
        assert d.outcome == events.FAILED and d.attempt == 1, (host, d.outcome, d.error)
        assert d.error.startswith("target refused: "), d.error
        assert "resolves to 127.0.0.1, in denied network 127.0.0.0/8" in d.error, d.error
    assert lone_webhook.server.connections == 0


@pytest.mark.parametrize(
    ("host", "address"),
    [(h, "127.0.0.1") for h in UNICODE_LOOPBACK + NUMERIC_LOOPBACK if h != "0"]
    + [("0", "0.0.0.0"), ("０ｘ７ｆ.１", "127.0.0.1"), ("[::1]", "::1")]
    + [("１６９.２５４.１６９.２５４", "169.254.169.254"), ("fe80::1%25eth0", "fe80::1")],
)
def test_a_subscriber_host_is_judged_as_a_client_would_read_it(default_policy, host, address):
    """Zaqar's subscribers: the check another service's client relies on."""
    with pytest.raises(safety.TargetDenied, match=f"resolves to {re.escape(address)}"):
        default_policy.check_name(host.strip("[]"))


@pytest.mark.parametrize("host", ["93.184.216.34", "0x5db8d822", "1.2.3.4.5", "08.1"])
def test_a_public_or_not_numeric_subscriber_host_passes(default_policy, host):
    default_policy.check_name(host)


def test_the_socket_check_exempts_only_the_proxy_and_only_for_its_requests(default_policy):
    """PeerGuard alone: the proxy's address and port are exempt only for requests
    sent through it, a refused request opens nothing more, and a name is no peer."""

    async def check() -> None:  # on a loop, as the client runs it
        guard = safety.PeerGuard(default_policy, [("127.0.0.1", 3128)])

        def connect(host: str, port: int) -> None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            guard.socket_factory(
                (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))
            ).close()

        with safety.connecting("hook.test", proxy=("127.0.0.1", 3128)) as request:
            connect("127.0.0.1", 3128)
            assert request.refusal is None
            with pytest.raises(safety.TargetDenied, match="the proxy 127.0.0.1 resolves to 127"):
                connect("127.0.0.1", 3129)
        with safety.connecting("127.0.0.1") as request:
            with pytest.raises(safety.TargetDenied, match="127.0.0.1 resolves to 127.0.0.1"):
                connect("127.0.0.1", 3128)
            # After one refused peer, the request opens no other connection.
            with pytest.raises(safety.TargetDenied, match="127.0.0.1 resolves to 127.0.0.1"):
                connect("93.184.216.34", 80)
        with (
            safety.connecting("hook.test"),
            pytest.raises(safety.TargetDenied, match="not an addr"),
        ):
            connect("localhost", 80)  # the event loop would resolve it
        with safety.connecting("hook.test"):
            connect("93.184.216.34", 80)
        await guard.close()

    asyncio.run(check())
