"""The alarm notification a plugin receives."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any


@dataclasses.dataclass(frozen=True)
class AlarmNotification:
    """One alarm transition, validated, plus the id of the delivery carrying it.

    ``request_id`` is set per action by the engine and stays the same on
    every retry of that delivery, so a receiver can de-duplicate.
    ``timestamp`` is when the delivery was accepted (ISO 8601, UTC), also the
    same on every retry, and after a restart (the journal's acceptance time):
    templates show it; it is not part of ``body()``.
    ``message_id`` names the broker message that carried the transition; it
    is the same when the broker delivers that message again, and the
    request ids of its deliveries derive from it (not part of the body).
    """

    alarm_id: str
    previous: str | None = None
    current: str | None = None
    reason: str | None = None
    reason_data: dict[str, Any] = dataclasses.field(default_factory=dict)
    alarm_name: str | None = None
    severity: str | None = None
    request_id: str | None = None
    message_id: str | None = None
    timestamp: str | None = None

    def body(self) -> dict[str, Any]:
        """The JSON document webhooks receive."""
        return {
            "alarm_id": self.alarm_id,
            "alarm_name": self.alarm_name,
            "severity": self.severity,
            "previous": self.previous,
            "current": self.current,
            "reason": self.reason,
            "reason_data": self.reason_data,
        }

    def for_delivery(self, request_id: str, timestamp: str | None = None) -> AlarmNotification:
        """This notification as one delivery carries it: its request id, and when
        it was accepted (now, unless given or already set)."""
        if timestamp is None:
            timestamp = self.timestamp or utc_timestamp()
        return dataclasses.replace(self, request_id=request_id, timestamp=timestamp)


def utc_timestamp(when: datetime.datetime | None = None) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``: ``2024-05-01T12:00:00.123Z``."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    if when.tzinfo is None:  # the journal's SQLite hands back naive UTC
        when = when.replace(tzinfo=datetime.timezone.utc)
    when = when.astimezone(datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
