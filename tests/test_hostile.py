"""What a hostile webhook, URL, plugin or caller can do to the service: nothing a user notices.

Every peer is a real server on 127.0.0.1 (see tests/hostile.py). The in-process
tests use the ``run`` fixture; the others run the service as operators run it and
cast over the real broker. They assert what a user sees: the healthy alarm
arrives in time, memory stays bounded, the log line exists and is one line.
"""

from __future__ import annotations

import base64
import concurrent.futures
import re
import signal
import time
import urllib.request
import uuid

import pytest

from ceilo_notifier import events
from tests import dns, helpers, hostile
from tests.helpers import ROOT, alarm, complete_lines, free_port, install_package, wait_until

TIMED_OUT = re.compile(r"time(d)?[ -]?out|within \d+(\.\d+)? ?s", re.IGNORECASE)


@pytest.fixture
def names():
    """Host names of the test's choosing, answered by a DNS server on loopback
    (the service is pointed at it with ``dns_nameservers=[names.address]``)."""
    server = dns.DnsServer()
    yield server
    server.close()


@pytest.fixture
def background():
    pool = concurrent.futures.ThreadPoolExecutor(4)
    yield pool
    pool.shutdown(wait=False, cancel_futures=True)


def alarm_lines(log: str, *needles: str) -> list[str]:
    """The service's log lines that contain every one of needles."""
    return [line for line in log.splitlines() if all(n in line for n in needles)]


