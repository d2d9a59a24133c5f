"""The journal's tables, and a delivery row as the rest of the service reads it.

The column sizes are the limits intake enforces (``ALARM_ID_LENGTH``,
``SCHEME_LENGTH``): no value that passed validation can fail a write.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

import sqlalchemy as sa

from ceilo_notifier import events

PENDING = "pending"
OPEN_STATES = (PENDING, events.RETRYING)
# States whose row no longer needs the action's credentials.
SETTLED_STATES = (events.DELIVERED, events.SUPERSEDED, events.DROPPED)

ALARM_ID_LENGTH = 255
SCHEME_LENGTH = 64
# scheme://host:port, the host as long as DNS allows.
ENDPOINT_LENGTH = 320

metadata = sa.MetaData()

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("alarm_id", sa.String(ALARM_ID_LENGTH), nullable=False, index=True),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("action_masked", sa.Text, nullable=False),
    # What orders and supersedes deliveries across processes (ordering.action_key).
    sa.Column("action_key", sa.String(64), nullable=False, server_default=""),
    sa.Column("scheme", sa.String(SCHEME_LENGTH)),
    sa.Column("notification", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("status_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("owner", sa.String(255), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    # Set while a retry waits out of memory (``park``); events never touch it.
    sa.Column("parked_until", sa.DateTime(timezone=True), index=True),
    # Where its attempts go (endpoints): its held rows are released together.
    sa.Column("endpoint", sa.String(ENDPOINT_LENGTH), index=True),
    sa.Index("ix_deliveries_alarm_key", "alarm_id", "action_key"),
)

delivery_events = sa.Table(
    "delivery_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), index=True),
    sa.Column("alarm_id", sa.String(ALARM_ID_LENGTH), index=True),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("scheme", sa.String(SCHEME_LENGTH)),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("duration", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False, index=True),
)

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("owner", sa.String(255), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False, index=True),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
)

# Endpoint health shared by every process of the journal (endpoints): only
# endpoints that were ever held have a row.
endpoint_states = sa.Table(
    "endpoints",
    metadata,
    sa.Column("endpoint", sa.String(ENDPOINT_LENGTH), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("failures", sa.Integer, nullable=False, default=0),
    sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    # Next probe (open), end of a pause or of a Retry-After (None: until resumed).
    sa.Column("until", sa.DateTime(timezone=True)),
    sa.Column("open_for", sa.Float, nullable=False, default=0.0),
    sa.Column("reason", sa.Text),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("changed_by", sa.String(255), nullable=False),
)

# Secrets of the journal itself, made by its migrations: the key of
# ``action_key`` ("action"), shared by every process using the database.
journal_keys = sa.Table(
    "journal_keys",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("secret", sa.String(128), nullable=False),
)


def aware(value: datetime.datetime | None) -> datetime.datetime | None:
    """SQLite hands back naive datetimes; everything here is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=datetime.timezone.utc)
    return value


@dataclasses.dataclass(frozen=True)
class Record:
    """A delivery as the journal knows it."""

    request_id: str
    alarm_id: str
    action: str
    action_masked: str
    scheme: str | None
    notification: dict[str, Any]
    state: str
    attempts: int
    status_code: int | None
    error: str | None
    owner: str
    created_at: datetime.datetime
    updated_at: datetime.datetime
    next_attempt_at: datetime.datetime | None
    parked_until: datetime.datetime | None = None
    action_key: str = ""
    endpoint: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """Rows with one key keep their order and supersede each other."""
        return (self.alarm_id, self.action_key)

    @classmethod
    def from_row(cls, row: sa.Row) -> Record:
        data = dict(row._mapping)
        data["notification"] = json.loads(data["notification"])
        for key in ("created_at", "updated_at", "next_attempt_at", "parked_until"):
            data[key] = aware(data[key])
        return cls(**data)
