"""Target safety: webhooks may not reach addresses the operator has denied.

Alarm actions are written by cloud users, so an ``http://`` action is a
request the service makes on a user's behalf from inside the cloud. The
check runs on the address the host name resolves to, at connect time, and
the connection is made to that very address: a name that resolves to a
denied address (or is re-pointed between check and connect) is refused.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from urllib3 import connection, connectionpool, poolmanager


class TargetDenied(ValueError):
    """The webhook's address is not permitted. Not an OSError: urllib3 must not retry it."""


class AddressPolicy:
    """An address in an allowed network is permitted, even inside a denied one; when
    allowed networks are given, every other address is refused."""

    def __init__(self, denied: Iterable[str], allowed: Iterable[str] = ()) -> None:
        self.denied = [ipaddress.ip_network(n, strict=False) for n in denied]
        self.allowed = [ipaddress.ip_network(n, strict=False) for n in allowed]

    def check(self, host: str, address: str) -> None:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if getattr(ip, "ipv4_mapped", None):
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allowed):
            return
        if self.allowed:
            raise TargetDenied(f"{host} resolves to {ip}, outside rest_notifier_allowed_networks")
        for net in self.denied:
            if ip in net:
                raise TargetDenied(
                    f"{host} resolves to {ip}, in denied network {net} "
                    "(rest_notifier_denied_networks)"
                )

    def resolve(self, host: str, port: int) -> str:
        """The address to connect to; every address the name has must be permitted."""
        try:
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except socket.gaierror:
            return host  # let the connection attempt report the resolution error
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        for address in addresses:
            self.check(host, address)
        return addresses[0]


class _CheckedConnection:
    policy: AddressPolicy

    def _new_conn(self):
        host = self.__dict__.setdefault("_requested_host", self._dns_host)
        self._dns_host = self.policy.resolve(host, self.port)
        try:
            return super()._new_conn()
        finally:
            self._dns_host = host


def pool_manager(policy: AddressPolicy, **kwargs) -> poolmanager.PoolManager:
    """A urllib3 pool manager whose connections obey policy (TLS still checks the name)."""
    http_conn = type(
        "CheckedHTTPConnection", (_CheckedConnection, connection.HTTPConnection), {"policy": policy}
    )
    https_conn = type(
        "CheckedHTTPSConnection",
        (_CheckedConnection, connection.HTTPSConnection),
        {"policy": policy},
    )
    manager = poolmanager.PoolManager(**kwargs)
    manager.pool_classes_by_scheme = {
        "http": type(
            "CheckedHTTPPool", (connectionpool.HTTPConnectionPool,), {"ConnectionCls": http_conn}
        ),
        "https": type(
            "CheckedHTTPSPool",
            (connectionpool.HTTPSConnectionPool,),
            {"ConnectionCls": https_conn},
        ),
    }
    return manager
