"""Target safety: webhooks may not reach addresses the operator has denied.

Alarm actions are written by cloud users, so an ``http://`` action is a
request the service makes on a user's behalf from inside the cloud. The
check runs on every address a host name resolves to, inside the HTTP
client's resolver, and the client connects only to the addresses the check
saw: a name that resolves to a denied address is refused, and a name that
cannot be resolved fails the attempt without any connection. Addresses
given literally in the URL are checked before the request.

An IPv6 address that carries an IPv4 one (IPv4-mapped or -compatible, NAT64,
6to4, Teredo) is judged by the IPv4 address too, since a translator on the
way may deliver it there.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable

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
        """Check a host given as an address literal; names are checked when resolved."""
        if not host:
            return
        try:
            ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            return
        self.check(host, host.strip("[]"))

    def check_name(self, host: str | None) -> None:
        """Blocking: check every address ``host`` resolves to here.

        For targets the service hands to another service rather than calling
        itself (Zaqar's subscribers): that service resolves them again, so
        this refuses what points inside, not every rebinding trick. A name
        that does not resolve here is left to that service.
        """
        if not host:
            return
        bare = host.strip("[]")
        try:
            ipaddress.ip_address(bare.split("%", 1)[0])
        except ValueError:
            pass
        else:
            self.check(host, bare)
            return
        try:
            infos = socket.getaddrinfo(bare, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return
        for info in infos:
            self.check(host, str(info[4][0]))


class SafeResolver(aiohttp_abc.AbstractResolver):
    """aiohttp resolver that refuses a name unless every address it has is permitted.

    ``exempt`` holds the (host, port) pairs of the configured proxies, which
    the operator chose and which may well live on a denied network.
    """

    def __init__(self, policy: AddressPolicy, exempt: Iterable[tuple[str, int]] = ()) -> None:
        self.policy = policy
        self.exempt = set(exempt)
        self._inner = aiohttp_resolver.ThreadedResolver()

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
