"""Shares: what one tenant cannot multiply for free.

The scheduler caps the attempts in flight per share and serves shares in
turn, and the resolver bounds the lookups per share. A share must therefore
be something a tenant cannot mint by the thousand: not the host name as
written (``a1.evil.example``, ``a2.evil.example``… are free under a wildcard
record), nor the port (65535 of them on one host), nor the scheme.

* a name shares with every name of its **registrable domain** (the Public
  Suffix List's "private suffix": ``hooks.evil.example`` → ``evil.example``,
  ``x.y.co.uk`` → ``y.co.uk``); a name that is itself a public suffix, or
  has none (``localhost``), is its own share;
* an IPv4 address is its own share; an IPv6 address shares with its /64,
  the block a single site is routinely given.

Spellings cost nothing either, so a host is taken as the HTTP client reads
it (``safety.client_host``, ``safety.literal_address``): ``１.２.３.４``,
``0x1020304`` and ``16909060`` are one address, ``ＥＶＩＬ.example`` is
``evil.example``.

The list ships with the ``publicsuffixlist`` package: nothing is fetched.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress

from publicsuffixlist import PublicSuffixList

from ceilo_notifier.notifiers import safety

_IPV6_SITE = 64


@functools.cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()


def registrable_domain(name: str) -> str:
    """The registrable domain of a host name, lower case, or the name itself."""
    name = name.strip(".").lower()
    if not name:
        return name
    return _suffixes().privatesuffix(name) or name


@functools.lru_cache(maxsize=65536)
def share_of(host: str | None) -> str:
    """The share a host (a name or an address literal, brackets allowed) belongs to."""
    if not host:
        return ""
    bare = host.strip("[]")
    with contextlib.suppress(ValueError):
        bare = safety.client_host(bare)
    ip = safety.literal_address(bare)
    if ip is None:
        return registrable_domain(bare)
    if ip.version == 6:
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{_IPV6_SITE}", strict=False))
    return str(ip)
