"""A delivery: one alarm notification on its way to one action, across all its attempts.

The object that travels the pipeline (intake → journal → scheduler →
attempt → announce). Only the engine's event loop changes its state; other
threads read its outcome once ``wait`` has returned.
"""

from __future__ import annotations

import datetime
import hashlib
import threading
import uuid
from urllib import parse

from ceilo_notifier import events, masking, notifiers, shares
from ceilo_notifier.notification import AlarmNotification, utc_timestamp

# Guards the lazy creation of Delivery._done: few deliveries are ever waited for.
_WAITERS_LOCK = threading.Lock()

# Where a delivery is in the scheduler.
QUEUED, RUNNING, WAITING, DONE = "queued", "running", "waiting", "done"


def request_id_for(message_id: str | None, index: int) -> str | None:
    """The request id of the ``index``-th action of the alarm a broker message carried.

    Derived, not drawn: when the broker delivers a message again (its
    consumer died before acknowledging it), its deliveries get the ids
    they were journaled with, so they are recognised, and a receiver that
    got one already can tell. None without a message id (a random one then).
    """
    if not message_id:
        return None
    digest = hashlib.sha256(f"{message_id}/{index}".encode()).digest()[:16]
    return f"req-{uuid.UUID(bytes=digest, version=4)}"


FANOUT_PREFIX = "rpc-fanout:"


def fanout_message_id(unique_id: str, host: str) -> str:
    """The message id of one host's copy of a fanout cast: its own, with the host.

    A prefix of its own, so that no id a sender chooses for a plain cast can
    pass for a fanout copy (and take its transitions out of their line).
    """
    return f"{FANOUT_PREFIX}{unique_id}@{host}"


def scope_of(message_id: str | None) -> str | None:
    """The host whose copy of a fanout cast a message is, else None.

    Each host's copy is a line of transitions of its own: hosts sharing a
    journal neither wait for nor supersede each other's copies.
    """
    if message_id and message_id.startswith(FANOUT_PREFIX):
        return message_id.rsplit("@", 1)[1]
    return None


# As long as the journal keeps (journal.schema.ENDPOINT_LENGTH): no DNS name is longer.
ENDPOINT_LENGTH = 320


def endpoint_of(plugin: notifiers.AlarmNotifier, url: parse.SplitResult) -> str | None:
    """Where a plugin says the attempts of an action go, or None (whatever it raises)."""
    try:
        endpoint = plugin.endpoint(url)
    except Exception:  # noqa: BLE001 - a third-party plugin's hook: no endpoint then
        return None
    if not isinstance(endpoint, str) or not endpoint or len(endpoint) > ENDPOINT_LENGTH:
        return None
    return endpoint


def _host_of(endpoint: str | None) -> str | None:
    """The host of a ``scheme://host:port`` endpoint, or None."""
    if not endpoint:
        return None
    try:
        return parse.urlsplit(endpoint).hostname
    except ValueError:
        return None


class Delivery:
    """One notification on its way to one action."""

    __slots__ = (
        "request_id",
        "notification",
        "action",
        "masked_action",
        "url",
        "host",
        "share",
        "endpoint",
        "held",
        "plugin",
        "attempt",
        "first_attempt",
        "accepted",
        "action_key",
        "state",
        "outcome",
        "status_code",
        "error",
        "duration",
        "timer",
        "_announced",
        "_done",
    )

    def __init__(
        self,
        notification: AlarmNotification,
        action: str,
        url: parse.SplitResult,
        plugin: notifiers.AlarmNotifier,
        request_id: str | None = None,
        attempt: int = 0,
    ) -> None:
        self.request_id = request_id or f"req-{uuid.uuid4()}"
        self.notification = notification.for_delivery(self.request_id)
        self.action = action
        self.masked_action = masking.mask_url(action)
        self.url = url
        self.host = f"{url.scheme}://{url.hostname or ''}:{url.port or ''}"
        # Deliveries of one share (shares.share_of) share its slots and its turn.
        # A scheme without a host (zaqar://, trust+heat://, log://) calls one
        # service the operator chose: its share is the scheme's, as before.
        self.plugin = plugin
        self.endpoint = endpoint_of(plugin, url)
        # The host connected to where the plugin says it: an Apprise service's
        # URL names no host (slack://TOKEN/...), its endpoint does. A provider's
        # plugin without one shares its scheme's: its URL's "host" may be a token.
        host = _host_of(self.endpoint)
        if host is None and getattr(plugin, "provider", None) is None:
            host = url.hostname
        self.share = shares.share_of(host) or f"{url.scheme.lower()}:"
        self.held = False  # waiting for its endpoint (endpoints.py), not for a retry
        self.attempt = attempt
        self.first_attempt: float | None = None
        # When the journal accepted it (its created_at); None without a journal
        # record, taken as newer than anything read back from the journal.
        self.accepted: float | None = None
        # Its key in the journal (journal.ordering), once journaled.
        self.action_key: str | None = None
        self.state = QUEUED
        self.outcome: str | None = None
        self.status_code: int | None = None
        self.error: str | None = None
        self.duration: float | None = None
        self.timer = None  # the loop's handle while waiting for a retry
        self._announced = False
        self._done: threading.Event | None = None

    def accepted_at(self, when: datetime.datetime) -> None:
        """The journal accepted it at ``when`` (its ``created_at``): templates show
        that time, on every retry and after a restart alike."""
        self.accepted = when.timestamp()
        self.notification = self.notification.for_delivery(self.request_id, utc_timestamp(when))

    @property
    def key(self) -> tuple[str, str]:
        """Deliveries with one key keep their order and supersede each other, in
        this process; across processes the journal's key does (journal.ordering)."""
        return (self.notification.alarm_id, self.action)

    @property
    def journal_key(self) -> tuple[str, str | None]:
        """Its key across processes (journal.ordering), once journaled."""
        return (self.notification.alarm_id, self.action_key)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the final outcome has been announced; True if it has."""
        with _WAITERS_LOCK:
            if self._announced:
                return True
            if self._done is None:
                self._done = threading.Event()
            done = self._done
        return done.wait(timeout)

    def announced(self) -> None:
        """Called once the final event went to every event sink."""
        with _WAITERS_LOCK:
            self._announced = True
            if self._done is not None:
                self._done.set()

    def event(
        self, outcome: str, error: str | None = None, next_attempt_in: float | None = None
    ) -> events.DeliveryEvent:
        n = self.notification
        return events.DeliveryEvent(
            alarm_id=n.alarm_id,
            action=self.masked_action,
            scheme=self.url.scheme,
            outcome=outcome,
            attempt=self.attempt,
            request_id=self.request_id,
            status_code=self.status_code,
            duration=self.duration,
            error=error,
            next_attempt_in=next_attempt_in,
            alarm_name=n.alarm_name,
            severity=n.severity,
            previous=n.previous,
            current=n.current,
        )

    def journal_row(self) -> dict:
        return {
            "request_id": self.request_id,
            "alarm_id": self.notification.alarm_id,
            "action": self.action,
            "action_masked": self.masked_action,
            "scheme": self.url.scheme,
            "notification": self.notification.body(),
            "attempts": self.attempt,
            "scope": scope_of(self.notification.message_id),
            "endpoint": self.endpoint,
        }
