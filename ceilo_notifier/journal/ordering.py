"""Order across processes: which delivery of one alarm to one action goes when.

Within a process the scheduler keeps transitions of one alarm to one action
in order and lets a newer one supersede an older one waiting for its retry.
Across processes sharing the journal this module does, with one key and one
clock:

* **the key** is ``(alarm_id, action_key)``: a keyed hash (HMAC-SHA256) of
  the action exactly as written, so that two actions differing only in a
  password, an API key or a trust id are two receivers, as they are inside
  one process, while no row keeps the credential once settled. The key of
  the hash lives in the journal itself (``journal_keys``), so every process
  of the database agrees on it. A copy of a fanout cast has a ``scope`` (its
  host) in its key: each host's copy is a line of its own.
* **the clock** is ``created_at``, written with the database's clock
  (``clock``), so that hosts order transitions alike whatever their skew.

``turn`` answers, before an attempt, one of:

* ``lost``: another process owns the row now (it took it over): stop;
* ``superseded``: a newer transition of its key was accepted, or another
  process superseded this one while it waited;
* ``wait``: an older transition of its key may be in flight (its row is
  ``pending`` and not parked): ask again shortly;
* ``go``: the row is marked ``pending`` (in flight) first, in the same
  transaction, so a newer transition elsewhere waits for it.

An older transition that is only *waiting* (for its retry timer, or parked)
is not waited for: it is superseded at once, by an update conditional on it
still waiting, which its owner respects, since its own next turn then says
``superseded``. If its owner marked it in flight first, the update does
nothing and the newer one waits. A journal that cannot be asked means
``wait`` for the caller (fail closed): a stale send is worse than a late one.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Sequence

import sqlalchemy as sa
from oslo_log import log

from ceilo_notifier import events, masking
from ceilo_notifier.journal.schema import (
    OPEN_STATES,
    PENDING,
    Record,
    aware,
    deliveries,
    delivery_events,
    journal_keys,
)

LOG = log.getLogger(__name__)

LOST, SUPERSEDED, WAIT, GO = "lost", "superseded", "wait", "go"

SUPERSEDED_ELSEWHERE = "superseded by a newer transition (accepted by {owner})"


def _waiting(row) -> sa.ColumnElement[bool] | bool:
    """A row that waits for its retry: no attempt of it is in flight."""
    if row is None:
        return sa.or_(deliveries.c.state == events.RETRYING, deliveries.c.parked_until.is_not(None))
    return row.state == events.RETRYING or row.parked_until is not None


class Ordering:
    """Turns, supersession and the newest transition of each key."""

    _secret: bytes | None = None

    def secret(self) -> bytes:
        """The key of ``action_key``, read once from the journal."""
        if self._secret is None:
            with self.engine.connect() as conn:
                value = conn.execute(
                    sa.select(journal_keys.c.secret).where(journal_keys.c.name == "action")
                ).scalar_one()
            self._secret = bytes.fromhex(value)
        return self._secret

    def action_key(self, action: str, scope: str | None = None, secret: bytes | None = None) -> str:
        """What orders and supersedes deliveries to ``action`` across processes."""
        text = action if scope is None else f"{scope}\x00{action}"
        return hmac.new(
            secret or self.secret(), text.encode("utf-8", "surrogatepass"), hashlib.sha256
        ).hexdigest()

    def key_unkeyed(self, limit: int = 500) -> int:
        """Give their key to open rows journaled by a host of the previous release
        (during a rolling upgrade); how many were keyed."""
        secret = self.secret()
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(deliveries.c.request_id, deliveries.c.action)
                .where(deliveries.c.action_key == "")
                .where(deliveries.c.state.in_(OPEN_STATES))
                .limit(limit)
            ).all()
            for rid, action in rows:
                conn.execute(
                    sa.update(deliveries)
                    .where(deliveries.c.request_id == rid)
                    .where(deliveries.c.action_key == "")
                    .values(action_key=self.action_key(action, secret=secret))
                )
        return len(rows)

    def turn(self, request_id: str, attempt: int = 1) -> str:
        """Whether this process's delivery may now make its ``attempt``-th attempt
        (see the module). On ``go`` the row records that attempt as in flight: an
        event of an earlier attempt, written late, can no longer make it look
        waiting (``writing``)."""
        d = deliveries.c
        with self.engine.begin() as conn:
            this = conn.execute(
                sa.select(
                    d.owner, d.state, d.alarm_id, d.action_key, d.created_at, d.parked_until
                ).where(d.request_id == request_id)
            ).first()
            if this is None:
                return GO  # never journaled (the journal refused it): the scheduler orders it
            if this.owner != self.owner:
                return LOST
            if this.state not in OPEN_STATES:
                return SUPERSEDED
            same = (
                sa.select(d.request_id)
                .where(d.alarm_id == this.alarm_id)
                .where(d.action_key == this.action_key)
                .where(d.request_id != request_id)
            )
            newer = same.where(d.created_at > this.created_at).where(d.state != events.DROPPED)
            if conn.execute(newer.limit(1)).first() is not None:
                return SUPERSEDED
            older = conn.execute(
                sa.select(
                    d.request_id,
                    d.owner,
                    d.state,
                    d.parked_until,
                    d.attempts,
                    d.alarm_id,
                    d.action_masked,
                    d.scheme,
                )
                .where(d.alarm_id == this.alarm_id)
                .where(d.action_key == this.action_key)
                .where(d.created_at < this.created_at)
                .where(d.state.in_(OPEN_STATES))
            ).all()
            blocked = False
            for row in older:
                if not (_waiting(row) and self._supersede_waiting(conn, row)):
                    blocked = True
            if blocked:
                return WAIT
            if this.state != PENDING or this.parked_until is not None:
                # Conditional on the row as read: if another process superseded
                # it meanwhile, this one lost the race.
                marked = conn.execute(
                    sa.update(deliveries)
                    .where(d.request_id == request_id)
                    .where(d.owner == self.owner)
                    .where(d.state == this.state)
                    .where(
                        d.parked_until.is_(None)
                        if this.parked_until is None
                        else d.parked_until.is_not(None)
                    )
                    .values(
                        state=PENDING,
                        parked_until=None,
                        attempts=sa.func.greatest(d.attempts, attempt)
                        if conn.dialect.name != "sqlite"
                        else sa.func.max(d.attempts, attempt),
                        updated_at=self.clock.now(),
                    )
                ).rowcount
                if not marked:
                    return SUPERSEDED
        return GO

    def _supersede_waiting(self, conn: sa.Connection, row) -> bool:
        """Supersede an older delivery of another process while it still waits."""
        now = self.clock.now()
        error = SUPERSEDED_ELSEWHERE.format(owner=self.owner)
        done = conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.request_id == row.request_id)
            .where(deliveries.c.state.in_(OPEN_STATES))
            .where(_waiting(None))
            .values(
                state=events.SUPERSEDED,
                error=error,
                action=deliveries.c.action_masked,
                next_attempt_at=None,
                parked_until=None,
                updated_at=now,
            )
        ).rowcount
        if done:
            conn.execute(
                delivery_events.insert().values(
                    request_id=row.request_id,
                    alarm_id=row.alarm_id,
                    action=row.action_masked,
                    scheme=row.scheme,
                    outcome=events.SUPERSEDED,
                    attempt=row.attempts,
                    error=error,
                    timestamp=now,
                )
            )
            LOG.info(
                "Alarm %s: delivery %s to %s superseded by a newer transition (it was "
                "waiting for a retry in %s)",
                masking.escape_control(row.alarm_id),
                row.request_id,
                masking.escape_control(row.action_masked),
                row.owner,
            )
        return bool(done)

    def newest(self, records: Sequence[Record]) -> dict[tuple[str, str], datetime.datetime]:
        """For the key of each record, when its newest delivery was accepted."""
        alarm_ids = sorted({r.alarm_id for r in records})
        found: dict[tuple[str, str], datetime.datetime] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(alarm_ids), 500):
                rows = conn.execute(
                    sa.select(
                        deliveries.c.alarm_id,
                        deliveries.c.action_key,
                        sa.func.max(deliveries.c.created_at),
                    )
                    .where(deliveries.c.alarm_id.in_(alarm_ids[start : start + 500]))
                    .where(deliveries.c.state != events.DROPPED)
                    .group_by(deliveries.c.alarm_id, deliveries.c.action_key)
                )
                for alarm_id, key, newest in rows:
                    found[(alarm_id, key)] = aware(newest)
        return found
