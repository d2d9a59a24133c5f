"""How webhook names are resolved: on the event loop with c-ares, a deadline for
every lookup and a bound on the lookups under one registrable domain.

Why not the system's ``getaddrinfo``: it blocks, so aiohttp runs it in the
loop's default executor (a handful of threads), and a running call cannot be
cancelled. A tenant whose nameserver never answers ties up a thread per
unique name for the resolver's full timeout; a hundred such names in one
alarm fill the executor, and every other tenant's named webhooks wait
behind them. Here a lookup is a query in c-ares (``aiodns``/``pycares``):
an outstanding one costs memory, not a thread, and ends at its deadline.
Measured on the development machine, c-ares costs a little more CPU per
lookup than the threaded resolver (bench/RESULTS.md, its notes), and lookups to a
healthy zone keep their latency while a stalled one has a hundred queries
out, where the threaded resolver stops answering at all.

What a tenant can make the service do here is bounded:

* every lookup ends within ``[alarm] dns_timeout`` (and within half of
  ``rest_notifier_timeout``, so the attempt still has time to connect); a
  lookup that fails or runs out of time is a resolution failure, which the
  REST notifier retries, and nothing is connected to;
* at most ``dns_lookups_per_domain`` lookups run at once per share
  (``shares.share_of``: every name of one registrable domain together, as
  the scheduler counts them; names without a dot, looked up under the
  search domains, all together); further ones wait for a slot within the
  same deadline. A slot is held until c-ares ends the query (by its own
  timeouts, set to fit the deadline), or for twice the deadline and a
  second at most, so a zone that never answers has no more queries out
  than its slots. A
  domain's entry lives only while it has lookups running or waiting, so the
  table holds no more than the lookups in flight;
* at most ``MAX_ADDRESSES`` addresses of an answer are kept, in the order
  c-ares gives them (RFC 6724, as ``getaddrinfo`` sorts them): target
  safety judges each of those, and only those are connected to;
* an answer is what fits one UDP datagram (EDNS, 1232 bytes): a truncated
  one is not fetched again over TCP, so a zone answering every name with
  thousands of addresses costs no more than one with 75;
* c-ares keeps a cache of answers, by TTL and without a size limit, which
  unique names under a wildcard zone would grow; the channel is therefore
  renewed after ``RENEW_AFTER`` lookups, and the old one, with its cache, is
  closed once its last lookup has ended.

By default c-ares reads the system's configuration as ``getaddrinfo`` does:
``/etc/hosts`` first, then the nameservers, search domains and ``ndots`` of
``/etc/resolv.conf``. ``dns_nameservers`` replaces only the nameservers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import re
import socket
from collections.abc import Iterable

import aiodns
import idna
import pycares
from aiohttp import abc as aiohttp_abc
from oslo_config import cfg

from ceilo_notifier import shares

# Addresses of one answer that are kept; beyond them a name is not "more
# reachable", only more expensive to check and to try.
MAX_ADDRESSES = 32
# Lookups served by one c-ares channel before it is replaced (see above).
RENEW_AFTER = 512
# c-ares asks each nameserver this many times. Its first try waits a third of
# the deadline; later ones follow c-ares's own measure of the server, so a
# query may outlive the deadline (hence the slot's backstop in resolve).
TRIES = 2
# The longest name DNS carries; a longer one is quoted no further in errors.
MAX_NAME = 253

_NOT_FOUND = {aiodns.error.ARES_ENOTFOUND, aiodns.error.ARES_ENODATA}
# What is looked up: dot-separated labels of letters, digits, "-" and "_".
# Anything else (a NUL that ends the name as c-ares reads it, spaces, "%")
# would let the name counted against a domain differ from the name asked.
_NAME = re.compile(r"(?:[A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?")


def parse_nameservers(values: Iterable[str]) -> list[str]:
    """Check ``host[:port]`` entries (IPv6 as ``[addr]:port``); c-ares's own form.

    :raises ValueError: for an entry that is not an address, or a bad port.
    """
    servers = []
    for value in values:
        entry = value.strip()
        if not entry:
            continue
        host, port = entry, None
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"dns_nameservers: {value!r} is not [address]:port")
                port = rest[1:]
        elif entry.count(":") == 1:
            host, port = entry.split(":")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"dns_nameservers: {value!r} is not an IP address[:port]") from None
        if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"dns_nameservers: bad port in {value!r}")
        shown = f"[{address}]" if address.version == 6 else str(address)
        servers.append(f"{shown}:{port}" if port else shown)
    return servers


def _failure(host: str, reason: str, errno: int = socket.EAI_AGAIN) -> socket.gaierror:
    """A resolution failure. An OSError that is no TimeoutError: aiohttp reports it
    as ClientConnectorDNSError, which the REST notifier retries."""
    return socket.gaierror(errno, f"{host[:MAX_NAME]}: {reason}")


def dns_name(host: str) -> str:
    """The name as DNS spells it (IDNA for a name that is not ASCII, which
    aiohttp never hands over: yarl encodes it).

    :raises socket.gaierror: for a name that is not a host name.
    """
    name = host
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise _failure(host, f"not a host name ({exc})", socket.EAI_NONAME) from None
    if len(name.rstrip(".")) > MAX_NAME or not _NAME.fullmatch(name):
        raise _failure(host, "not a host name", socket.EAI_NONAME)
    return name


def share_of(host: str) -> str:
    """The share whose lookups ``host``'s counts among.

    A name without a dot is looked up under the search domains of
    resolv.conf, not under a domain of its own: all such names share one.
    """
    if "." not in host.rstrip("."):
        return "."
    return shares.share_of(host)


@dataclasses.dataclass
class _Slots:
    free: asyncio.Semaphore
    users: int = 0  # lookups holding or waiting for a slot


class DomainGate:
    """At most ``limit`` holders per key; a key's entry exists only while used."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots: dict[str, _Slots] = {}

    def __len__(self) -> int:
        return len(self._slots)

    async def acquire(self, key: str, timeout: float) -> _Slots:
        """A slot of ``key``, or TimeoutError after ``timeout`` seconds."""
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = _Slots(asyncio.Semaphore(self.limit))
        slots.users += 1
        try:
            await asyncio.wait_for(slots.free.acquire(), max(timeout, 0.0))
        except BaseException:
            self._left(key, slots)
            raise
        return slots

    def release(self, key: str, slots: _Slots) -> None:
        slots.free.release()
        self._left(key, slots)

    def _left(self, key: str, slots: _Slots) -> None:
        slots.users -= 1
        if slots.users <= 0 and self._slots.get(key) is slots:
            del self._slots[key]


