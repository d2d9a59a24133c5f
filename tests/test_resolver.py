"""Name resolution against a real DNS server on loopback (tests/dns.py).

A zone whose nameserver never answers costs no thread and holds at most
``dns_lookups_per_domain`` lookups; every other name keeps its latency; what
a hostile zone answers (huge answers, CNAME chains and loops, names that
look like addresses) ends as addresses in order or as a resolution failure.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import pytest

from ceilo_notifier import events
from ceilo_notifier.notifiers import resolver
from tests import dns, helpers


@pytest.fixture(scope="module")
def dns_server():
    server = dns.DnsServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def hook():
    """A webhook on 127.0.0.2, the address every NAME.ok.test has."""
    server = helpers.Webhook(host=dns.WEBHOOK_ADDRESS)
    yield server
    server.close()


def lookup(server, *hosts, timeout=1.0, per_domain=4, family=socket.AF_UNSPEC):
    """Resolve hosts at once with a fresh resolver; each one's addresses or its error."""

    async def main():
        names = resolver.NameResolver([server.address], timeout=timeout, per_domain=per_domain)
        try:
            results = await asyncio.gather(
                *(names.resolve(h, 80, family) for h in hosts), return_exceptions=True
            )
        finally:
            await names.close()
        return [r if isinstance(r, BaseException) else [a["host"] for a in r] for r in results]

    return asyncio.run(main())


def unique(zone: str) -> str:
    return f"h{uuid.uuid4().hex[:10]}.{zone}"


# -- what a zone answers ------------------------------------------------------------


def test_both_families_are_kept_in_the_order_given(dns_server):
    (addresses,) = lookup(dns_server, "v6-a.ok.test")
    assert addresses == ["::1", "127.0.0.2"]


def test_an_answer_is_what_fits_a_datagram_cut_to_its_first_addresses(dns_server):
    fits, huge = lookup(dns_server, "big-60.ok.test", "big-300.ok.test")
    assert len(fits) == resolver.MAX_ADDRESSES
    assert fits[:3] == ["127.0.1.0", "127.0.1.1", "127.0.1.2"]
    # Not fetched again over TCP: thousands of addresses would cost tens of
    # milliseconds of CPU per lookup and sit in c-ares's cache.
    assert isinstance(huge, socket.gaierror), huge


def test_a_cname_chain_is_followed_and_a_loop_fails(dns_server):
    chain, loop = lookup(dns_server, "chain-8.ok.test", "loop.ok.test")
    assert chain == ["127.0.0.2"]
    assert isinstance(loop, socket.gaierror), loop


@pytest.mark.parametrize("name", ["127.1", "2130706433", "0x7f.0.0.1", "127.0.0.1.", "[::1]"])
def test_a_name_that_looks_like_an_address_is_not_turned_into_one(dns_server, name):
    """aiohttp hands canonical literals to no resolver; the rest are names to DNS."""
    (result,) = lookup(dns_server, name)
    assert isinstance(result, socket.gaierror), result


@pytest.mark.parametrize(
    "name",
    [
        "a" * 300,
        "a..b.ok.test",
        "a" * 64 + ".ok.test",
        "é" * 70,
        "a b.ok.test",
        "a%2e.ok.test",
        "a.ok.test\n",
        "",
        ".",
        # c-ares would ask for s1.stall.test, counted against evil.test
        "s1.stall.test\x00.evil.test",
    ],
)
def test_a_malformed_name_is_a_resolution_failure_and_asks_nothing(dns_server, name):
    before = list(dns_server.zones.names)
    (result,) = lookup(dns_server, name)
    assert isinstance(result, socket.gaierror), result
    assert len(str(result)) < 400
    assert dns_server.zones.names == before, "a malformed name was asked"


def test_idna_and_trailing_dots_resolve_as_dns_spells_them(dns_server):
    assert (
        lookup(dns_server, "bücher.ok.test", "xn--bcher-kva.ok.test", "a.ok.test.")
        == [["127.0.0.2"]] * 3
    )
    assert resolver.share_of("a.ok.test.") == resolver.share_of("b.OK.test") == "ok.test"


def test_names_without_a_dot_share_one_bound():
    assert resolver.share_of("a1") == resolver.share_of("a2.") == "."


def test_the_system_configuration_is_read_by_default():
    """/etc/hosts answers without a query; the nameservers are resolv.conf's."""

    async def main():
        names = resolver.NameResolver(timeout=1.0)
        try:
            local = [a["host"] for a in await names.resolve("localhost", 80, socket.AF_UNSPEC)]
            servers = names._channel_for_lookup().nameservers
        finally:
            await names.close()
        return local, servers

    local, servers = asyncio.run(main())
    assert "127.0.0.1" in local
    with open("/etc/resolv.conf") as conf:
        expected = [line.split()[1] for line in conf if line.split()[:1] == ["nameserver"]]
    assert [s.strip("[]") for s in servers] == [e.split("%")[0] for e in expected]


@pytest.mark.parametrize(
    "value, expected",
    [
        (["127.0.0.1"], ["127.0.0.1"]),
        (["127.0.0.1:5353", " ::1 "], ["127.0.0.1:5353", "[::1]"]),
        (["[::1]:53"], ["[::1]:53"]),
        ([""], []),
    ],
)
def test_nameservers_are_addresses_with_an_optional_port(value, expected):
    assert resolver.parse_nameservers(value) == expected


@pytest.mark.parametrize("value", ["dns.example.org", "127.0.0.1:0", "[::1]x", "1.2.3.4:99999"])
def test_a_nameserver_that_is_not_an_address_is_refused(value):
    with pytest.raises(ValueError, match="dns_nameservers"):
        resolver.parse_nameservers([value])


