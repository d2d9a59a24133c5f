"""Reading the journal (the CLI, health, intake's duplicate check) and keeping it small."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from ceilo_notifier.journal.schema import OPEN_STATES, Record, aware, deliveries, delivery_events


class Queries:
    def find(
        self,
        alarm_id: str | None = None,
        states: Sequence[str] | None = None,
        since: datetime.datetime | None = None,
        until: datetime.datetime | None = None,
        limit: int | None = None,
    ) -> list[Record]:
        query = sa.select(deliveries).order_by(deliveries.c.created_at.desc())
        if alarm_id:
            query = query.where(deliveries.c.alarm_id == alarm_id)
        if states:
            query = query.where(deliveries.c.state.in_(list(states)))
        if since:
            query = query.where(deliveries.c.created_at >= since)
        if until:
            query = query.where(deliveries.c.created_at < until)
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [Record.from_row(r) for r in conn.execute(query)]

    def get(self, request_ids: Sequence[str]) -> list[Record]:
        """The deliveries with these request ids, wherever they are in the table."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(deliveries).where(deliveries.c.request_id.in_(list(request_ids)))
            )
            return [Record.from_row(r) for r in rows]

    def journaled(self, request_ids: Iterable[str]) -> set[str]:
        """Those of ``request_ids`` the journal already holds."""
        ids = list(request_ids)
        if not ids:
            return set()
        query = sa.select(deliveries.c.request_id).where(deliveries.c.request_id.in_(ids))
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def events_of(self, request_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(delivery_events)
                .where(delivery_events.c.request_id == request_id)
                .order_by(delivery_events.c.id)
            )
            return [dict(r._mapping) for r in rows]

    def backlog(self) -> tuple[int, datetime.datetime | None]:
        """Open deliveries, and when the oldest of them was accepted."""
        with self.engine.connect() as conn:
            count, oldest = conn.execute(
                sa.select(sa.func.count(), sa.func.min(deliveries.c.created_at)).where(
                    deliveries.c.state.in_(OPEN_STATES)
                )
            ).one()
        return count, aware(oldest)

    def purge(self, before: datetime.datetime) -> int:
        """Delete finished deliveries (and their events) last updated before ``before``."""
        with self.engine.begin() as conn:
            old = (
                sa.select(deliveries.c.request_id)
                .where(deliveries.c.state.not_in(OPEN_STATES))
                .where(deliveries.c.updated_at < before)
            )
            conn.execute(delivery_events.delete().where(delivery_events.c.request_id.in_(old)))
            conn.execute(
                delivery_events.delete()
                .where(delivery_events.c.request_id.is_(None))
                .where(delivery_events.c.timestamp < before)
            )
            return conn.execute(
                deliveries.delete().where(deliveries.c.request_id.in_(old))
            ).rowcount

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
