"""Retries that wait out of memory: parked rows, read back by their owner when due.

Only ``parked_until`` says a row is parked, and only ``unpark`` clears it (or
``ordering`` when it supersedes the row): an event written late (the event
writer lags behind the engine) cannot make a parked delivery look in memory,
nor the reverse. Every change is fenced by the owner: a process parks and
reads back only its own rows.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from ceilo_notifier.journal.schema import OPEN_STATES, Record, deliveries


class Parking:
    def park(self, parked: Sequence[tuple[str, datetime.datetime]]) -> None:
        """Mark open deliveries (request id, when due) as waiting for a retry out of memory."""
        if not parked:
            return
        skew = self.clock.offset
        with self.engine.begin() as conn:
            conn.execute(
                deliveries.update()
                .where(deliveries.c.request_id == sa.bindparam("rid"))
                .where(deliveries.c.owner == self.owner)
                .where(sa.or_(*(deliveries.c.state == state for state in OPEN_STATES)))
                .values(parked_until=sa.bindparam("due"), next_attempt_at=sa.bindparam("due")),
                [{"rid": rid, "due": due + skew} for rid, due in parked],
            )

    def unpark(self, request_ids: Iterable[str]) -> set[str]:
        """Take parked deliveries back into memory; those this call won (one claimant each)."""
        won = set()
        with self.engine.begin() as conn:
            for rid in request_ids:
                if conn.execute(
                    deliveries.update()
                    .where(deliveries.c.request_id == rid)
                    .where(deliveries.c.owner == self.owner)
                    .where(deliveries.c.parked_until.is_not(None))
                    .values(parked_until=None)
                ).rowcount:
                    won.add(rid)
        return won

    def parked_due(self, until: datetime.datetime, limit: int) -> list[Record]:
        """This owner's open deliveries parked until ``until`` or earlier, soonest first."""
        return self._parked(
            deliveries.c.parked_until <= until + self.clock.offset,
            order=deliveries.c.parked_until,
            limit=limit,
        )

    def parked_count(self) -> int:
        """How many of this owner's deliveries wait for a retry out of memory."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count())
                .where(deliveries.c.parked_until.is_not(None))
                .where(deliveries.c.owner == self.owner)
                .where(deliveries.c.state.in_(OPEN_STATES))
            ).scalar_one()

    def parked_of(self, alarm_ids: Iterable[str]) -> list[Record]:
        """This owner's parked deliveries of these alarms."""
        return self._parked(deliveries.c.alarm_id.in_(sorted(set(alarm_ids))))

    def _parked(self, which, order=None, limit: int | None = None) -> list[Record]:
        query = (
            sa.select(deliveries)
            .where(which)
            .where(deliveries.c.parked_until.is_not(None))
            .where(deliveries.c.owner == self.owner)
            .where(deliveries.c.state.in_(OPEN_STATES))
        )
        if order is not None:
            query = query.order_by(order)
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [Record.from_row(r) for r in conn.execute(query)]
