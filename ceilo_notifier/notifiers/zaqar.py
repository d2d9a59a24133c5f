"""``zaqar://`` and ``trust+zaqar://``: post the alarm to a Zaqar queue, as aodh does.

``zaqar://?topic=T&subscriber=URL[&subscriber=URL…][&ttl=S]``
    With the service user's credentials (``[service_credentials]``), subscribe
    each subscriber (for ``ttl`` seconds, default 3600) to the queue
    ``<alarm_id>-<topic>`` of the service project, then post the message
    ``{"body": <the webhook body>}`` there; Zaqar notifies the subscribers.
    Zaqar creates queues on first use, so nothing else is needed.
``zaqar://?queue_name=Q&project_id=P&paths=…&methods=…&expires=…&signature=…``
    Pre-signed data from Zaqar's ``share`` call: post to that queue with
    Zaqar's signed-URL headers, without a token.
``trust+zaqar://TRUST_ID@?queue_name=Q``
    Post to the user's own queue ``Q`` with a token of the trust.

Zaqar is found in the Keystone catalog (``[service_types] zaqar``, default
``messaging``). The requests go through one keystoneauth session, which
bounds each one by ``[alarm] rest_notifier_timeout`` and keeps connections
open; python-zaqarclient sets no timeout and opens a connection per request.
A subscription that already exists (409) is fine: every transition of the
alarm subscribes again, as aodh does, and still posts.
"""

from __future__ import annotations

import re
import uuid
from urllib import parse

from keystoneauth1 import exceptions as ka_exceptions
from keystoneauth1 import plugin as ka_plugin
from oslo_config import cfg

from ceilo_notifier import keystone, masking, notifiers
from ceilo_notifier.notification import AlarmNotification
from ceilo_notifier.notifiers import trust as trust_notifier

API = "v2"
DEFAULT_TTL = 3600
MIN_TTL = 60  # Zaqar refuses shorter subscriptions
# Zaqar's own rule for queue names.
QUEUE_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
PRESIGNED = ("queue_name", "project_id", "paths", "methods", "expires", "signature")

# keystoneauth logs every request's headers at DEBUG, masking only tokens.
_SIGNATURE_HEADER = re.compile(r"(URL-Signature: )[^\"'\s]*", re.IGNORECASE)


def _mask_signatures(message: str) -> str:
    if "URL-Signature" not in message:
        return message
    return _SIGNATURE_HEADER.sub(rf"\g<1>{masking.MASK}", message)


def _query(action: parse.SplitResult) -> dict[str, list[str]]:
    return parse.parse_qs(action.query, keep_blank_values=False)


