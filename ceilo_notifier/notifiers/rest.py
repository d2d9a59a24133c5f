"""``http://`` and ``https://``: POST the alarm as JSON to a webhook.

The request runs on the engine's event loop with aiohttp, so a webhook that
hangs costs a socket and a few kilobytes, not a thread. What a tenant's
webhook can do to the service is bounded here:

* the whole attempt — resolution, connect, TLS, request and the full
  response — ends within ``rest_notifier_timeout``, whatever the webhook
  does (``ClientTimeout(total=...)``, a server dripping bytes included);
* at most ``MAX_BODY_READ`` bytes of an answer are read, for the log; the
  rest is dropped with the connection;
* target safety judges the URL the client parses, the very object it is
  handed (so ``１２７.０.０.１`` is judged as the ``127.0.0.1`` yarl makes of
  it): address literals in any form before the request, every address a
  name resolves to in the resolver (they are tried in order until one
  answers), and every socket's peer just before it connects
  (``safety.PeerGuard``), so a parsing difference cannot reach a denied
  address; a refusal anywhere is final, never a retried connection error;
* names are resolved asynchronously (c-ares), with a deadline and a bound on
  the lookups per registrable domain (``resolver``);
* a Keystone token (``trust+`` schemes) is fetched in threads of its own
  with a deadline (``target_pool``), not in the loop's default executor;
* redirects are not followed.

One aiohttp session (and connector) serves every request. The TLS context
of each profile (certificate verification on or off, since an action may
override it) is made on the first https request of that profile and passed
with each request, so plain http never depends on the TLS files.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
import json
import ssl
import time
from urllib import parse

import aiohttp
import yarl
from oslo_config import cfg
from oslo_log import log
from oslo_utils import strutils

from ceilo_notifier import limits, masking, notifiers, pools, templates, version
from ceilo_notifier.notification import AlarmNotification
from ceilo_notifier.notifiers import proxies, resolver, safety

LOG = log.getLogger(__name__)

VERIFY_PARAMS = ("ceilometer-alarm-ssl-verify", "aodh-alarm-ssl-verify")
# Control parameters: never sent to the receiver.
CONTROL_PARAMS = (*VERIFY_PARAMS, templates.PARAM)
RETRYABLE_STATUS = notifiers.RETRYABLE_STATUS
MAX_BODY_READ = 1024


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²", which str.isdigit accepts
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def split_action(action: parse.SplitResult) -> tuple[str, tuple[str, str] | None, bool | None]:
    """Return (URL to request, basic auth, per-URL verify override).

    The userinfo and the control parameters (verify, template) are removed
    from the URL, so none reaches the receiver in the request line.
    """
    auth = None
    netloc = action.netloc
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        auth = (parse.unquote(user), parse.unquote(password))
    verify = None
    query = []
    for key, value in parse.parse_qsl(action.query, keep_blank_values=True):
        if key in VERIFY_PARAMS:
            verify = strutils.bool_from_string(value, default=True)
        elif key not in CONTROL_PARAMS:
            query.append((key, value))
    url = parse.urlunsplit(
        (action.scheme, netloc, action.path or "/", parse.urlencode(query), action.fragment)
    )
    return url, auth, verify


def endpoint_name(scheme: str, host: str | None, port: int) -> str | None:
    """``scheme://host:port``, the host as the client normalises it (IDNA, lower
    case, no trailing dot, an IPv6 address in brackets); None without a host."""
    try:
        host = safety.client_host((host or "").strip("[]").rstrip("."))
    except ValueError:
        return None
    if not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def http_endpoint(action: parse.SplitResult) -> str | None:
    """``http(s)://host:port`` of an action (``trust+`` dropped, the port always
    written), or None if it has no host."""
    scheme = action.scheme.lower().removeprefix("trust+")
    try:
        port = action.port or (443 if scheme == "https" else 80)
    except ValueError:
        return None
    return endpoint_name(scheme, action.hostname, port)


def decode_signing_key(secret: str) -> bytes:
    """The bytes of a Standard Webhooks secret (``whsec_`` + base64)."""
    encoded = secret.strip()
    if encoded.startswith("whsec_"):
        encoded = encoded[len("whsec_") :]
    try:
        return base64.b64decode(encoded, validate=True)
    except ValueError:
        raise ValueError("rest_notifier_signing_keys: a key is not whsec_<base64>") from None


def sign(
    keys: list[bytes], message_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """Standard Webhooks headers: one ``v1,`` signature per key, for rotation."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{message_id}.{timestamp}.".encode() + body
    signatures = " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in keys
    )
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
    }


