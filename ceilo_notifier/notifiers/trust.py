"""``trust+http://`` and ``trust+https://``: POST to a webhook with a Keystone token.

``trust+https://TRUST_ID@host:port/path?x=1`` is delivered as a POST to
``https://host:port/path?x=1`` with ``X-Auth-Token: <token>``, a token of the
service user (``[service_credentials]``) scoped to the trust ``TRUST_ID``.
aodh's form ``trust+http://TRUST_ID:delete@host/...`` works too (the
password part is ignored).

Tokens are cached per trust until shortly before they expire. The trust id
is a credential: it is never logged, and neither is the token.
"""

from __future__ import annotations

import collections
import threading
from urllib import parse

from keystoneauth1 import exceptions as ka_exceptions
from oslo_config import cfg
from oslo_log import log

from ceilo_notifier import keystone, masking, notifiers
from ceilo_notifier.notification import AlarmNotification
from ceilo_notifier.notifiers import rest

LOG = log.getLogger(__name__)

PREFIX = "trust+"

# Deliveries (by request id) whose token a webhook already refused once.
_MAX_REFUSALS_REMEMBERED = 4096


def trust_id(action: parse.SplitResult) -> str:
    """The trust id of ``trust+…://TRUST_ID[:delete]@…``.

    :raises DeliveryError: the action carries none.
    """
    if "@" not in action.netloc:
        raise notifiers.DeliveryError(
            f"no trust id in the action: expected {action.scheme}://TRUST_ID@..."
        )
    userinfo = action.netloc.rpartition("@")[0]
    found = parse.unquote(userinfo.partition(":")[0])
    if not found:
        raise notifiers.DeliveryError(
            f"empty trust id in the action: expected {action.scheme}://TRUST_ID@..."
        )
    return found


def keystone_error(exc: Exception, trust: str | None = None) -> notifiers.DeliveryError:
    """The delivery error for a failure to get a token (or an endpoint) from Keystone.

    Keystone's messages may quote the trust id, a credential: it is masked.
    """
    error = _keystone_error(exc)
    if trust:
        error.reason = error.reason.replace(trust, masking.MASK)
        error.args = (error.reason,)
    return error


def _keystone_error(exc: Exception) -> notifiers.DeliveryError:
    if isinstance(exc, keystone.NotConfigured):
        return notifiers.DeliveryError(str(exc))
    if isinstance(exc, ka_exceptions.Unauthorized):
        return notifiers.DeliveryError(
            "Keystone refused the token request for the trust (HTTP 401): the "
            "trust is invalid, expired or revoked, or the service credentials "
            f"in [{keystone.GROUP}] are wrong",
        )
    if isinstance(exc, ka_exceptions.NotFound):
        return notifiers.DeliveryError(
            "Keystone does not know the trust (HTTP 404): it does not exist or was deleted",
        )
    if isinstance(exc, ka_exceptions.Forbidden):
        return notifiers.DeliveryError(
            "Keystone forbids the service user to use the trust (HTTP 403): it "
            "is not the trustee, or the trustor lost its roles",
        )
    if isinstance(exc, ka_exceptions.SSLError):
        return notifiers.DeliveryError(f"TLS error talking to Keystone: {exc}")
    if isinstance(exc, (ka_exceptions.ConnectionError, ka_exceptions.DiscoveryFailure)):
        # Keystone down, restarting or unreachable: it may come back.
        return notifiers.NotReached(f"Keystone unreachable: {exc}")
    if isinstance(exc, ka_exceptions.HttpError):
        status = exc.http_status
        summary = f"Keystone answered HTTP {status} to the token request: {exc.message}"
        if status is not None and (status >= 500 or status in rest.RETRYABLE_STATUS):
            return notifiers.NotReached(summary)
        return notifiers.DeliveryError(summary)
    return notifiers.DeliveryError(f"no Keystone token for the trust: {exc}")


class TrustRestAlarmNotifier(rest.RestAlarmNotifier):
    """The REST notifier, authenticated with a Keystone trust of the alarm's owner."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        keystone.register_opts(conf)
        self.tokens = keystone.TrustTokens(conf, default_timeout=conf.alarm.rest_notifier_timeout)
        self._refused: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._refused_lock = threading.Lock()

    @classmethod
    def validate(cls, action: parse.SplitResult) -> None:
        plain = action._replace(scheme=action.scheme[len(PREFIX) :])
        super().validate(plain._replace(netloc=action.netloc.rpartition("@")[2]))

    def target(
        self, action: parse.SplitResult
    ) -> tuple[str, tuple[str, str] | None, bool | None, dict[str, str]]:
        scheme = action.scheme.lower()
        if scheme.startswith(PREFIX):
            scheme = scheme[len(PREFIX) :]
        if scheme not in ("http", "https"):
            raise notifiers.DeliveryError(f"unsupported scheme {action.scheme!r}")
        trust = trust_id(action)
        netloc = action.netloc.rpartition("@")[2]
        url, _auth, verify = rest.split_action(action._replace(scheme=scheme, netloc=netloc))
        try:
            headers = self.tokens.headers(trust)
        except (keystone.NotConfigured, ka_exceptions.ClientException) as exc:
            raise keystone_error(exc, trust) from None
        return url, None, verify, dict(headers)

    def _first_refusal(self, request_id: str | None) -> bool:
        """True the first time a webhook refuses the token of this delivery."""
        if not request_id:
            return True
        with self._refused_lock:
            if request_id in self._refused:
                return False
            self._refused[request_id] = None
            while len(self._refused) > _MAX_REFUSALS_REMEMBERED:
                self._refused.popitem(last=False)
            return True

    async def notify_async(self, action: parse.SplitResult, notification: AlarmNotification) -> int:
        try:
            return await super().notify_async(action, notification)
        except notifiers.RetryableError:
            raise
        except notifiers.DeliveryError as exc:
            if exc.status_code != 401:
                raise
            # The webhook refused the token: it may have been revoked before
            # its expiry. Fetch a new one on the next attempt, once.
            self.tokens.invalidate(trust_id(action))
            if self._first_refusal(notification.request_id):
                raise notifiers.RetryableError(
                    f"{exc.reason}: the webhook refused the Keystone token; "
                    "retrying with a new token",
                    401,
                ) from None
            raise notifiers.DeliveryError(
                f"{exc.reason}: the webhook refused a new Keystone token for the trust too",
                401,
            ) from None

    def close(self) -> None:
        super().close()
        self.tokens.close()