# -- a zone that never answers --------------------------------------------------------


def test_a_stalled_zone_holds_its_slots_only_and_fails_within_the_deadline(dns_server):
    async def main():
        names = resolver.NameResolver([dns_server.address], timeout=0.6, per_domain=2)
        before = dns_server.zones.names.copy()
        started = time.monotonic()
        stalled = [
            asyncio.ensure_future(names.resolve(unique("stall.test"), 80, 0)) for _ in range(20)
        ]
        await asyncio.sleep(0.1)
        healthy_started = time.monotonic()
        healthy = await names.resolve(unique("ok.test"), 80, 0)
        healthy_took = time.monotonic() - healthy_started
        results = await asyncio.gather(*stalled, return_exceptions=True)
        took = time.monotonic() - started
        asked = {n for n in dns_server.zones.names if n not in before and "stall" in n}
        entries_at_end = len(names.gate)
        for _ in range(40):  # c-ares ends the last queries by its own timeouts
            if not len(names.gate):
                break
            await asyncio.sleep(0.05)
        await names.close()
        return healthy, healthy_took, results, took, asked, entries_at_end, len(names.gate)

    healthy, healthy_took, results, took, asked, _, entries = asyncio.run(main())
    assert [a["host"] for a in healthy] == ["127.0.0.2"] and healthy_took < 0.3
    assert all(isinstance(r, socket.gaierror) for r in results), results
    assert not any(isinstance(r, TimeoutError) for r in results), "aiohttp would not say DNS"
    assert took < 1.5, f"lookups with a 0.6 s deadline took {took:.2f} s"
    # Two slots; a waiting lookup takes one when c-ares gives up on a query before
    # the waiter's own deadline, so at most two more names in the 0.6 s.
    assert len(asked) <= 4, f"{len(asked)} names reached the stalled zone with 2 slots"
    assert any("dns_lookups_per_domain" in str(r) for r in results)
    assert entries == 0, "an idle domain kept its entry"


def test_many_domains_leave_no_entry_behind(dns_server):
    async def main():
        names = resolver.NameResolver([dns_server.address], timeout=1.0)
        hosts = [f"x.d{i}-{uuid.uuid4().hex[:6]}.nx.test" for i in range(200)]
        await asyncio.gather(*(names.resolve(h, 80, 0) for h in hosts), return_exceptions=True)
        left = len(names.gate)
        await names.close()
        return left

    assert asyncio.run(main()) == 0


def test_the_channel_and_its_cache_are_renewed(dns_server, monkeypatch):
    """A retired channel is closed once its last lookup has ended."""
    monkeypatch.setattr(resolver, "RENEW_AFTER", 3)

    async def main():
        names = resolver.NameResolver([dns_server.address], timeout=0.4)
        made = []
        make = names._make_channel
        monkeypatch.setattr(names, "_make_channel", lambda: made.append(make()) or made[-1])
        stalled = asyncio.ensure_future(names.resolve(unique("stall.test"), 80, 0))
        await asyncio.sleep(0.05)
        for _ in range(6):
            await names.resolve(unique("ok.test"), 80, 0)
        kept = set(names._retired)
        with pytest.raises(socket.gaierror):
            await stalled
        for _ in range(40):  # c-ares ends the stalled query by its own timeouts
            if not names._retired:
                break
            await asyncio.sleep(0.05)
        left = set(names._retired)
        await names.close()
        return made, kept, left

    made, kept, left = asyncio.run(main())
    assert len(made) == 3  # 7 lookups, 3 a channel
    assert kept == {made[0]}, "only the channel with a lookup out is kept"
    assert left == set()


# -- through the engine: a stalled zone and a healthy named webhook ------------------


def test_a_zone_that_never_answers_delays_no_named_webhook(run, dns_server, hook):
    r = run(
        dns_nameservers=[dns_server.address],
        rest_notifier_timeout=2,  # lookups get 1 s
        rest_notifier_max_retries=1,
        rest_notifier_retry_backoff=0.05,
    )
    before = dns_server.queries("stall.test")
    stalled_urls = [f"http://{unique('stall.test')}:{hook.port}/ok/stalled-{i}" for i in range(100)]
    stalled = r.endpoint.handle(helpers.alarm(stalled_urls, alarm_id="stalled"))
    assert len(stalled) == 100
    time.sleep(0.2)  # the stalled lookups are out
    took = []
    for i in range(8):
        url = f"http://hook.ok.test:{hook.port}/ok/healthy-{i}-{uuid.uuid4().hex[:6]}"
        handed = time.monotonic()
        (d,) = r.deliver([url], timeout=10, alarm_id=f"healthy-{i}")
        took.append(time.monotonic() - handed)
        assert d.outcome == events.DELIVERED, (d.outcome, d.error)
        assert len(hook.requests_for(url)) == 1
        if i == 0:
            outstanding = sum(1 for s in stalled if s.outcome is None)
    assert max(took) < 3, f"healthy deliveries took {[round(t, 2) for t in took]} s"
    assert outstanding > 50, "the stalled lookups were over before the healthy ones began"
    for s in stalled:
        assert s.wait(15), s.masked_action
        assert r.outcomes(s) == [events.RETRYING, events.FAILED], (s.outcome, s.error)
        assert "name resolution failed" in (s.error or ""), s.error
    with hook.server.lock:
        assert not [q for q in hook.server.requests if "stalled" in q.path]
    # Two attempts of 100 lookups, at most 4 at a time under stall.test, each
    # with A and AAAA queries tried twice: far fewer than 100 names asked.
    assert dns_server.queries("stall.test") - before <= 2 * 2 * 2 * 4 * 3
