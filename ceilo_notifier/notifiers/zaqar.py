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
alarm subscribes again, as aodh does, and still posts. Webhook subscribers
pass the same target safety as http:// actions (``[alarm]
rest_notifier_denied_networks``), since Zaqar will call them from inside the
cloud; aodh did not check them.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from urllib import parse

from keystoneauth1 import exceptions as ka_exceptions
from keystoneauth1 import plugin as ka_plugin
from oslo_config import cfg

from ceilo_notifier import keystone, masking, notifiers
from ceilo_notifier.notification import AlarmNotification
from ceilo_notifier.notifiers import rest, safety
from ceilo_notifier.notifiers import trust as trust_notifier

API = "v2"
DEFAULT_TTL = 3600
MIN_TTL = 60  # Zaqar refuses shorter subscriptions
MAX_SUBSCRIBERS = 20
# Alarm ids are UUIDs: 36 characters and a dash leave 27 of Zaqar's 64.
MAX_TOPIC = 64 - 37
TOPIC = re.compile(rf"^[a-zA-Z0-9_-]{{1,{MAX_TOPIC}}}$")
# Zaqar's own rule for queue names.
QUEUE_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
SUBSCRIBER_SCHEMES = ("http", "https", "mailto")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31}):")
# Blanks and controls (parsers drop or strip some), backslashes (some read them as '/').
_BLANK = re.compile("[\x00-\x20\x7f-\x9f\u2028\u2029\\\\]")
PRESIGNED = ("queue_name", "project_id", "paths", "methods", "expires", "signature")

# keystoneauth logs every request's headers at DEBUG, masking only tokens.
SIGNATURE_LOGGERS = ("keystoneauth.session", "keystoneauth.session.request")
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


def _subscriber(subscriber: str) -> parse.SplitResult:
    """A subscriber URL as Zaqar will read it, if it may be handed to Zaqar.

    :raises ValueError: not an http, https or mailto URL (the cause quotes
        nothing but the scheme: the URL may carry a password).
    """
    if _BLANK.search(subscriber) or subscriber != subscriber.strip():
        raise ValueError("a subscriber holds blanks, backslashes or control characters")
    scheme = _SCHEME.match(subscriber)
    if scheme is None:
        raise ValueError("a subscriber is not a URL with a scheme")
    if scheme.group(1).lower() not in SUBSCRIBER_SCHEMES:
        why = ""
        if scheme.group(1).lower().startswith("trust+"):
            why = " (Zaqar would send it a token of the service user)"
        raise ValueError(
            f"subscriber scheme {scheme.group(1)!r} refused{why}: only http, https "
            "and mailto subscribers are accepted"
        )
    try:
        url = parse.urlsplit(subscriber)
        url.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"a subscriber is not a URL: {masking.url_error(exc)}") from None
    if url.scheme.lower() != "mailto" and not url.hostname:
        raise ValueError(f"an {url.scheme.lower()} subscriber has no host")
    return url


def _check_queue_name(name: str) -> None:
    if not QUEUE_NAME.match(name):
        raise ValueError(
            f"queue name {name!r} is not a Zaqar queue name (1 to 64 of a-z, A-Z, 0-9, _ and -)"
        )


@dataclasses.dataclass
class _Attempt:
    """What the requests of one attempt share."""

    endpoint: str
    auth: ka_plugin.BaseAuthPlugin | None  # None: pre-signed, no token
    budget: notifiers.Budget
    trust: str | None = None


