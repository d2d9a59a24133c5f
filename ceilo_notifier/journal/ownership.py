"""Who owns a delivery, for how long, and how another process takes it over.

A delivery belongs to the process that journaled it (``owner``: host,
launch, pid). Only its owner attempts it and changes its row; the others
read it. Ownership changes hands in three ways, each by an update
conditional on the row's current owner, so that of several claimants
exactly one wins:

* a later start of the same host claims what earlier launches left open
  (``claim_open``), at once if their process is gone from this machine,
  else once its lease ran out;
* any live process claims the open rows of an owner whose lease ran out
  (``silent_owners``, ``take_over``): it has not heartbeaten for
  ``owner_lease`` seconds of the database server's clock (``clock``), read
  in the same connection, which no host's own clock can skew or step;
* ``ceilo-notifier-manage replay`` claims failed rows to deliver them
  again (``claim``), and holds a lease while it does, like any owner.

A claimant that cannot resume what it claimed gives it back (``release``)
so that the next round claims it again, instead of leaving it with a live
owner that will never attempt it. Heartbeats run on a thread that does
nothing else (``Lease``): no wait for intake or for the database's other
work can let a live process's lease run out.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import time
from collections.abc import Callable, Iterable, Sequence

import sqlalchemy as sa
from oslo_log import log

from ceilo_notifier import pools
from ceilo_notifier.journal.schema import OPEN_STATES, PENDING, Record, aware, deliveries, instances

LOG = log.getLogger(__name__)


def _alive(pid: int) -> bool:
    """Whether a process of this machine still runs (workers share the host's pids)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ownership:
    """Heartbeats, leases, claims and takeovers."""

    def heartbeat(self, host: str) -> None:
        """Say that this owner (a process of ``host``) is alive, in the database's time."""
        with self.engine.begin() as conn:
            now = self.clock.server_now(conn)
            done = conn.execute(
                instances.update().where(instances.c.owner == self.owner).values(heartbeat_at=now)
            ).rowcount
            if not done:
                conn.execute(
                    instances.insert().values(owner=self.owner, host=host, heartbeat_at=now)
                )

    def leave(self) -> None:
        """Remove this owner's heartbeat (it stops)."""
        with self.engine.begin() as conn:
            conn.execute(instances.delete().where(instances.c.owner == self.owner))

    def live_owners(self, lease: float) -> int:
        """How many processes heartbeat in this journal (this one included)."""
        with self.engine.connect() as conn:
            cutoff = self.clock.server_now(conn) - datetime.timedelta(seconds=lease)
            return conn.execute(
                sa.select(sa.func.count()).where(instances.c.heartbeat_at >= cutoff)
            ).scalar_one()

    def silent_owners(self, lease: float) -> dict[str, datetime.datetime | None]:
        """Owners other than this one with open deliveries and no heartbeat for ``lease`` s,
        with when each was last heard of."""
        with self.engine.connect() as conn:
            cutoff = self.clock.server_now(conn) - datetime.timedelta(seconds=lease)
            owners = conn.execute(
                sa.select(deliveries.c.owner, sa.func.max(deliveries.c.updated_at))
                .where(deliveries.c.state.in_(OPEN_STATES))
                .where(deliveries.c.owner != self.owner)
                .group_by(deliveries.c.owner)
            ).all()
            if not owners:
                return {}
            beats = dict(
                conn.execute(
                    sa.select(instances.c.owner, instances.c.heartbeat_at).where(
                        instances.c.owner.in_([owner for owner, _ in owners])
                    )
                ).all()
            )
        silent: dict[str, datetime.datetime | None] = {}
        for owner, updated in owners:
            # An owner that never heartbeated (a journal older than leases):
            # its latest write stands for its last heartbeat.
            seen = aware(beats.get(owner)) or aware(updated)
            if seen is None or seen < cutoff:
                silent[owner] = seen
        return silent

    def take_over(self, owner: str) -> list[Record]:
        """Claim the open deliveries of a silent owner."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(deliveries)
                .where(deliveries.c.state.in_(OPEN_STATES))
                .where(deliveries.c.owner == owner)
                .order_by(deliveries.c.created_at)
            ).all()
        return self._claim_rows(rows)

    def release(self, records: Iterable[Record]) -> int:
        """Give claimed rows back to the owners they were claimed from; how many."""
        given = 0
        with self.engine.begin() as conn:
            for record in records:
                given += conn.execute(
                    deliveries.update()
                    .where(deliveries.c.request_id == record.request_id)
                    .where(deliveries.c.owner == self.owner)
                    .where(deliveries.c.state.in_(OPEN_STATES))
                    .values(owner=record.owner)
                ).rowcount
        return given

    def claim_open(self, host: str, launch: str, lease: float | None = None) -> list[Record]:
        """Take over this host's unfinished deliveries left by an earlier launch,
        or by a worker of this launch that died (the parent started this one
        in its place).

        A process of this machine that still runs keeps its rows: a live
        sibling worker always, any other (an earlier launch within its
        shutdown grace, a ``replay``) while its lease is fresh (``lease``
        seconds). Each row is claimed with a conditional update, so of
        several workers starting together exactly one resumes it.
        """
        launch_prefix = f"{host}/{launch}/"
        with self.engine.connect() as conn:
            rows = [
                row
                for row in conn.execute(
                    sa.select(deliveries)
                    .where(deliveries.c.state.in_(OPEN_STATES))
                    .where(deliveries.c.owner.startswith(f"{host}/", autoescape=True))
                    .where(deliveries.c.owner != self.owner)
                    .order_by(deliveries.c.created_at)
                )
                if row.owner.startswith(f"{host}/")
            ]
            owners = {row.owner for row in rows}
            beats = (
                dict(
                    conn.execute(
                        sa.select(instances.c.owner, instances.c.heartbeat_at).where(
                            instances.c.owner.in_(sorted(owners))
                        )
                    ).all()
                )
                if owners and lease is not None
                else {}
            )
            cutoff = (
                None
                if lease is None
                else self.clock.server_now(conn) - datetime.timedelta(seconds=lease)
            )

        def orphaned(owner: str) -> bool:
            pid = owner.rsplit("/", 1)[1]
            if owner.startswith(launch_prefix):  # a sibling worker: while it runs, its own
                return pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid))
            if not pid.isdigit() or int(pid) == os.getpid() or not _alive(int(pid)):
                return True
            beat = aware(beats.get(owner))
            return cutoff is None or beat is None or beat < cutoff

        orphans = {owner for owner in owners if orphaned(owner)}
        return self._claim_rows(row for row in rows if row.owner in orphans)

    def _claim_rows(self, rows: Iterable[sa.Row]) -> list[Record]:
        """Make rows this owner's, each by a conditional update: one claimant wins each.

        A row journaled by the previous release (no key yet) gets its key here,
        from the action it still holds (it is open), before anything orders it.
        """
        claimed = []
        for row in rows:
            key = row.action_key or self.action_key(row.action)
            with self.engine.begin() as conn:
                done = conn.execute(
                    deliveries.update()
                    .where(deliveries.c.request_id == row.request_id)
                    .where(deliveries.c.owner == row.owner)
                    .where(deliveries.c.state.in_(OPEN_STATES))
                    .values(owner=self.owner, action_key=key)
                ).rowcount
            if done:
                claimed.append(dataclasses.replace(Record.from_row(row), action_key=key))
        return claimed

    def claim(self, request_ids: Sequence[str], states: Sequence[str]) -> list[Record]:
        """Take deliveries in one of ``states`` (e.g. failed ones, to replay them)."""
        claimed = []
        for request_id in request_ids:
            with self.engine.begin() as conn:
                row = conn.execute(
                    sa.select(deliveries).where(deliveries.c.request_id == request_id)
                ).first()
                if row is None or row.state not in states:
                    continue
                # Conditional: of two replays racing for a row, one wins it.
                won = conn.execute(
                    deliveries.update()
                    .where(deliveries.c.request_id == request_id)
                    .where(deliveries.c.state == row.state)
                    .values(
                        owner=self.owner,
                        state=PENDING,
                        updated_at=self.clock.now(),
                        parked_until=None,
                    )
                ).rowcount
            if won:
                claimed.append(Record.from_row(row))
        return claimed


class Lease(pools.Periodic):
    """A thread that heartbeats for one owner, and nothing else.

    ``on_beat`` hears how many owners are live after each heartbeat; a beat
    that fails is retried at the next interval. ``fresh`` says whether the
    last heartbeat is recent enough that no other process can have taken
    this one's rows: once it is not, every attempt must ask the journal.
    """

    def __init__(
        self,
        journal,
        host: str,
        lease: float,
        on_beat: Callable[[int], None] = lambda _live: None,
        margin: float = 0.0,
    ) -> None:
        super().__init__("journal-lease", lease / 4)
        self.journal = journal
        self.host = host
        self.lease = lease
        # Fresh while an attempt started now (``margin``: the longest) ends
        # before anyone can take this owner's rows over, a beat interval to
        # spare: never borderline at the next beat, which would make every
        # attempt ask the journal for a moment.
        self.fresh_for = lease - lease / 4 - margin
        self.on_beat = on_beat
        self._last = float("-inf")
        self._failing = False

    @property
    def fresh(self) -> bool:
        return time.monotonic() - self._last < self.fresh_for

    def beat(self) -> None:
        """One heartbeat now (raises when the journal cannot take it)."""
        started = time.monotonic()
        self.journal.heartbeat(self.host)
        self._last = started
        self.on_beat(self.journal.live_owners(self.lease))

    def stop(self) -> None:
        """Stop heartbeating and leave the journal: what this owner left open is
        then anyone's to take over at once, not after the lease."""
        super().stop()
        try:
            self.journal.leave()
        except Exception as exc:
            LOG.warning("Could not remove this process's lease from the journal (%s)", exc)

    def tick(self) -> None:
        try:
            self.beat()
        except Exception as exc:
            if not self._failing:
                LOG.warning("Journal heartbeat failed (%s); trying again", exc)
            self._failing = True
            return
        if self._failing:
            LOG.warning("Journal heartbeat works again")
        self._failing = False
