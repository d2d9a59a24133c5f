"""Writing deliveries and their events: the only changes a delivery's owner makes
in the course of delivering it.

Every update of a row is fenced: it applies only while the row is still this
process's (``owner``), still open, and not at a later attempt than the
event's (a late event cannot make an attempt in flight look waiting). A
process that was cut off from the database while another took its
deliveries over (``ownership``), or whose waiting retry another process
superseded (``ordering``), cannot write over
them when it comes back; its event is kept in the history, and the engine
learns at its next turn that the delivery is no longer its own.
"""

from __future__ import annotations

import datetime
import json
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from oslo_log import log

from ceilo_notifier import events
from ceilo_notifier.journal.outages import is_outage
from ceilo_notifier.journal.schema import (
    OPEN_STATES,
    PENDING,
    SETTLED_STATES,
    deliveries,
    delivery_events,
)

LOG = log.getLogger(__name__)

_UPDATE_FROM_EVENT = (
    deliveries.update()
    .where(deliveries.c.request_id == sa.bindparam("rid"))
    .where(deliveries.c.owner == sa.bindparam("me"))
    # Spelt out, not IN: executemany takes no expanding parameters.
    .where(sa.or_(*(deliveries.c.state == state for state in OPEN_STATES)))
    # Not an event of an earlier attempt than the one in flight (``ordering``).
    .where(deliveries.c.attempts <= sa.bindparam("attempt_no"))
    .values(
        state=sa.bindparam("state"),
        attempts=sa.bindparam("attempts"),
        status_code=sa.bindparam("status_code"),
        error=sa.bindparam("error"),
        updated_at=sa.bindparam("updated_at"),
        next_attempt_at=sa.bindparam("next_attempt_at"),
        action=sa.case(
            (sa.bindparam("settled", type_=sa.Boolean), deliveries.c.action_masked),
            else_=deliveries.c.action,
        ),
    )
)


class GroupCommit:
    """One transaction for the rows of every caller waiting at the same time.

    Consumer threads each need their rows committed before they return; the
    first to arrive commits for all who queued meanwhile (leader/follower, no
    thread of its own), so under load a commit serves many alarms.
    """

    class _Request:
        __slots__ = ("rows", "done", "error")

        def __init__(self, rows: list[dict[str, Any]]) -> None:
            self.rows = rows
            self.done = False
            self.error: BaseException | None = None

    def __init__(self, commit) -> None:
        self._commit = commit
        self._cond = threading.Condition()
        self._queue: list[GroupCommit._Request] = []
        self._busy = False

    def write(self, rows: list[dict[str, Any]]) -> None:
        request = self._Request(rows)
        with self._cond:
            self._queue.append(request)
            while not request.done and self._busy:
                self._cond.wait()
            if request.done:
                if request.error is not None:
                    raise request.error
                return
            self._busy = True
            batch, self._queue = self._queue, []
        try:
            self._commit_each(batch)
        finally:
            with self._cond:
                for r in batch:
                    r.done = True
                self._busy = False
                self._cond.notify_all()
        if request.error is not None:
            raise request.error

    def _commit_each(self, batch: list[GroupCommit._Request]) -> None:
        """Commit the group; if it fails on a value, each caller's rows alone,
        so that one bad row costs only its own caller."""
        try:
            self._commit([row for r in batch for row in r.rows])
            return
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
            if len(batch) == 1 or is_outage(exc):
                for r in batch:
                    r.error = exc
                return
        for r in batch:
            try:
                self._commit(r.rows)
            except BaseException as exc:  # noqa: BLE001 - handed to its caller
                r.error = exc


class Writer:
    """New deliveries, and the events that move them on."""

    def record_new(self, rows: Sequence[dict[str, Any]]) -> list[tuple[datetime.datetime, str]]:
        """Write deliveries before their first attempt, all in one transaction;
        when each was accepted (its ``created_at``) and its ordering key.

        A row's optional ``scope`` (not stored) makes its key its own:
        ``ordering.action_key``.
        """
        if not rows:
            return []
        now = self.clock.now()
        secret = self.secret()
        # One microsecond apart, in order: transitions accepted together keep
        # their order for resuming and supersession.
        values = []
        for i, row in enumerate(rows):
            row = dict(row)
            scope = row.pop("scope", None)
            values.append(
                {
                    **row,
                    "action_key": self.action_key(row["action"], scope, secret),
                    "notification": json.dumps(row["notification"]),
                    "state": PENDING,
                    "attempts": row.get("attempts", 0),
                    "owner": self.owner,
                    "created_at": now + datetime.timedelta(microseconds=i),
                    "updated_at": now,
                }
            )
        self._group_commit.write(values)
        return [(value["created_at"], value["action_key"]) for value in values]

    def _insert(self, values: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(deliveries.insert(), values)

    def record_events(self, batch: Iterable[events.DeliveryEvent]) -> list[tuple[str, str]]:
        """Append events and move their deliveries on, in one transaction.

        Both statements run as executemany, in event order, so a delivery that
        appears twice in a batch ends in its latest state. Returns the
        (request id, owner) of deliveries another process owns now: their
        events are history only.
        """
        batch = list(batch)
        if not batch:
            return []
        skew = self.clock.offset  # events carry this host's time; rows keep the database's
        rows = [
            {
                "request_id": e.request_id,
                "alarm_id": e.alarm_id,
                "action": e.action,
                "scheme": e.scheme,
                "outcome": e.outcome,
                "attempt": e.attempt,
                "status_code": e.status_code,
                "duration": e.duration,
                "error": e.error,
                "timestamp": e.timestamp + skew,
            }
            for e in batch
        ]
        updates = [
            {
                "rid": e.request_id,
                "me": self.owner,
                "state": e.outcome,
                "settled": e.outcome in SETTLED_STATES,
                "attempts": e.attempt,
                "attempt_no": e.attempt,
                "status_code": e.status_code,
                "error": e.error,
                "updated_at": e.timestamp + skew,
                "next_attempt_at": None
                if e.next_attempt_in is None
                else e.timestamp + skew + datetime.timedelta(seconds=e.next_attempt_in),
            }
            for e in batch
            if e.request_id is not None
        ]
        lost: list[tuple[str, str]] = []
        with self.engine.begin() as conn:
            if updates:
                applied = conn.execute(_UPDATE_FROM_EVENT, updates).rowcount
                if 0 <= applied < len(updates):
                    # Rare: only then is it worth a query to tell which.
                    lost = [
                        (rid, owner)
                        for rid, owner in conn.execute(
                            sa.select(deliveries.c.request_id, deliveries.c.owner)
                            .where(deliveries.c.request_id.in_({u["rid"] for u in updates}))
                            .where(deliveries.c.owner != self.owner)
                        )
                    ]
            conn.execute(delivery_events.insert(), rows)
        return lost
