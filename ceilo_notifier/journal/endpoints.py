"""Endpoint health shared through the journal: who holds which endpoint, and why.

Every process keeps its endpoints' states in memory (``ceilo_notifier.endpoints``)
and asks nothing of the journal per delivery. It writes a row here when an
endpoint it judged changes state, and reads the rows others changed every
``[endpoint_health] sync_seconds``: the newest change (``changed_at``, in the
journal's clock) wins. Two rules need the database itself:

* **one probe**: an open endpoint whose time is up is probed by the process
  whose conditional update turns it ``half_open`` (``claim_probe``); a probe
  whose prober went silent is claimed again after ``stale``;
* **held rows**: a delivery held for its endpoint is parked with its
  ``endpoint``, so that closing or resuming the endpoint makes all of them
  due at once (``release_held``), each owner then reading its own back.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable

import sqlalchemy as sa

from ceilo_notifier.journal.schema import OPEN_STATES, Record, aware, deliveries, endpoint_states

CLOSED, OPEN, HALF_OPEN, PAUSED = "closed", "open", "half_open", "paused"


@dataclasses.dataclass
class EndpointRow:
    endpoint: str
    state: str
    failures: int
    since: datetime.datetime
    until: datetime.datetime | None
    open_for: float
    reason: str | None
    changed_at: datetime.datetime
    changed_by: str

    @classmethod
    def from_row(cls, row: sa.Row) -> EndpointRow:
        data = dict(row._mapping)
        for key in ("since", "until", "changed_at"):
            data[key] = aware(data[key])
        return cls(**data)


class EndpointStates:
    def save_endpoint(self, row: EndpointRow, operator: bool = False) -> bool:
        """Write an endpoint's state, unless a newer change of it is there already;
        whether it was written. Only an operator's change (``operator``) replaces
        a pause: a process's own judgement never ends one."""
        values = dataclasses.asdict(row)
        newer = sa.and_(
            endpoint_states.c.endpoint == row.endpoint,
            endpoint_states.c.changed_at < row.changed_at,
        )
        if not operator:
            newer = sa.and_(newer, endpoint_states.c.state != PAUSED)
        with self.engine.begin() as conn:
            if conn.execute(endpoint_states.update().where(newer).values(values)).rowcount:
                return True
            exists = conn.execute(
                sa.select(endpoint_states.c.endpoint).where(
                    endpoint_states.c.endpoint == row.endpoint
                )
            ).first()
            if exists is None:
                conn.execute(endpoint_states.insert().values(values))
                return True
            return False

    def endpoint_states(
        self, changed_after: datetime.datetime | None = None, max_age: float | None = None
    ) -> list[EndpointRow]:
        """Rows changed after a time; without it, the held ones (not closed) that may
        still hold a delivery (paused, or open less than ``max_age`` ago)."""
        query = sa.select(endpoint_states)
        if changed_after is None:
            query = query.where(endpoint_states.c.state != CLOSED)
            if max_age is not None:
                recent = self.clock.now() - datetime.timedelta(seconds=max_age)
                query = query.where(
                    sa.or_(
                        endpoint_states.c.state == PAUSED,
                        endpoint_states.c.until.is_(None),
                        endpoint_states.c.until > recent,
                    )
                )
        else:
            query = query.where(endpoint_states.c.changed_at > changed_after)
        with self.engine.connect() as conn:
            return [EndpointRow.from_row(r) for r in conn.execute(query)]

    def endpoint_list(self, states: Iterable[str] | None = None) -> list[EndpointRow]:
        query = sa.select(endpoint_states).order_by(endpoint_states.c.endpoint)
        if states is not None:
            query = query.where(endpoint_states.c.state.in_(list(states)))
        with self.engine.connect() as conn:
            return [EndpointRow.from_row(r) for r in conn.execute(query)]

    def claim_probe(self, endpoint: str, stale: float) -> tuple[bool, EndpointRow | None]:
        """Turn an open endpoint whose time is up (or a probe gone silent for ``stale``
        seconds) ``half_open`` for this process: whether this call won, and the row
        as it is now. An endpoint without a row is this process's to probe."""
        now = self.clock.now()
        due = sa.or_(
            sa.and_(endpoint_states.c.state == OPEN, endpoint_states.c.until <= now),
            sa.and_(
                endpoint_states.c.state == HALF_OPEN,
                endpoint_states.c.changed_at <= now - datetime.timedelta(seconds=stale),
            ),
        )
        with self.engine.begin() as conn:
            won = conn.execute(
                endpoint_states.update()
                .where(endpoint_states.c.endpoint == endpoint)
                .where(due)
                .values(state=HALF_OPEN, since=now, changed_at=now, changed_by=self.owner)
            ).rowcount
            if not won:
                current = conn.execute(
                    sa.select(endpoint_states).where(endpoint_states.c.endpoint == endpoint)
                ).first()
                if current is not None:
                    return False, EndpointRow.from_row(current)
                # Its opening was never written (the journal was down then).
                conn.execute(
                    endpoint_states.insert().values(
                        endpoint=endpoint,
                        state=HALF_OPEN,
                        failures=0,
                        since=now,
                        open_for=0.0,
                        reason="probing",
                        changed_at=now,
                        changed_by=self.owner,
                    )
                )
            row = conn.execute(
                sa.select(endpoint_states).where(endpoint_states.c.endpoint == endpoint)
            ).one()
            return True, EndpointRow.from_row(row)

    def release_held(self, endpoint: str, everyone: bool = False) -> int:
        """Make the deliveries parked for an endpoint due now (this owner's, or all)."""
        query = (
            deliveries.update()
            .where(deliveries.c.endpoint == endpoint)
            .where(deliveries.c.parked_until.is_not(None))
            .where(deliveries.c.state.in_(OPEN_STATES))
        )
        if not everyone:
            query = query.where(deliveries.c.owner == self.owner)
        now = self.clock.now()
        with self.engine.begin() as conn:
            return conn.execute(query.values(parked_until=now, next_attempt_at=now)).rowcount

    def held_oldest(self, endpoint: str, limit: int = 1) -> list[Record]:
        """This owner's oldest deliveries parked for an endpoint: the probe's candidates."""
        query = (
            sa.select(deliveries)
            .where(deliveries.c.endpoint == endpoint)
            .where(deliveries.c.parked_until.is_not(None))
            .where(deliveries.c.owner == self.owner)
            .where(deliveries.c.state.in_(OPEN_STATES))
            .order_by(deliveries.c.created_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [Record.from_row(r) for r in conn.execute(query)]

    def purge_endpoints(self, before: datetime.datetime) -> int:
        """Forget endpoints closed, or open with no probe due, since before ``before``
        (no delivery can be held for them any more); never a pause."""
        with self.engine.begin() as conn:
            return conn.execute(
                endpoint_states.delete()
                .where(endpoint_states.c.state != PAUSED)
                .where(endpoint_states.c.changed_at < before)
                .where(sa.or_(endpoint_states.c.until.is_(None), endpoint_states.c.until < before))
            ).rowcount

    def waiting_for(self, endpoints: Iterable[str]) -> dict[str, int]:
        """Deliveries of all owners parked for each endpoint."""
        names = sorted(set(endpoints))
        if not names:
            return {}
        query = (
            sa.select(deliveries.c.endpoint, sa.func.count())
            .where(deliveries.c.endpoint.in_(names))
            .where(deliveries.c.parked_until.is_not(None))
            .where(deliveries.c.state.in_(OPEN_STATES))
            .group_by(deliveries.c.endpoint)
        )
        with self.engine.connect() as conn:
            return dict(conn.execute(query).all())
