"""Which proxy, if any, a webhook request goes through.

``[alarm] rest_notifier_proxy`` wins; without it the environment is read as
requests reads it (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
``NO_PROXY`` with host names, domains and CIDR ranges). Credentials in a
proxy URL become a ``Proxy-Authorization`` header and are masked wherever
the URL is logged.
"""

from __future__ import annotations

import dataclasses
import functools
from urllib import parse, request

import aiohttp
import yarl
from oslo_log import log
from requests import utils as requests_utils

from ceilo_notifier import masking

LOG = log.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Proxy:
    url: str  # without credentials
    headers: dict[str, str] | None
    host: str
    port: int


@functools.lru_cache(maxsize=16)
def parse_proxy(url: str) -> Proxy:
    """A proxy URL split into where to connect and how to authenticate."""
    if "://" not in url:
        url = f"http://{url}"
    parts = parse.urlsplit(url)
    headers = None
    if parts.username is not None:
        headers = {
            "Proxy-Authorization": aiohttp.encode_basic_auth(
                parse.unquote(parts.username), parse.unquote(parts.password or "")
            )
        }
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    url = f"{parts.scheme}://{netloc}"
    # The host as the client reads it: what it resolves, and what target safety exempts.
    return Proxy(url, headers, yarl.URL(url).raw_host or host, port)


class ProxyChooser:
    """Chooses the proxy of each request; results are cached per scheme and host."""

    def __init__(self, configured: str | None) -> None:
        self.configured = parse_proxy(configured) if configured else None
        if self.configured is not None:
            LOG.info("Webhooks go through the proxy %s", masking.mask_url(configured))
        self._cache: dict[tuple[str, str], Proxy | None] = {}

    def endpoints(self) -> list[tuple[str, int]]:
        """(host, port) of every proxy a request may be sent to."""
        found = [self.configured] if self.configured else []
        for url in request.getproxies().values():
            try:
                found.append(parse_proxy(url))
            except ValueError:
                continue
        return [(p.host, p.port) for p in found]

    def choose(self, target: parse.SplitResult) -> Proxy | None:
        if self.configured is not None:
            return self.configured
        key = (target.scheme, target.netloc)
        try:
            return self._cache[key]
        except KeyError:
            pass
        chosen = None
        found = requests_utils.get_environ_proxies(parse.urlunsplit(target))
        url = found.get(target.scheme) or found.get("all")
        if url:
            try:
                chosen = parse_proxy(url)
            except ValueError:
                LOG.error("Proxy %s from the environment is not a URL", masking.mask_url(url))
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = chosen
        return chosen
