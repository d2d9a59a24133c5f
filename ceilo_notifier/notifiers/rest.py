"""``http://`` and ``https://``: POST the alarm as JSON to a webhook."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import threading
import time
from urllib import parse

import urllib3
from oslo_config import cfg
from oslo_log import log
from oslo_utils import strutils

from ceilo_notifier import notifiers, version
from ceilo_notifier.notification import AlarmNotification
from ceilo_notifier.notifiers import safety

LOG = log.getLogger(__name__)

VERIFY_PARAMS = ("ceilometer-alarm-ssl-verify", "aodh-alarm-ssl-verify")
RETRYABLE_STATUS = frozenset({408, 425, 429})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
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

    The userinfo and the verify control parameters are removed from the URL,
    so neither reaches the receiver in the request line.
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
        else:
            query.append((key, value))
    url = parse.urlunsplit(
        (action.scheme, netloc, action.path or "/", parse.urlencode(query), action.fragment)
    )
    return url, auth, verify


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


def _root_cause(exc: BaseException) -> str:
    """The innermost reason of a urllib3 error, without its wrapping."""
    reason = exc.args[0] if exc.args else exc
    reason = getattr(reason, "reason", reason)
    text = str(reason)
    if "): " in text and text.startswith(("HTTPConnection(", "HTTPSConnection(")):
        text = text.split("): ", 1)[1]
    return text


class RestAlarmNotifier(notifiers.AlarmNotifier):
    """POSTs with urllib3: a connection pool per host, shared by all threads.

    urllib3 directly, not requests on top of it: requests' per-request
    machinery cost more CPU than the rest of a delivery put together, and
    nothing of it (cookies, redirects, hooks) is wanted here. One pool
    manager is kept per TLS profile (verification on or off, CA bundle,
    client certificate), since these are per pool in urllib3.
    """

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        opts = conf.alarm
        self.policy = safety.AddressPolicy(
            opts.rest_notifier_denied_networks, opts.rest_notifier_allowed_networks
        )
        self._managers: dict[bool, urllib3.PoolManager] = {}
        self._lock = threading.Lock()
        self.user_agent = f"ceilo-notifier/{version.version_string()}"
        self.signing_keys = [decode_signing_key(k) for k in opts.rest_notifier_signing_keys]
        # urllib3 would warn on every unverified request; say it once instead.
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        if not opts.rest_notifier_ssl_verify:
            LOG.warning(
                "rest_notifier_ssl_verify is off: HTTPS webhooks are not verified "
                "unless an action sets ceilometer-alarm-ssl-verify=1"
            )

    def _manager(self, verify: bool) -> urllib3.PoolManager:
        manager = self._managers.get(verify)
        if manager is not None:
            return manager
        with self._lock:
            if verify not in self._managers:
                opts = self.conf.alarm
                tls: dict[str, object] = {}
                if verify:
                    tls["cert_reqs"] = "CERT_REQUIRED"
                    if opts.rest_notifier_ca_bundle_certificate_path:
                        tls["ca_certs"] = opts.rest_notifier_ca_bundle_certificate_path
                else:
                    tls["cert_reqs"] = "CERT_NONE"
                    tls["assert_hostname"] = False
                if opts.rest_notifier_certificate_file:
                    tls["cert_file"] = opts.rest_notifier_certificate_file
                    tls["key_file"] = opts.rest_notifier_certificate_key or None
                self._managers[verify] = safety.pool_manager(
                    self.policy,
                    num_pools=opts.dispatch_pool_size,
                    maxsize=opts.per_host_concurrency,
                    block=False,
                    **tls,
                )
            return self._managers[verify]

    def headers(self, notification: AlarmNotification, body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "X-OpenStack-Request-Id": notification.request_id or "",
            "User-Agent": self.user_agent,
        }
        if self.signing_keys:
            headers.update(sign(self.signing_keys, notification.request_id or "", body))
        return headers

    def target(
        self, action: parse.SplitResult
    ) -> tuple[str, tuple[str, str] | None, bool | None, dict[str, str]]:
        """Where and how to POST: (URL, basic auth, verify override, extra headers).

        Subclasses for other schemes (``trust+http``) change this only.
        """
        url, auth, verify = split_action(action)
        return url, auth, verify, {}

    def notify(self, action: parse.SplitResult, notification: AlarmNotification) -> int:
        url, auth, verify, extra_headers = self.target(action)
        body = json.dumps(notification.body()).encode()
        headers = {**self.headers(notification, body), **extra_headers}
        if auth is not None:
            headers.update(urllib3.util.make_headers(basic_auth=":".join(auth)))
        opts = self.conf.alarm
        timeout = opts.rest_notifier_timeout
        if verify is None:
            verify = opts.rest_notifier_ssl_verify
        try:
            response = self._manager(verify).request(
                "POST",
                url,
                body=body,
                headers=headers,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                retries=False,
                redirect=False,
            )
        except safety.TargetDenied as exc:
            raise notifiers.DeliveryError(f"target refused: {exc}") from None
        except urllib3.exceptions.SSLError as exc:
            raise notifiers.DeliveryError(f"TLS error: {_root_cause(exc)}") from None
        except urllib3.exceptions.NewConnectionError as exc:  # a TimeoutError in urllib3
            raise notifiers.RetryableError(f"connection error: {_root_cause(exc)}") from None
        except urllib3.exceptions.TimeoutError:
            raise notifiers.RetryableError(f"no answer within {timeout} s") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise notifiers.RetryableError(f"connection error: {_root_cause(exc)}") from None
        except ValueError as exc:
            raise notifiers.DeliveryError(f"request failed: {exc}") from None
        status = response.status
        if 200 <= status < 300:
            return status
        summary = f"HTTP {status} {response.reason or ''}".strip()
        if status in RETRYABLE_STATUS or status >= 500:
            raise notifiers.RetryableError(
                summary, status, parse_retry_after(response.headers.get("Retry-After"))
            )
        if 300 <= status < 400:
            summary += f" (redirect to {response.headers.get('Location')!r} not followed)"
        raise notifiers.DeliveryError(summary, status)

    def close(self) -> None:
        with self._lock:
            for manager in self._managers.values():
                manager.clear()
            self._managers.clear()
