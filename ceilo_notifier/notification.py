"""The alarm notification a plugin receives."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class AlarmNotification:
    """One alarm transition, validated, plus the id of the delivery carrying it.

    ``request_id`` is set per action by the engine and stays the same on
    every retry of that delivery, so a receiver can de-duplicate.
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

    def for_delivery(self, request_id: str) -> AlarmNotification:
        return dataclasses.replace(self, request_id=request_id)