def _one(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[-1] if values else None


def _check_queue_name(name: str) -> None:
    if not QUEUE_NAME.match(name):
        raise ValueError(
            f"queue name {name!r} is not a Zaqar queue name (1 to 64 of a-z, A-Z, 0-9, _ and -)"
        )


class ZaqarAlarmNotifier(notifiers.AlarmNotifier):
    """Posts to a Zaqar queue: a subscription queue of the service user, or a pre-signed one."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self.keystone = keystone.TrustTokens(conf, default_timeout=conf.alarm.rest_notifier_timeout)
        # Zaqar wants a Client-ID on every request; one per service process.
        self.client_id = str(uuid.uuid4())
        masking.mask_logger("keystoneauth.session", _mask_signatures)

    @classmethod
    def validate(cls, action: parse.SplitResult) -> None:
        query = _query(action)
        if _one(query, "signature") is not None or _one(query, "queue_name") is not None:
            missing = [key for key in PRESIGNED if not _one(query, key)]
            if missing:
                raise ValueError(
                    "pre-signed queue data incomplete: no " + ", ".join(missing) + " in the query"
                )
            _check_queue_name(_one(query, "queue_name") or "")
            return
        if not _one(query, "topic"):
            raise ValueError(
                "no topic in the query: expected zaqar://?topic=T&subscriber=URL "
                "or the pre-signed data of a queue"
            )
        ttl = _one(query, "ttl")
        if ttl is not None and not (ttl.isdigit() and int(ttl) >= MIN_TTL):
            raise ValueError(f"ttl={ttl!r} is not a number of seconds of at least {MIN_TTL}")

    def notify(self, action: parse.SplitResult, notification: AlarmNotification) -> int:
        try:
            self.validate(action)
        except ValueError as exc:
            raise notifiers.DeliveryError(str(exc)) from None
        query = _query(action)
        if _one(query, "signature") is not None:
            return self._post_presigned(query, notification)
        queue = f"{notification.alarm_id}-{_one(query, 'topic')}"
        try:
            _check_queue_name(queue)
        except ValueError as exc:
            raise notifiers.DeliveryError(
                f"{exc}: alarm id and topic make the queue name"
            ) from None
        auth = self._keystone(self.keystone.service_auth)
        ttl = int(_one(query, "ttl") or DEFAULT_TTL)
        for subscriber in query.get("subscriber", []):
            self.request(
                auth,
                queue,
                "subscriptions",
                {"subscriber": subscriber, "ttl": ttl, "options": {}},
                ok_statuses=(409,),
            )
        return self.post(auth, queue, notification)

    def _keystone(self, get_auth, *args: str) -> ka_plugin.BaseAuthPlugin:
        """An auth plugin whose token and catalog are ready, or the delivery error."""
        try:
            auth = get_auth(*args)
            self._endpoint(auth)
            return auth
        except (keystone.NotConfigured, ka_exceptions.ClientException) as exc:
            raise trust_notifier.keystone_error(exc, *args) from None

    def _endpoint(self, auth: ka_plugin.BaseAuthPlugin) -> str:
        return self.keystone.endpoint(auth, self.conf.service_types.zaqar).rstrip("/")

    def post(
        self,
        auth: ka_plugin.BaseAuthPlugin | None,
        queue: str,
        n: AlarmNotification,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Post the alarm's message to a queue; the status of Zaqar's answer."""
        return self.request(
            auth, queue, "messages", {"messages": [{"body": n.body()}]}, headers=headers
        )

    def request(
        self,
        auth: ka_plugin.BaseAuthPlugin | None,
        queue: str,
        resource: str,
        body: dict,
        headers: dict[str, str] | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> int:
        """POST ``body`` to ``/v2/queues/<queue>/<resource>``; raises the delivery error."""
        try:
            endpoint = self._endpoint(auth) if auth is not None else self._presigned_endpoint()
            response = self.keystone.session.post(
                f"{endpoint}/{API}/queues/{queue}/{resource}",
                json=body,
                auth=auth,
                authenticated=auth is not None,
                headers={"Client-ID": self.client_id, **(headers or {})},
                raise_exc=False,
                redirect=False,
            )
        except ka_exceptions.ConnectionError as exc:
            raise notifiers.RetryableError(f"Zaqar unreachable: {exc}") from None
        except (keystone.NotConfigured, ka_exceptions.ClientException) as exc:
            raise trust_notifier.keystone_error(exc) from None
        status = response.status_code
        if 200 <= status < 300 or status in ok_statuses:
            return status
        text = masking.mask_text(response.text[:200].strip())
        raise notifiers.status_error(
            f"Zaqar answered HTTP {status} to POST {resource} of queue {queue}: {text}", status
        )

    def _presigned_endpoint(self) -> str:
        # The catalog is read with the service user's token; the request itself
        # carries only the signature.
        return self._endpoint(self._keystone(self.keystone.service_auth))

    def _post_presigned(self, query: dict[str, list[str]], n: AlarmNotification) -> int:
        headers = {
            "URL-Signature": _one(query, "signature") or "",
            "URL-Expires": _one(query, "expires") or "",
            "URL-Methods": _one(query, "methods") or "",
            "URL-Paths": _one(query, "paths") or "",
            "X-Project-ID": _one(query, "project_id") or "",
        }
        return self.post(None, _one(query, "queue_name") or "", n, headers)

    def close(self) -> None:
        self.keystone.close()


class TrustZaqarAlarmNotifier(ZaqarAlarmNotifier):
    """Posts to the user's own queue with a token of the user's trust."""

    @classmethod
    def validate(cls, action: parse.SplitResult) -> None:
        queue = _one(_query(action), "queue_name")
        if not queue:
            raise ValueError("no queue_name in the query: expected trust+zaqar://?queue_name=Q")
        _check_queue_name(queue)

    def notify(self, action: parse.SplitResult, notification: AlarmNotification) -> int:
        try:
            self.validate(action)
        except ValueError as exc:
            raise notifiers.DeliveryError(str(exc)) from None
        trust = trust_notifier.trust_id(action)
        auth = self._keystone(self.keystone.auth, trust)
        return self.post(auth, _one(_query(action), "queue_name") or "", notification)