class NameResolver(aiohttp_abc.AbstractResolver):
    """aiohttp resolver on c-ares: a deadline per lookup, bounded lookups per domain."""

    def __init__(
        self,
        nameservers: Iterable[str] = (),
        timeout: float = 3.0,
        per_domain: int = 4,
    ) -> None:
        self.nameservers = parse_nameservers(nameservers)
        self.timeout = timeout
        self.gate = DomainGate(per_domain)
        self._channel: aiodns.DNSResolver | None = None
        self._used = 0
        self._retired: set[aiodns.DNSResolver] = set()
        self._running: dict[aiodns.DNSResolver, int] = {}  # lookups out, per channel
        self._closed = False

    def _make_channel(self) -> aiodns.DNSResolver:
        return aiodns.DNSResolver(
            nameservers=self.nameservers or None,
            loop=asyncio.get_running_loop(),
            timeout=self.timeout / (1 + 2 * (TRIES - 1)),
            tries=TRIES,
            # An answer is what fits one datagram (EDNS: 1232 bytes, some 75
            # addresses): a truncated one is taken as it is, not fetched again
            # over TCP. A 64 KiB answer costs tens of milliseconds of CPU per
            # lookup (c-ares sorts and pycares converts every address) and
            # would sit in c-ares's cache; no webhook needs one.
            flags=pycares.ARES_FLAG_IGNTC | pycares.ARES_FLAG_EDNS,
        )

    def _channel_for_lookup(self) -> aiodns.DNSResolver:
        """The current channel, renewed every RENEW_AFTER lookups (c-ares's cache)."""
        if self._channel is None or self._used >= RENEW_AFTER:
            old, self._channel, self._used = self._channel, self._make_channel(), 0
            self._running[self._channel] = 0
            if old is not None:
                # Closed once its last lookup ends, or once its lookups have
                # all had twice the deadline and a second, whichever is first.
                self._retired.add(old)
                self._close_if_idle(old)
                asyncio.get_running_loop().call_later(
                    2 * self.timeout + 1.0, self._close_retired, old
                )
        self._used += 1
        self._running[self._channel] += 1
        return self._channel

    def _lookup_ended(self, channel: aiodns.DNSResolver) -> None:
        if channel in self._running:
            self._running[channel] -= 1
            self._close_if_idle(channel)

    def _close_if_idle(self, channel: aiodns.DNSResolver) -> None:
        if channel in self._retired and not self._running.get(channel):
            self._close_retired(channel)

    def _close_retired(self, channel: aiodns.DNSResolver) -> None:
        if channel in self._retired:
            self._retired.discard(channel)
            self._running.pop(channel, None)
            channel.cancel()
            asyncio.ensure_future(channel.close())

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp_abc.ResolveResult]:
        if self._closed:
            raise _failure(host, "the resolver is closed")
        loop = asyncio.get_running_loop()
        end = loop.time() + self.timeout
        name = dns_name(host)
        share = share_of(name)
        try:
            slots = await self.gate.acquire(share, self.timeout)
        except asyncio.TimeoutError:
            raise _failure(
                host,
                f"{self.gate.limit} lookups under {share} in flight for "
                f"{self.timeout:g} s (dns_lookups_per_domain)",
            ) from None
        released = False

        def release(_future: object = None) -> None:
            nonlocal released
            if not released:
                released = True
                self.gate.release(share, slots)

        channel = self._channel_for_lookup()
        try:
            lookup = channel.getaddrinfo(name, family=family, port=port, type=socket.SOCK_STREAM)
        except Exception as exc:  # a name c-ares refuses
            release()
            self._lookup_ended(channel)
            raise _failure(host, f"cannot be looked up ({exc})", socket.EAI_NONAME) from None
        lookup.add_done_callback(lambda _f: self._lookup_ended(channel))
        # The slot is the lookup's until c-ares ends it, not until we stop
        # waiting: a stalled domain never has more than its slots outstanding.
        # c-ares ends it by its own timeouts; the timer is a backstop.
        lookup.add_done_callback(release)
        backstop = loop.call_later(2 * self.timeout + 1.0, release)
        lookup.add_done_callback(lambda _f: backstop.cancel())
        lookup.add_done_callback(_consume)
        done, _ = await asyncio.wait({lookup}, timeout=max(end - loop.time(), 0.0))
        if not done:
            raise _failure(host, f"no answer within {self.timeout:g} s (dns_timeout)")
        try:
            answer = lookup.result()
        except aiodns.error.DNSError as exc:
            code = exc.args[0] if exc.args else None
            reason = exc.args[1] if len(exc.args) > 1 else "lookup failed"
            errno = socket.EAI_NONAME if code in _NOT_FOUND else socket.EAI_AGAIN
            raise _failure(host, reason, errno) from None
        results = [_result(host, port, node) for node in answer.nodes[:MAX_ADDRESSES]]
        if not results:
            raise _failure(host, "no address", socket.EAI_NONAME)
        return results

    async def close(self) -> None:
        self._closed = True
        channels = [*self._retired, *([self._channel] if self._channel else [])]
        self._retired.clear()
        self._running.clear()
        self._channel = None
        for channel in channels:
            await channel.close()


def factory(conf: cfg.ConfigOpts) -> functools.partial[NameResolver]:
    """What makes the resolver of ``conf`` (on the running loop, when the client
    session is made); checks ``dns_nameservers`` now.

    The deadline is ``dns_timeout``, and at most half of ``rest_notifier_timeout``.
    """
    opts = conf.alarm
    return functools.partial(
        NameResolver,
        nameservers=parse_nameservers(opts.dns_nameservers),
        timeout=min(opts.dns_timeout, opts.rest_notifier_timeout / 2),
        per_domain=opts.dns_lookups_per_domain,
    )


def _consume(future: asyncio.Future) -> None:
    """Retrieve the outcome of a lookup nobody waits for any more."""
    if not future.cancelled():
        future.exception()


def _result(host: str, port: int, node) -> aiohttp_abc.ResolveResult:
    address = node.addr[0].decode("ascii")
    if node.family == socket.AF_INET6 and len(node.addr) > 3 and node.addr[3]:
        address = f"{address}%{node.addr[3]}"  # a link-local address's scope
    return aiohttp_abc.ResolveResult(
        hostname=host,
        host=address,
        port=port,
        family=node.family,
        proto=0,
        flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
    )