class ZaqarAlarmNotifier(notifiers.AlarmNotifier):
    """Posts to a Zaqar queue: a subscription queue of the service user, or a pre-signed one."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self.keystone = keystone.TrustTokens(conf, default_timeout=conf.alarm.rest_notifier_timeout)
        self.policy = safety.AddressPolicy(
            conf.alarm.rest_notifier_denied_networks, conf.alarm.rest_notifier_allowed_networks
        )
        self._endpoint: str | None = None
        # Zaqar wants a Client-ID on every request; one per service process.
        self.client_id = str(uuid.uuid4())
        for logger in SIGNATURE_LOGGERS:
            masking.mask_logger(logger, _mask_signatures)

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
        topic = _one(query, "topic")
        if not topic:
            raise ValueError(
                "no topic in the query: expected zaqar://?topic=T&subscriber=URL "
                "or the pre-signed data of a queue"
            )
        if not TOPIC.match(topic):
            raise ValueError(
                f"topic {topic!r} cannot make a Zaqar queue name <alarm id>-<topic> "
                f"(1 to {MAX_TOPIC} of a-z, A-Z, 0-9, _ and -)"
            )
        subscribers = set(query.get("subscriber", []))
        if len(subscribers) > MAX_SUBSCRIBERS:
            raise ValueError(f"{len(subscribers)} subscribers, more than {MAX_SUBSCRIBERS}")
        for subscriber in subscribers:
            _subscriber(subscriber)
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
            attempt = self._attempt(self.keystone.service_auth)
            attempt.auth = None  # the catalog came with the service user's token
            return self.post(
                attempt, _one(query, "queue_name") or "", notification, _signed_headers(query)
            )
        queue = f"{notification.alarm_id}-{_one(query, 'topic')}"
        try:
            _check_queue_name(queue)
        except ValueError as exc:
            raise notifiers.DeliveryError(
                f"{exc}: alarm id and topic make the queue name"
            ) from None
        subscribers = list(dict.fromkeys(query.get("subscriber", [])))
        self._check_subscribers(subscribers)
        attempt = self._attempt(self.keystone.service_auth)
        ttl = int(_one(query, "ttl") or DEFAULT_TTL)
        for subscriber in subscribers:
            self.request(
                attempt,
                queue,
                "subscriptions",
                {"subscriber": subscriber, "ttl": ttl, "options": {}},
                ok_statuses=(409,),
            )
        return self.post(attempt, queue, notification)

    def _check_subscribers(self, subscribers: list[str]) -> None:
        """Refuse webhook subscribers inside the cloud (target safety, as for http://).

        Zaqar, not this service, will POST to them, from inside the cloud and
        on behalf of the service user: aodh let a tenant aim that at loopback
        or the metadata service.
        """
        for subscriber in subscribers:
            url = _subscriber(subscriber)  # validate() has refused any other
            if url.scheme.lower() == "mailto":
                continue
            try:
                self.policy.check_name(url.hostname)
            except safety.TargetDenied as exc:
                raise notifiers.DeliveryError(
                    f"subscriber {masking.mask_url(subscriber)} refused: {exc}"
                ) from None

    def _attempt(self, get_auth, trust: str | None = None) -> _Attempt:
        """An auth plugin with its token and Zaqar's endpoint, or the delivery error."""
        try:
            auth = get_auth(trust) if trust else get_auth()
            endpoint = self.keystone.endpoint(auth, self.conf.service_types.zaqar)
        except (keystone.NotConfigured, ka_exceptions.ClientException) as exc:
            raise trust_notifier.keystone_error(exc, trust) from None
        budget = self.budget(self.keystone.session.timeout or self.conf.alarm.rest_notifier_timeout)
        self._endpoint = rest.http_endpoint(parse.urlsplit(endpoint))
        return _Attempt(endpoint.rstrip("/"), auth, budget, trust)

    def endpoint(self, action: parse.SplitResult) -> str | None:
        """Zaqar's, once an attempt has found it in the catalog (none before)."""
        return self._endpoint

    def post(
        self,
        attempt: _Attempt,
        queue: str,
        n: AlarmNotification,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Post the alarm's message to a queue; the status of Zaqar's answer."""
        return self.request(
            attempt, queue, "messages", {"messages": [{"body": n.body()}]}, headers=headers
        )

    def request(
        self,
        attempt: _Attempt,
        queue: str,
        resource: str,
        body: dict,
        headers: dict[str, str] | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> int:
        """POST ``body`` to ``/v2/queues/<queue>/<resource>``; raises the delivery error."""
        attempt.budget.check(f"POST {resource}")
        try:
            response = self.keystone.session.post(
                f"{attempt.endpoint}/{API}/queues/{queue}/{resource}",
                json=body,
                auth=attempt.auth,
                authenticated=attempt.auth is not None,
                headers={"Client-ID": self.client_id, **(headers or {})},
                raise_exc=False,
                redirect=False,
            )
        except ka_exceptions.ConnectionError as exc:
            raise notifiers.RetryableError(f"Zaqar unreachable: {exc}") from None
        except (keystone.NotConfigured, ka_exceptions.ClientException) as exc:
            raise trust_notifier.keystone_error(exc, attempt.trust) from None
        status = response.status_code
        if 200 <= status < 300 or status in ok_statuses:
            return status
        text = masking.mask_text(response.text[:200].strip())
        raise notifiers.status_error(
            f"Zaqar answered HTTP {status} to POST {resource} of queue {queue}: {text}", status
        )

    def close(self) -> None:
        self.keystone.close()


def _signed_headers(query: dict[str, list[str]]) -> dict[str, str]:
    """Zaqar's signed-URL headers, from the pre-signed data of the query."""
    return {
        "URL-Signature": _one(query, "signature") or "",
        "URL-Expires": _one(query, "expires") or "",
        "URL-Methods": _one(query, "methods") or "",
        "URL-Paths": _one(query, "paths") or "",
        "X-Project-ID": _one(query, "project_id") or "",
    }


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
        attempt = self._attempt(self.keystone.auth, trust_notifier.trust_id(action))
        return self.post(attempt, _one(_query(action), "queue_name") or "", notification)
