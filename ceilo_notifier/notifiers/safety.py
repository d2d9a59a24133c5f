"""Target safety: webhooks may not reach addresses the operator has denied.

Alarm actions are written by cloud users, so an ``http://`` action is a
request the service makes on a user's behalf from inside the cloud. A host
is judged as the HTTP client reads it, after yarl's normalisation (IDNA/UTS
46 maps ``１２７.０.０.１`` or ``127。0。0。1`` to ``127.0.0.1``), never as
written: what is judged is what is connected to. Three checks follow:

* before the request, a host that denotes an address is checked: an IP
  literal, or a legacy IPv4 form that resolvers and proxies read as one
  (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``, a trailing dot);
  through a proxy this is the only check of ours the target gets;
* every address a name resolves to is checked inside the client's resolver
  (``SafeResolver``); a name that cannot be resolved fails the attempt
  without any connection;
* every socket the client opens is checked on the address it is about to
  connect to (``PeerGuard``, aiohttp's ``socket_factory``), so that no
  difference between parsers, resolvers or caches can reach a denied address.
  Only the connection a request sent through a configured proxy makes to
  that proxy (its own addresses and port) is exempt: the operator chose it.

An IPv6 address that carries an IPv4 one (IPv4-mapped or -compatible, NAT64,
6to4, Teredo) is judged by the IPv4 address too, since a translator on the
way may deliver it there.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import ipaddress
import socket
from collections.abc import Iterable, Iterator

import yarl
from aiohttp import abc as aiohttp_abc
from aiohttp import resolver as aiohttp_resolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class TargetDenied(ValueError):
    """The webhook's address is not permitted. Not an OSError: no client may retry it."""


def embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (none for an IPv4 address)."""
    if ip.version == 4:
        return []
    found = []
    if ip.ipv4_mapped:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour:
        found.append(ip.sixtofour)
    if ip.teredo:
        found.extend(ip.teredo)
    packed = int(ip) & 0xFFFFFFFF
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        found.append(ipaddress.IPv4Address(packed))
    return found


def _legacy_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address of a numeric host in the forms inet_aton and WHATWG URL parsers
    accept: one to four parts, each decimal, octal (``0`` prefix) or hex (``0x``), the
    last filling the bytes left (``127.1``, ``2130706433``), trailing dots ignored."""
    parts = text.rstrip(".").split(".")
    if not text.isascii() or len(parts) > 4:
        return None
    values = []
    for part in parts:
        if part.startswith("0x"):
            digits, base = part[2:] or "0", 16
        elif part.startswith("0") and len(part) > 1:
            digits, base = part[1:], 8
        else:
            digits, base = part, 10
        if not digits.isalnum():  # int() would take "+1", "1_0" and spaces
            return None
        try:
            values.append(int(digits, base))
        except ValueError:
            return None
    last = values.pop()
    if any(v > 255 for v in values) or last >= 256 ** (4 - len(values)):
        return None
    return ipaddress.IPv4Address(sum(v << 8 * (3 - i) for i, v in enumerate(values)) + last)


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` denotes by itself (no resolution), or None for a name.

    ``host`` is as the client reads it (``client_host``): brackets and an IPv6
    zone id are dropped, and the legacy IPv4 forms count, since a resolver
    (getaddrinfo) or a proxy turns them into the address.
    """
    bare = host.lower().strip("[]")
    if ":" in bare:
        bare = bare.split("%", 1)[0]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        return _legacy_ipv4(bare)


def client_host(host: str) -> str:
    """``host`` (as urllib splits it) as the HTTP client normalises it: IDNA (UTS 46)
    for a name, lower case, compressed IPv6. ValueError if the client refuses it."""
    return yarl.URL.build(scheme="http", host=host).raw_host or ""


class AddressPolicy:
    """An address in an allowed network is permitted, even inside a denied one; when
    allowed networks are given, every other address is refused."""

    def __init__(self, denied: Iterable[str], allowed: Iterable[str] = ()) -> None:
        self.denied = [ipaddress.ip_network(n, strict=False) for n in denied]
        self.allowed = [ipaddress.ip_network(n, strict=False) for n in allowed]
        # The networks never change, and most alarms go to a few addresses.
        self._verdict = functools.lru_cache(maxsize=4096)(self._judge)

    def _refusal(self, ip: IPAddress) -> str | None:
        if any(ip in net for net in self.allowed):
            return None
        if self.allowed:
            return f"{ip}, outside rest_notifier_allowed_networks"
        for net in self.denied:
            if ip in net:
                return f"{ip}, in denied network {net} (rest_notifier_denied_networks)"
        return None

    def check(self, host: str, address: str) -> None:
        """Raise TargetDenied unless ``address`` (one of ``host``'s) is permitted."""
        refusal = self._verdict(address.split("%", 1)[0])
        if refusal is not None:
            raise TargetDenied(f"{host} resolves to {refusal}")

    def _judge(self, address: str) -> str | None:
        """Why ``address`` is refused, or None."""
        ip = ipaddress.ip_address(address)
        embedded = embedded_ipv4(ip)
        # A mapped or compatible address is the IPv4 one: judge that alone.
        if ip.version == 6 and (ip.ipv4_mapped or (embedded and ip in _IPV4_COMPATIBLE)):
            forms = embedded
        else:
            forms = [ip, *embedded]
        for form in forms:
            refusal = self._refusal(form)
            if refusal is not None:
                return refusal if form == ip else f"{refusal} (carried by {ip})"
        return None

    def check_literal(self, host: str | None) -> None:
        """Check a host that denotes an address by itself; names are checked when resolved.

        ``host`` must be as the HTTP client reads it (yarl's ``raw_host``). A
        ``%`` other than an IPv6 zone id's, or a ``:`` outside an IPv6
        literal, is refused: resolvers and proxies disagree on what it names
        (one decodes ``%31``, another stops at ``%00``).
        """
        if not host:
            return
        ip = literal_address(host)
        if ip is None and ("%" in host or ":" in host):
            raise TargetDenied(f"{host} is neither a host name nor an IP address")
        if ip is not None:
            self.check(host, str(ip))

    def check_name(self, host: str | None) -> None:
        """Blocking: check ``host`` and every address it resolves to here.

        For targets the service hands to another service rather than calling
        itself (Zaqar's subscribers): that service resolves them again, so
        this refuses what points inside, not every rebinding trick. The host
        is judged as written and as an HTTP client normalises it (IDNA, the
        legacy IPv4 forms), since that service's client may do either. A
        name that does not resolve here is left to that service.
        """
        if not host:
            return
        forms = [host]
        with contextlib.suppress(ValueError):
            forms.append(client_host(host))
        for form in dict.fromkeys(forms):
            self.check_literal(form)
            if literal_address(form) is not None:
                continue
            try:
                infos = socket.getaddrinfo(form, None, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError):
                continue
            for info in infos:
                self.check(host, str(info[4][0]))


class SafeResolver(aiohttp_abc.AbstractResolver):
    """aiohttp resolver that refuses a name unless every address it has is permitted.

    ``exempt`` holds the (host, port) pairs of the configured proxies, which
    the operator chose and which may well live on a denied network.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        exempt: Iterable[tuple[str, int]] = (),
        inner: aiohttp_abc.AbstractResolver | None = None,
    ) -> None:
        self.policy = policy
        self.exempt = set(exempt)
        self._inner = inner if inner is not None else aiohttp_resolver.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp_abc.ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if (host, port) not in self.exempt:
            for result in results:
                self.policy.check(host, result["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()


@dataclasses.dataclass
class Connecting:
    """One request, for the connections the client opens for it (see ``connecting``)."""

    host: str  # the target's host, as the client reads it
    proxy: tuple[str, int] | None  # the configured proxy the request goes through
    refusal: str | None = None  # why a connection of this request was refused


_CONNECTING: contextvars.ContextVar[Connecting | None] = contextvars.ContextVar(
    "ceilo_notifier_connecting", default=None
)


@contextlib.contextmanager
def connecting(host: str, proxy: tuple[str, int] | None = None) -> Iterator[Connecting]:
    """Mark the connections opened inside (in this task) as made for one request.

    ``refusal`` is set when ``PeerGuard`` refused one of them: the client
    may report that as another error (or none, happy eyeballs trying the next
    address), so the caller reads it from here.
    """
    current = Connecting(host, proxy)
    token = _CONNECTING.set(current)
    try:
        yield current
    finally:
        _CONNECTING.reset(token)


class PeerGuard(aiohttp_abc.AbstractResolver):
    """The connector's resolver (a ``SafeResolver``) and its ``socket_factory``.

    ``socket_factory`` runs just before each connection, on the address it goes to:
    an address the policy refuses raises ``TargetDenied``, and so does every
    later connection of the same request. It is exempt only when the request
    goes through a configured proxy and the connection goes to that proxy's
    port and to one of its addresses: its literal address, or one its name
    resolved to here. A webhook aimed at the proxy itself is judged like any.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        proxies: Iterable[tuple[str, int]] = (),
        inner: aiohttp_abc.AbstractResolver | None = None,
    ) -> None:
        self.policy = policy
        proxies = list(proxies)
        self.resolver = SafeResolver(policy, proxies, inner)
        self._proxy_addresses: dict[tuple[str, int], set[IPAddress]] = {}
        for host, port in proxies:
            ip = _address(host)
            self._proxy_addresses.setdefault((host, port), set()).update([ip] if ip else [])

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp_abc.ResolveResult]:
        results = await self.resolver.resolve(host, port, family)
        known = self._proxy_addresses.get((host, port))
        if known is not None:
            known.update(ip for ip in (_address(r["host"]) for r in results) if ip)
        return results

    async def close(self) -> None:
        await self.resolver.close()

    def socket_factory(self, addr_info: tuple) -> socket.socket:
        """A socket for ``addr_info`` (aiohttp's), if its address may be reached."""
        family, type_, proto, _, sockaddr = addr_info
        request = _CONNECTING.get()
        try:
            self._judge(request, str(sockaddr[0]), int(sockaddr[1]))
        except TargetDenied as exc:
            if request is not None and request.refusal is None:
                request.refusal = str(exc)
            raise
        return socket.socket(family, type_, proto)

    def _judge(self, request: Connecting | None, address: str, port: int) -> None:
        request = request or Connecting(address, None)  # outside a request: no exemption
        if request.refusal is not None:
            raise TargetDenied(request.refusal)
        proxy = request.proxy
        # Through a proxy, the only connection a request makes is to the proxy.
        host = request.host if proxy is None else f"the proxy {proxy[0]}"
        ip = _address(address)
        if ip is None:
            # The event loop would resolve it, past every check.
            raise TargetDenied(f"{host}: the client was to connect to {address!r}, not an address")
        if proxy is not None and port == proxy[1] and ip in self._proxy_addresses.get(proxy, ()):
            return
        self.policy.check(host, str(ip))


def _address(text: str) -> IPAddress | None:
    """An IP address written canonically (an IPv6 zone id dropped), or None."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
