"""What happened to a delivery: one event per attempt or decision."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

DELIVERED = "delivered"
RETRYING = "retrying"
FAILED = "failed"
SUPERSEDED = "superseded"
DROPPED = "dropped"

OUTCOMES = (DELIVERED, RETRYING, FAILED, SUPERSEDED, DROPPED)
FINAL_OUTCOMES = frozenset({DELIVERED, FAILED, SUPERSEDED, DROPPED})


@dataclasses.dataclass(frozen=True)
class DeliveryEvent:
    """One attempt of one delivery, or a decision about it; action is already masked."""

    alarm_id: str | None
    action: str
    scheme: str | None
    outcome: str
    attempt: int
    request_id: str | None
    status_code: int | None = None
    duration: float | None = None
    error: str | None = None
    next_attempt_in: float | None = None
    alarm_name: str | None = None
    severity: str | None = None
    previous: str | None = None
    current: str | None = None
    timestamp: datetime.datetime = dataclasses.field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc)
    )

    @property
    def final(self) -> bool:
        return self.outcome in FINAL_OUTCOMES

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["timestamp"] = self.timestamp.isoformat()
        return data