def _cause(exc: BaseException) -> str:
    """The innermost reason of a client error, without aiohttp's wrapping."""
    inner = getattr(exc, "os_error", None) or exc.__cause__ or exc
    text = str(inner) or type(inner).__name__
    return text


def _peer_tls_alert(exc: BaseException) -> bool:
    """True when the peer ended TLS with an alert (certificate required, unknown CA...)."""
    inner = exc.__cause__ or getattr(exc, "os_error", None)
    return isinstance(inner, ssl.SSLError) and "ALERT" in (inner.reason or "")


def tls_context(conf: cfg.ConfigOpts, verify: bool) -> ssl.SSLContext:
    """The TLS settings of one profile: CA bundle, verification, client certificate."""
    opts = conf.alarm
    if verify:
        ctx = ssl.create_default_context(cafile=opts.rest_notifier_ca_bundle_certificate_path)
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if opts.rest_notifier_certificate_file:
        ctx.load_cert_chain(
            opts.rest_notifier_certificate_file, opts.rest_notifier_certificate_key or None
        )
    return ctx


class RestAlarmNotifier(notifiers.AlarmNotifier):
    """POSTs with aiohttp on the engine's event loop.

    With ``ceilo-notifier-template=NAME`` in the action's query the body is
    that template's rendering, with its content type (``templates``); a render
    that fails fails the delivery at once, before any token or connection.
    """

    supports_templates = True

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        opts = conf.alarm
        self.templates = templates.get(conf)
        self.policy = safety.AddressPolicy(
            opts.rest_notifier_denied_networks, opts.rest_notifier_allowed_networks
        )
        self.proxies = proxies.ProxyChooser(opts.rest_notifier_proxy)
        self.name_resolver = resolver.factory(conf)
        self.timeout = opts.rest_notifier_timeout
        # The engine's deadline sits just past the client's own, which then
        # reports the timeout in its words; a token fetch fits in between.
        self.attempt_timeout = self.timeout + 1.0
        # target() of trust+ schemes blocks on Keystone: its own threads, and
        # half of the attempt's time, so that one Keystone that hangs holds
        # only them and the attempt ends as retryable.
        self.target_pool = pools.BoundedPool("keystone", opts.keystone_pool_size, self.timeout / 2)
        self._client: aiohttp.ClientSession | None = None
        self._resolver: safety.PeerGuard | None = None
        self._contexts: dict[bool, ssl.SSLContext] = {}
        self.user_agent = f"ceilo-notifier/{version.version_string()}"
        self.signing_keys = [decode_signing_key(k) for k in opts.rest_notifier_signing_keys]
        try:
            tls_context(conf, True)
        except (ssl.SSLError, OSError) as exc:
            LOG.error(
                "The TLS files in [alarm] (rest_notifier_certificate_file, "
                "rest_notifier_certificate_key, rest_notifier_ca_bundle_certificate_path) "
                "cannot be loaded: %s; every http(s) delivery fails until they are fixed",
                exc,
            )
        if not opts.rest_notifier_ssl_verify:
            LOG.warning(
                "rest_notifier_ssl_verify is off: HTTPS webhooks are not verified "
                "unless an action sets ceilometer-alarm-ssl-verify=1"
            )

    def _tls(self, verify: bool) -> ssl.SSLContext:
        """The TLS context of a profile, made on first use (an https delivery)."""
        context = self._contexts.get(verify)
        if context is None:
            context = self._contexts[verify] = tls_context(self.conf, verify)
        return context

    def _session(self) -> aiohttp.ClientSession:
        """The session, made on first use on the running loop."""
        session = self._client
        if session is None or session.closed:
            opts = self.conf.alarm
            # Target safety over c-ares lookups (``resolver``), closed with the session.
            guard = self._resolver = safety.PeerGuard(
                self.policy, self.proxies.endpoints(), self.name_resolver()
            )
            connector = limits.KeepAliveConnector(
                max_idle=limits.pool_size(self.conf),
                limit=0,  # the scheduler caps the pool and each host
                limit_per_host=0,
                resolver=guard,
                socket_factory=guard.socket_factory,
                ttl_dns_cache=10,
                keepalive_timeout=15,
                # Addresses one after another: racing them (happy eyeballs) would
                # open a socket per address a tenant's name has, past the
                # open-file budget of one attempt (limits.pool_size).
                happy_eyeballs_delay=None,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=opts.rest_notifier_timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,  # proxies are chosen by self.proxies, as requests would
                skip_auto_headers=("Accept-Encoding",),
            )
            self._client = session
        return session

    def headers(
        self,
        notification: AlarmNotification,
        body: bytes,
        content_type: str = "application/json",
    ) -> dict[str, str]:
        headers = {
            "Content-Type": content_type,
            "X-OpenStack-Request-Id": notification.request_id or "",
            "User-Agent": self.user_agent,
        }
        if self.signing_keys:
            headers.update(sign(self.signing_keys, notification.request_id or "", body))
        return headers

    @classmethod
    def validate(cls, action: parse.SplitResult) -> None:
        if not action.hostname:
            raise ValueError(f"no host: expected {action.scheme}://host[:port]/path")
        for key, value in parse.parse_qsl(action.query, keep_blank_values=True):
            if key in VERIFY_PARAMS and strutils.bool_from_string(value, default=None) is None:
                raise ValueError(f"{key}={value!r} is neither 0 nor 1")

    def endpoint(self, action: parse.SplitResult) -> str | None:
        return http_endpoint(action)

    def target(
        self, action: parse.SplitResult
    ) -> tuple[str, tuple[str, str] | None, bool | None, dict[str, str]]:
        """Where and how to POST: (URL, basic auth, verify override, extra headers).

        Subclasses for other schemes (``trust+http``) change this only; it
        may block (it runs in a thread of ``target_pool`` when a subclass
        overrides it).
        """
        url, auth, verify = split_action(action)
        return url, auth, verify, {}

    async def _target(
        self, action: parse.SplitResult
    ) -> tuple[str, tuple[str, str] | None, bool | None, dict[str, str]]:
        if type(self).target is RestAlarmNotifier.target:
            return self.target(action)
        try:
            return await self.target_pool.run(self.target, action)
        except pools.Overdue as exc:
            raise notifiers.NotReached(f"Keystone token: {exc}") from None

    async def payload(
        self, action: parse.SplitResult, notification: AlarmNotification
    ) -> tuple[bytes, str]:
        """The request's body and content type: the default JSON document, or
        the rendering of the template the action names.

        :raises DeliveryError: the template failed (not retried: a render
            fails the same way again).
        """
        rendered = await self.templates.payload_of(action, notification)
        if rendered is None:
            return json.dumps(notification.body()).encode(), "application/json"
        return rendered.body, rendered.content_type

    async def notify_async(self, action: parse.SplitResult, notification: AlarmNotification) -> int:
        body, content_type = await self.payload(action, notification)
        url, auth, verify, extra_headers = await self._target(action)
        try:
            # Parsed once, as aiohttp parses it, and handed to it as it is: the
            # host judged here is the host connected to or sent to the proxy.
            client_url = yarl.URL(url)
        except ValueError as exc:
            raise notifiers.DeliveryError(f"invalid URL: {exc}") from None
        host = client_url.raw_host or ""
        try:
            self.policy.check_literal(host)
        except safety.TargetDenied as exc:
            raise notifiers.DeliveryError(f"target refused: {exc}") from None
        target = parse.urlsplit(str(client_url))
        headers = {**self.headers(notification, body, content_type), **extra_headers}
        if auth is not None:
            headers["Authorization"] = aiohttp.encode_basic_auth(*auth)
        if verify is None:
            verify = self.conf.alarm.rest_notifier_ssl_verify
        proxy = self.proxies.choose(target)
        if proxy is not None and proxy.headers and target.scheme == "http":
            # Plain HTTP goes to the proxy as it is (CONNECT carries proxy_headers).
            headers.update(proxy.headers)
        tls = None
        if target.scheme == "https":
            try:
                tls = self._tls(verify)
            except (ssl.SSLError, OSError) as exc:
                # A client certificate or CA bundle that cannot be loaded: an
                # operator's error that no retry mends (plain http is unaffected).
                raise notifiers.DeliveryError(f"TLS setup failed: {exc}") from None
        session = self._session()
        with safety.connecting(host, (proxy.host, proxy.port) if proxy else None) as request:
            try:
                async with session.post(
                    client_url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    proxy=proxy.url if proxy else None,
                    proxy_headers=proxy.headers if proxy else None,
                    ssl=tls if tls is not None else True,
                ) as response:
                    status = response.status
                    if 200 <= status < 300:
                        await self._drain(response)
                        return status
                    text = await self._drain(response)
                    reason = response.reason or ""
                    retry_after = response.headers.get("Retry-After")
                    location = response.headers.get("Location")
            except Exception as exc:
                error = self._request_error(exc, request.refusal)
                if error is None:
                    raise
                raise error from None
        summary = f"HTTP {status} {reason}".strip()
        if text:
            summary += f": {masking.mask_text(text)}"
        if 300 <= status < 400:
            summary += f" (redirect to {location!r} not followed)"
        raise notifiers.status_error(summary, status, parse_retry_after(retry_after))

    def _request_error(self, exc: Exception, refusal: str | None) -> notifiers.DeliveryError | None:
        """The delivery error a failed request ends in, or None to let ``exc`` through.

        A peer refused at connection time wins over whatever the client made
        of it (a connection error, or none of its own when happy eyeballs
        went on to the next address and that one failed too).
        """
        if refusal is not None or isinstance(exc, safety.TargetDenied):
            return notifiers.DeliveryError(f"target refused: {refusal or exc}")
        if isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)):
            return notifiers.DeliveryError(f"TLS error: {_cause(exc)}")
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            return notifiers.RetryableError(f"name resolution failed: {_cause(exc)}")
        if isinstance(exc, asyncio.TimeoutError):
            return notifiers.TimedOut(f"no complete answer within {self.timeout:g} s")
        if isinstance(exc, aiohttp.InvalidURL):
            return notifiers.DeliveryError(f"invalid URL: {exc}")
        if isinstance(exc, (aiohttp.ClientError, OSError)):
            if _peer_tls_alert(exc):
                # The webhook refused our certificate (or lack of one), after the
                # handshake as TLS 1.3 does: its configuration, not an outage.
                return notifiers.DeliveryError(f"TLS error: {_cause(exc)}")
            return notifiers.RetryableError(f"connection error: {_cause(exc)}")
        if isinstance(exc, ssl.SSLError):
            return notifiers.DeliveryError(f"TLS setup failed: {exc}")
        if isinstance(exc, ValueError):
            return notifiers.DeliveryError(f"request failed: {exc}")
        return None

    @staticmethod
    async def _drain(response: aiohttp.ClientResponse) -> str:
        """Read at most MAX_BODY_READ bytes; drop the connection if more would follow."""
        data = b""
        while len(data) < MAX_BODY_READ:
            chunk = await response.content.read(MAX_BODY_READ - len(data))
            if not chunk:
                break
            data += chunk
        if not response.content.at_eof():
            response.close()
        return data.decode("utf-8", "replace").strip()[:200]

    def notify(self, action: parse.SplitResult, notification: AlarmNotification) -> int:
        """Blocking form, for callers without the engine's loop (one request, one loop)."""

        async def once() -> int:
            try:
                return await self.notify_async(action, notification)
            finally:
                await self.close_async()

        return asyncio.run(once())

    def close(self) -> None:
        self.target_pool.close()
        self.templates.close()

    async def close_async(self) -> None:
        session, self._client = self._client, None
        if session is not None:
            await session.close()
        name_resolver, self._resolver = self._resolver, None
        if name_resolver is not None:
            await name_resolver.close()