def scrape(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def gauge(text: str, name: str) -> float | None:
    m = re.search(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


# -- (a) a webhook that drips its answer ----------------------------------------


@pytest.mark.parametrize("mode", ["body", "headers"])
def test_a_dripping_webhook_is_cut_at_the_timeout_while_others_are_delivered(
    run, webhook, background, mode
):
    drip = hostile.DripServer(mode=mode, interval=0.5)
    try:
        r = run(rest_notifier_timeout=4, rest_notifier_max_retries=0)
        started = time.monotonic()
        dripping = background.submit(r.deliver, [drip.url()], timeout=12, alarm_id="drip")
        assert wait_until(lambda: drip.requests, 5), "the drip server got no request"
        good = webhook.url("ok")
        handed = time.monotonic()
        (g,) = r.deliver([good], timeout=5, alarm_id="beside-the-drip")
        assert g.outcome == events.DELIVERED and time.monotonic() - handed < 2
        assert not dripping.done(), "the good alarm waited for the dripping one"
        (d,) = dripping.result(timeout=15)
        elapsed = time.monotonic() - started
        assert d.outcome == events.FAILED and d.attempt == 1, (d.outcome, d.error)
        assert d.error and TIMED_OUT.search(d.error), d.error
        assert elapsed < 8, f"the attempt lasted {elapsed:.1f} s with rest_notifier_timeout=4"
        assert len(webhook.requests_for(good)) == 1
    finally:
        drip.close()


def test_a_dripping_webhook_is_retried_each_attempt_within_the_timeout(run):
    drip = hostile.DripServer(mode="body", interval=0.5)
    try:
        r = run(rest_notifier_timeout=1, rest_notifier_max_retries=1)
        started = time.monotonic()
        (d,) = r.deliver([drip.url()], timeout=10, alarm_id="drip-retried")
        elapsed = time.monotonic() - started
        assert r.outcomes(d) == [events.RETRYING, events.FAILED]
        assert d.attempt == 2 and TIMED_OUT.search(d.error or ""), d.error
        assert len(drip.requests) == 2
        assert elapsed < 4.5, f"two attempts of at most 1 s took {elapsed:.1f} s"
    finally:
        drip.close()


# -- (b) a webhook that answers 200 with an endless body ------------------------


@pytest.mark.parametrize("mode", ["length", "chunked"])
def test_an_endless_body_is_delivered_and_not_read(run, mode):
    endless = hostile.EndlessBody(mode=mode)
    try:
        r = run(rest_notifier_timeout=5, rest_notifier_max_retries=0)
        started = time.monotonic()
        (d,) = r.deliver([endless.url()], timeout=15, alarm_id=f"endless-{mode}")
        elapsed = time.monotonic() - started
        assert d.outcome == events.DELIVERED and d.status_code == 200, (d.outcome, d.error)
        assert elapsed < 3, f"a 200 took {elapsed:.1f} s to be delivered"
        assert wait_until(lambda: endless.open == 0, 5), "the connection was kept open"
        assert endless.bytes_sent < 16 * hostile.MB, f"{endless.bytes_sent} bytes were taken"
    finally:
        endless.close()


def test_endless_bodies_do_not_grow_the_service(start_notifier, topic, caster, webhook):
    endless = hostile.EndlessBody(mode="length")
    try:
        notifier = start_notifier(
            topic, alarm={"rest_notifier_timeout": 10, "rest_notifier_max_retries": 0}
        )
        client = caster(topic)
        # Warm up the HTTP path once, so what follows measures the bodies only.
        client.cast(alarm([endless.url(), webhook.url("ok")], alarm_id="endless-warm"))
        assert notifier.wait_for_log(rf"Alarm endless-warm\b.*127\.0\.0\.1:{endless.port}", 15)
        time.sleep(0.5)
        pid = notifier.proc.pid
        before, before_peak = hostile.tree_rss(pid), hostile.tree_peak_rss(pid)
        sampler = hostile.RssSampler(pid)
        for i in range(4):
            client.cast(alarm([endless.url()], alarm_id=f"endless-{i}"))
        done = notifier.wait_for_log(r"Alarm endless-\d\b", 20, count=4)
        peak = sampler.stop()
        growth = max(peak - before, hostile.tree_peak_rss(pid) - before_peak)
        log = notifier.log()
        assert growth < 50 * hostile.MB, (
            f"4 deliveries to a 2 GB body grew the service by {growth / hostile.MB:.0f} MB "
            f"(the server sent {endless.bytes_sent / hostile.MB:.0f} MB)"
        )
        assert done, log[-3000:]
        for i in range(4):
            assert alarm_lines(log, f"Alarm endless-{i} delivered to"), log[-3000:]
    finally:
        endless.close()


# -- (c) dead hosts beside a healthy one ------------------------------------------


def test_dead_hosts_do_not_delay_healthy_alarms(start_notifier, topic, caster, webhook):
    # Hosts of their own: deliveries to one address share its slots, whatever the port.
    dead = [hostile.Blackhole("127.0.0.2"), hostile.Blackhole("127.0.0.3")]
    try:
        notifier = start_notifier(
            topic, alarm={"rest_notifier_timeout": 30, "rest_notifier_max_retries": 0}
        )
        client = caster(topic)
        for i in range(300):
            for j, host in enumerate(dead):
                client.cast(alarm([host.url()], alarm_id=f"dead-{j}-{i}"))

        # Until the dead hosts hold whatever connections the service gives them.
        seen = {"count": -1, "since": time.monotonic()}

        def settled():
            count = sum(h.accepted for h in dead)
            if count != seen["count"]:
                seen.update(count=count, since=time.monotonic())
            return count and time.monotonic() - seen["since"] > 1.0

        assert wait_until(settled, 15), "the dead hosts were never connected to"
        took = helpers.time_healthy_alarms(client, webhook, 20, "healthy")
        late = {url: t for url, t in took.items() if t is None or t > 5}
        assert not late, (
            f"{len(late)} of 20 healthy alarms were not delivered within 5 s behind two dead "
            f"hosts holding {[h.accepted for h in dead]} connections: "
            f"{sorted(late.values(), key=str)}"
        )
        log = notifier.log()
        assert not re.search(r"Alarm dead-\d-\d+\b.*(failed|retrying|delivered)", log), (
            "the dead-host deliveries should still be hanging (rest_notifier_timeout=30)"
        )
    finally:
        for host in dead:
            host.close()


def test_spellings_of_one_address_share_its_slots(run):
    """Spelling a host otherwise (full-width digits, ideographic dots, hex) does not
    buy a tenant more slots on it: the share is the address the client connects to."""
    dead = hostile.Blackhole("127.0.0.2")
    try:
        r = run(per_host_concurrency=2, rest_notifier_timeout=5, rest_notifier_max_retries=0)
        spellings = ["127.0.0.2", "１２７.０.０.２", "127。0。0。2", "𝟏𝟐𝟕.0.0.2", "0x7f.0.0.2"]
        for host in spellings + ["0x7f000002"]:
            r.endpoint.handle(alarm([dead.url().replace("127.0.0.2", host)]))
        assert wait_until(lambda: dead.accepted >= 2, 5)
        time.sleep(1.0)
        assert dead.accepted == 2
    finally:
        dead.close()


# -- (d) plugins that fail in odd ways -------------------------------------------

ODD = ["odd-reason", "odd-dict", "odd-exit", "odd-interrupt", "odd-base", "odd-str", "odd-block"]


@pytest.fixture(scope="module")
def odd_plugins_env(tmp_path_factory) -> dict[str, str]:
    """The odd plugins, pip-installed once for the tests of this module (a build
    takes seconds); each test's service records its calls in a file of its own."""
    site = tmp_path_factory.mktemp("odd-plugins")
    return install_package(ROOT / "tests" / "plugins" / "ceilo-notifier-odd", site)


@pytest.mark.parametrize("scheme", ODD)
def test_a_plugin_that_fails_oddly_fails_only_its_own_deliveries(
    tmp_path, start_notifier, topic, caster, webhook, odd_plugins_env, scheme
):
    calls = tmp_path / "calls.txt"
    metrics_port = free_port()
    grace = 5
    notifier = start_notifier(
        topic,
        alarm={"rest_notifier_timeout": 1, "plugin_timeout": 1, "rest_notifier_max_retries": 0},
        default={"shutdown_grace_period": grace},
        extra={"metrics": {"port": metrics_port}},
        env={
            **odd_plugins_env,
            "CEILO_ODD_CALLS": str(calls),
            "CEILO_ODD_BLOCK": "3",
        },
    )
    assert scheme in notifier.log()
    alarm_id = f"{scheme}-{uuid.uuid4().hex[:6]}"
    odd, good = f"{scheme}://x/y", webhook.url("ok")
    client = caster(topic)
    transitions = [("ok", "alarm"), ("alarm", "ok"), ("ok", "alarm")]
    for i, (previous, current) in enumerate(transitions, 1):
        client.cast(alarm([odd, good], alarm_id=alarm_id, previous=previous, current=current))
        # Casts are consumed in parallel: each is accepted (both actions at
        # once) before the next is sent, which fixes their order.
        assert len(webhook.wait_for(good, count=i, timeout=10)) >= i

    def called() -> list[str]:
        return complete_lines(calls)

    # The good action, every time, and in order.
    got = webhook.wait_for(good, count=3, timeout=10)
    assert [r.json()["current"] for r in got] == ["alarm", "ok", "alarm"]
    # The odd action, every time too: its later transitions are attempted.
    assert wait_until(lambda: len(called()) >= 3, 10), called()
    assert called() == [f"{scheme} {alarm_id} {c}" for _, c in transitions]
    # One log line per odd delivery, naming the alarm, saying it failed.
    assert notifier.wait_for_log(rf"{re.escape(alarm_id)}.*{re.escape(scheme)}://", 10, count=3)
    time.sleep(0.5)
    log = notifier.log()
    lines = alarm_lines(log, alarm_id, f"{scheme}://")
    assert len(lines) == 3, lines
    assert all(re.search(r" (ERROR|WARNING) ", line) for line in lines), lines
    assert not [line for line in lines if "delivered to" in line], lines
    assert len(alarm_lines(log, f"Alarm {alarm_id} delivered to http://")) == 3
    assert "Traceback" not in log, log[max(0, log.index("Traceback") - 500) :][:3000]
    # Nothing is left in flight once the plugin has given up.
    if scheme == "odd-block":
        time.sleep(3)
    in_flight = wait_until(
        lambda: gauge(scrape(metrics_port), "ceilo_notifier_deliveries_in_flight") == 0, 5
    )
    assert in_flight, scrape(metrics_port)
    assert notifier.alive()
    stopping = time.monotonic()
    code = notifier.stop(signal.SIGTERM, timeout=30)
    took = time.monotonic() - stopping
    assert took < grace + 4, f"SIGTERM took {took:.1f} s (shutdown_grace_period = {grace})"
    assert code == 0


# -- (e) target safety by default ------------------------------------------------

REFUSED_HOSTS = [
    "127.0.0.1",
    "[::1]",
    "0.0.0.0",
    "[::ffff:127.0.0.1]",
    "[64:ff9b::a9fe:a9fe]",
    "[2002:a9fe:a9fe::1]",
    "localhost",
]


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_loopback_unspecified_and_metadata_are_refused_by_default(run, webhook, caplog, host):
    caplog.set_level("INFO")
    url = f"http://{host}:{webhook.port}/ok/{uuid.uuid4().hex[:8]}"
    alarm_id = f"refuse-{uuid.uuid4().hex[:6]}"
    (d,) = run(rest_notifier_allowed_networks=[], rest_notifier_max_retries=2).deliver(
        [url], alarm_id=alarm_id
    )
    assert d.outcome == events.FAILED and d.attempt == 1, (d.outcome, d.attempt, d.error)
    assert "target refused" in (d.error or ""), d.error
    assert webhook.requests_for(url) == []
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.levelname in ("WARNING", "ERROR") and alarm_id in r.getMessage()
    ]
    assert len(lines) == 1, lines
    assert "\n" not in lines[0]


def test_an_unresolvable_name_is_retried_then_failed(run, names):
    names.set("no-such-host.invalid", None)
    url = f"http://no-such-host.invalid:{free_port()}/ok"
    r = run(
        rest_notifier_allowed_networks=[],
        rest_notifier_max_retries=1,
        dns_nameservers=[names.address],
    )
    (d,) = r.deliver([url], alarm_id="unresolvable")
    assert r.outcomes(d) == [events.RETRYING, events.FAILED], d.error
    assert d.attempt == 2 and re.search(r"resol|no-such-host", d.error or ""), d.error
    assert "target refused" not in d.error


def test_a_name_whose_lookup_failed_is_not_looked_up_again_and_connected_to(run, webhook, names):
    """A failed lookup fails the attempt: nothing resolves the name behind the check's back."""
    names.set("rebind.test", None, ["127.0.0.1"])
    url = f"http://rebind.test:{webhook.port}/ok/{uuid.uuid4().hex[:8]}"
    r = run(
        rest_notifier_denied_networks=["127.0.0.0/8", "::1/128"],
        rest_notifier_allowed_networks=[],
        rest_notifier_max_retries=1,
        dns_nameservers=[names.address],
    )
    (d,) = r.deliver([url], alarm_id="rebind")
    assert webhook.requests_for(url) == [], "the name was resolved again and connected to"
    assert r.outcomes(d) == [events.RETRYING, events.FAILED], (d.outcome, d.error)
    assert "target refused" in (d.error or ""), d.error


# -- (f) a name with several addresses --------------------------------------------


def test_a_name_with_an_unreachable_ipv6_address_first_is_delivered_on_ipv4(run, webhook, names):
    assert hostile.refuses("::1", webhook.port)
    names.set("dual.test", ["::1", "127.0.0.1"])
    url = f"http://dual.test:{webhook.port}/ok/{uuid.uuid4().hex[:8]}"
    (d,) = run(
        rest_notifier_allowed_networks=["127.0.0.0/8", "::1/128"],
        rest_notifier_max_retries=0,
        dns_nameservers=[names.address],
    ).deliver([url], alarm_id="dual-stack")
    assert d.outcome == events.DELIVERED and d.attempt == 1, (d.outcome, d.error)
    assert len(webhook.requests_for(url)) == 1


def test_tls_is_verified_for_the_name_whatever_address_answers(run, https_webhook, tls):
    """localhost is ::1 and 127.0.0.1, in that order (/etc/hosts, and the
    loopback addresses the resolver adds for localhost)."""
    assert hostile.refuses("::1", https_webhook.port)
    url = https_webhook.url("ok").replace("127.0.0.1", "localhost")
    (d,) = run(
        rest_notifier_ca_bundle_certificate_path=str(tls.ca_path),
        rest_notifier_allowed_networks=["127.0.0.0/8", "::1/128"],
        rest_notifier_max_retries=0,
    ).deliver([url])
    assert d.outcome == events.DELIVERED, d.error
    assert len(https_webhook.requests_for(url)) == 1


def test_every_address_of_a_name_must_be_permitted(run, webhook, names):
    names.set("mixed.test", ["127.0.0.1", "169.254.169.254"])
    url = f"http://mixed.test:{webhook.port}/ok/{uuid.uuid4().hex[:8]}"
    (d,) = run(rest_notifier_max_retries=2, dns_nameservers=[names.address]).deliver(
        [url], alarm_id="mixed"
    )
    assert d.outcome == events.FAILED and d.attempt == 1, (d.outcome, d.error)
    assert "target refused" in (d.error or "") and "169.254.169.254" in d.error, d.error
    assert webhook.requests_for(url) == []


# -- (g) proxies --------------------------------------------------------------------


@pytest.fixture
def clean_proxy_env(monkeypatch):
    """No proxy setting of the test's own environment reaches the service."""
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def proxy():
    server = hostile.Proxy()
    yield server
    server.close()


def test_http_proxy_from_the_environment_carries_the_post(
    clean_proxy_env, proxy, start_notifier, topic, caster, webhook
):
    start_notifier(topic, env={"HTTP_PROXY": proxy.proxy_url})
    url = webhook.url("ok")
    caster(topic).cast(alarm([url], alarm_id="via-proxy"))
    (request,) = webhook.wait_for(url)
    assert request.json()["alarm_id"] == "via-proxy"
    assert f"POST {url} HTTP/1.1" in proxy.request_lines, proxy.request_lines


def test_https_proxy_from_the_environment_tunnels_the_post(
    clean_proxy_env, proxy, start_notifier, topic, caster, https_webhook, tls
):
    start_notifier(
        topic,
        alarm={"rest_notifier_ca_bundle_certificate_path": tls.ca_path},
        env={"HTTPS_PROXY": proxy.proxy_url},
    )
    url = https_webhook.url("ok")
    caster(topic).cast(alarm([url], alarm_id="via-tunnel"))
    assert https_webhook.wait_for(url)
    assert f"CONNECT 127.0.0.1:{https_webhook.port} HTTP/1.1" in proxy.request_lines, (
        proxy.request_lines
    )


def test_no_proxy_bypasses_the_proxy(
    clean_proxy_env, proxy, start_notifier, topic, caster, webhook
):
    start_notifier(topic, env={"HTTP_PROXY": proxy.proxy_url, "NO_PROXY": "127.0.0.1"})
    url = webhook.url("ok")
    caster(topic).cast(alarm([url], alarm_id="no-proxy"))
    assert webhook.wait_for(url)
    time.sleep(0.3)
    assert proxy.request_lines == []


def test_the_proxy_option_overrides_the_environment_and_its_password_is_masked(
    clean_proxy_env, proxy, start_notifier, topic, caster, webhook
):
    decoy = hostile.Proxy()
    try:
        notifier = start_notifier(
            topic,
            alarm={"rest_notifier_proxy": f"http://user:secret@127.0.0.1:{proxy.port}"},
            env={"HTTP_PROXY": decoy.proxy_url},
            debug=True,
        )
        url = webhook.url("ok")
        caster(topic).cast(alarm([url], alarm_id="proxy-option"))
        assert webhook.wait_for(url)
        assert decoy.request_lines == []
        seen = [r for r in proxy.requests if r.line == f"POST {url} HTTP/1.1"]
        assert len(seen) == 1, proxy.request_lines
        expected = base64.b64encode(b"user:secret").decode()
        assert seen[0].headers.get("proxy-authorization") == f"Basic {expected}"
        assert notifier.wait_for_log(r"Alarm proxy-option delivered", 5)
        log = notifier.log()
        assert "secret" not in log
        assert "***" in log
    finally:
        decoy.close()


def test_through_a_proxy_an_address_in_any_spelling_is_judged_before_the_proxy_is_asked(
    clean_proxy_env, proxy, run
):
    """The proxy (on loopback, outside the allowed networks: exempt as the operator's)
    would deliver to loopback however it is spelt; the service never asks it to."""
    allowed = helpers.Webhook(host="127.0.0.2")
    refused = helpers.Webhook()
    try:
        r = run(
            rest_notifier_proxy=proxy.proxy_url,
            rest_notifier_allowed_networks=["127.0.0.2/32"],
            rest_notifier_max_retries=2,
        )
        spellings = [
            "0x7f.1",
            "2130706433",
            "127.1",
            "0177.0.0.1",
            "１２７.０.０.１",
            "127。0。0。1",
        ]
        deliveries = r.deliver([*(refused.url("ok").replace("127.0.0.1", h) for h in spellings)])
        for d in deliveries:
            assert d.outcome == events.FAILED and d.attempt == 1, (d.action, d.error)
            assert "target refused" in d.error and "outside rest_notifier_allowed" in d.error
        assert proxy.accepted == 0 and refused.server.connections == 0
        (d,) = r.deliver([allowed.url("ok")])
        assert d.outcome == events.DELIVERED, d.error
        assert proxy.request_lines == [f"POST {d.action} HTTP/1.1"]
    finally:
        allowed.close()
        refused.close()


def test_the_proxy_reads_numeric_hosts_as_addresses(clean_proxy_env, proxy, run, webhook):
    """Why the test above matters: where loopback is allowed, the proxy delivers them."""
    r = run(rest_notifier_proxy=proxy.proxy_url)
    url = webhook.url("ok").replace("127.0.0.1", "0x7f.1")
    (d,) = r.deliver([url])
    assert d.outcome == events.DELIVERED, d.error
    assert proxy.request_lines == [f"POST {url} HTTP/1.1"]
    assert len(webhook.requests_for(url)) == 1


@pytest.mark.parametrize("addresses", [["127.0.0.1"], ["127.0.0.1", "127.0.0.2"]])
def test_a_webhook_aimed_at_a_proxy_itself_is_refused_at_the_socket(
    clean_proxy_env, proxy, run, names, monkeypatch, addresses
):
    """The resolver lets the proxies' names through for everyone; the socket check
    exempts them only for the requests sent through the proxy. Here a plain http
    action names the https proxy: it goes there directly, and no connection is made."""
    names.set("proxy.test", addresses)
    monkeypatch.setenv("HTTPS_PROXY", f"http://proxy.test:{proxy.port}")
    r = run(
        rest_notifier_allowed_networks=[],
        rest_notifier_max_retries=2,
        dns_nameservers=[names.address],
    )
    (d,) = r.deliver([f"http://proxy.test:{proxy.port}/x"])
    assert d.outcome == events.FAILED and d.attempt == 1, (d.outcome, d.error)
    assert "target refused: proxy.test resolves to 127.0.0.1, in denied network" in d.error
    assert proxy.accepted == 0


# -- (h) callers sending control characters ---------------------------------------

FORGED = "1999-12-31 23:59:59.999 1 INFO fake [-] forged"


def test_control_characters_from_callers_cannot_forge_log_lines(
    start_notifier, topic, caster, webhook
):
    notifier = start_notifier(topic)
    good = webhook.url("ok")
    data = alarm(
        [
            good,
            "log://x/y",
            f"nope://z\n{FORGED} drop\r\n",
        ],
        alarm_id=f"nl-{uuid.uuid4().hex[:4]}\n{FORGED} id",
        alarm_name=f"name\r{FORGED} name\x1b[2J\x07\x08",
        severity="low\x0b\x0c\x85\x7f",
        reason=f"ok\n{FORGED} line",
    )
    caster(topic).cast(data)
    (request,) = webhook.wait_for(good)
    body = request.json()
    assert body["alarm_id"] == data["alarm_id"] and body["reason"] == data["reason"]
    assert notifier.wait_for_log(r"forged drop", 10)
    assert notifier.wait_for_log(r"forged line", 10)
    assert notifier.wait_for_log(r"forged id.*delivered to", 10)
    time.sleep(0.5)
    log = notifier.log()
    forged = [line for line in log.split("\n") if line.startswith("1999-12-31")]
    assert not forged, forged
    for char in "\r\x1b\x07\x08\x0b\x0c\x85\x7f":
        assert char not in log, f"{char!r} written raw to the log"
    # Each caller text stays on the line that logs it.
    assert alarm_lines(log, "forged id", "forged line", "forged name"), log[-3000:]
    assert alarm_lines(log, "forged id", "forged drop"), log[-3000:]
    assert alarm_lines(log, "forged id", "delivered to"), log[-3000:]


# -- (k) a tenant that grows the service's memory or its metrics ----------------


def test_test_actions_keep_only_the_newest_notifications(make_conf):
    from urllib import parse

    from ceilo_notifier.notification import AlarmNotification
    from ceilo_notifier.notifiers import test as test_notifier

    plugin = test_notifier.TestAlarmNotifier(make_conf())
    test_notifier.TestAlarmNotifier.reset()
    try:
        for i in range(10_000):
            plugin.notify(parse.urlsplit(f"test://t/{i}"), AlarmNotification(alarm_id=f"a-{i}"))
        kept = list(test_notifier.TestAlarmNotifier.notifications)
        assert len(kept) == test_notifier.KEPT < 10_000
        assert kept[-1][0] == "test://t/9999" and kept[0][1].alarm_id == f"a-{10_000 - len(kept)}"
    finally:
        test_notifier.TestAlarmNotifier.reset()


def test_unknown_schemes_make_one_metrics_series(start_notifier, topic, caster, webhook):
    port = free_port()
    start_notifier(topic, alarm={"max_actions": 101}, extra={"metrics": {"port": port}})
    client = caster(topic)
    good = webhook.url("ok")
    for n in range(5):
        schemes = [f"x{uuid.uuid4().hex[:8]}" for _ in range(100)]
        client.cast(alarm([f"{s}://h/" for s in schemes] + [good], alarm_id=f"schemes-{n}"))
    dropped = re.compile(r'^ceilo_notifier_deliveries_total\{.*outcome="dropped".*\} (\S+)$', re.M)

    def dropped_lines(text):
        return [line for line in text.splitlines() if dropped.match(line)]

    def scraped():
        text = scrape(port)
        return text if sum(float(v) for v in dropped.findall(text)) >= 500 else None

    text = wait_until(scraped, 20)
    assert text, scrape(port)
    series = dropped_lines(text)
    assert series == [
        'ceilo_notifier_deliveries_total{outcome="dropped",scheme="unknown"} 500.0'
    ], series
    assert not re.search(r'scheme="x[0-9a-f]', text)
    assert len(webhook.wait_for(good, 5, timeout=10)) == 5
