"""The journal: every delivery and every attempt, in a SQL database.

A delivery is written before its first attempt and updated by each of its
events, so a service that stops (SIGTERM, a crash, ``kill -9``) finds on its
next start what was still pending or waiting for a retry and resumes it. A
delivery is owned by the ``host`` that accepted it: instances sharing one
database never resume each other's work.

Credentials at rest: once a delivery is delivered, superseded or dropped,
its row keeps only the masked action; a failed one keeps the action as it
came (``replay`` needs it) until it is replayed or purged.

The column sizes below are the limits intake enforces (``ALARM_ID_LENGTH``,
``SCHEME_LENGTH``): no value that passed validation can fail a write.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from oslo_log import log

from ceilo_notifier import events

LOG = log.getLogger(__name__)

PENDING = "pending"
OPEN_STATES = (PENDING, events.RETRYING)
# States whose row no longer needs the action's credentials.
SETTLED_STATES = (events.DELIVERED, events.SUPERSEDED, events.DROPPED)

ALARM_ID_LENGTH = 255
SCHEME_LENGTH = 64

metadata = sa.MetaData()

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("alarm_id", sa.String(ALARM_ID_LENGTH), nullable=False, index=True),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("action_masked", sa.Text, nullable=False),
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


_UPDATE_FROM_EVENT = (
    deliveries.update()
    .where(deliveries.c.request_id == sa.bindparam("rid"))
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


class JournalDown(Exception):
    """The database cannot be reached (as opposed to a value it refuses)."""


def is_outage(exc: BaseException) -> bool:
    """True for a lost or refused connection, false for a statement the database refused."""
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)) or bool(
        getattr(exc, "connection_invalidated", False)
    )


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _aware(value: datetime.datetime | None) -> datetime.datetime | None:
    """SQLite hands back naive datetimes; everything here is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=datetime.timezone.utc)
    return value


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

    @classmethod
    def from_row(cls, row: sa.Row) -> Record:
        data = dict(row._mapping)
        data["notification"] = json.loads(data["notification"])
        for key in ("created_at", "updated_at", "next_attempt_at", "parked_until"):
            data[key] = _aware(data[key])
        return cls(**data)


def make_engine(url: str, timeout: float = 10.0) -> sa.Engine:
    """An engine tuned for many small transactions from many threads.

    ``timeout`` bounds connecting and each statement on PostgreSQL, so that
    a dead database costs a thread an error, not a hang.
    """
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    connect_args: dict[str, Any] = {}
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        options = parsed.query.get("options", "")
        if isinstance(options, tuple):
            options = " ".join(options)
        connect_args = {
            "connect_timeout": max(1, int(timeout)),
            "options": f"{options} -c statement_timeout={int(timeout * 1000)}".strip(),
        }
    return sa.create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        pool_timeout=timeout,
        connect_args=connect_args,
    )


class Journal:
    def __init__(self, url: str, owner: str, timeout: float = 10.0) -> None:
        self.url = url
        self.owner = owner
        self.engine = make_engine(url, timeout)
        self._group_commit = GroupCommit(self._insert)

    # -- writes from the engine and the database event dispatcher ----------

    def record_new(self, rows: Sequence[dict[str, Any]]) -> list[datetime.datetime]:
        """Write deliveries before their first attempt, all in one transaction;
        when each was accepted (its ``created_at``)."""
        if not rows:
            return []
        now = utcnow()
        # One microsecond apart, in order: transitions accepted together keep
        # their order for resuming and supersession.
        values = [
            {
                **row,
                "notification": json.dumps(row["notification"]),
                "state": PENDING,
                "attempts": row.get("attempts", 0),
                "owner": self.owner,
                "created_at": now + datetime.timedelta(microseconds=i),
                "updated_at": now,
            }
            for i, row in enumerate(rows)
        ]
        self._group_commit.write(values)
        return [value["created_at"] for value in values]

    def _insert(self, values: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(deliveries.insert(), values)

    def record_events(self, batch: Iterable[events.DeliveryEvent]) -> None:
        """Append events and move their deliveries on, in one transaction.

        Both statements run as executemany, in event order, so a delivery that
        appears twice in a batch ends in its latest state.
        """
        batch = list(batch)
        if not batch:
            return
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
                "timestamp": e.timestamp,
            }
            for e in batch
        ]
        updates = [
            {
                "rid": e.request_id,
                "state": e.outcome,
                "settled": e.outcome in SETTLED_STATES,
                "attempts": e.attempt,
                "status_code": e.status_code,
                "error": e.error,
                "updated_at": e.timestamp,
                "next_attempt_at": None
                if e.next_attempt_in is None
                else e.timestamp + datetime.timedelta(seconds=e.next_attempt_in),
            }
            for e in batch
            if e.request_id is not None
        ]
        with self.engine.begin() as conn:
            if updates:
                conn.execute(_UPDATE_FROM_EVENT, updates)
            conn.execute(delivery_events.insert(), rows)

    # -- resuming ---------------------------------------------------------------

    def claim_open(self, host: str, launch: str) -> list[Record]:
        """Take over this host's unfinished deliveries left by an earlier launch,
        or by a worker of this launch that died (the parent started this one
        in its place).

        Rows of live sibling workers are left alone. Each row is claimed with
        a conditional update, so of several workers starting together exactly
        one resumes it.
        """

        def orphaned(owner: str) -> bool:
            if not owner.startswith(f"{host}/"):
                return False
            if not owner.startswith(f"{host}/{launch}/"):
                return True
            pid = owner.rsplit("/", 1)[1]
            return pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid))

        with self.engine.connect() as conn:
            candidates = [
                row
                for row in conn.execute(
                    sa.select(deliveries)
                    .where(deliveries.c.state.in_(OPEN_STATES))
                    .where(deliveries.c.owner.like(f"{host}/%"))
                    .order_by(deliveries.c.created_at)
                )
                if orphaned(row.owner)
            ]
        return self._claim_rows(candidates)

    def _claim_rows(self, rows: Iterable[sa.Row]) -> list[Record]:
        """Make rows this owner's, each by a conditional update: one claimant wins each."""
        claimed = []
        for row in rows:
            with self.engine.begin() as conn:
                done = conn.execute(
                    deliveries.update()
                    .where(deliveries.c.request_id == row.request_id)
                    .where(deliveries.c.owner == row.owner)
                    .where(deliveries.c.state.in_(OPEN_STATES))
                    .values(owner=self.owner)
                ).rowcount
            if done:
                claimed.append(Record.from_row(row))
        return claimed

    # -- retries waiting out of memory -------------------------------------------

    def park(self, parked: Sequence[tuple[str, datetime.datetime]]) -> None:
        """Mark open deliveries (request id, when due) as waiting for a retry out of memory.

        Only this column says so, and only ``unpark`` clears it: an event
        written late (the event writer lags behind the engine) cannot make a
        parked delivery look in memory, nor the reverse.
        """
        if not parked:
            return
        with self.engine.begin() as conn:
            conn.execute(
                deliveries.update()
                .where(deliveries.c.request_id == sa.bindparam("rid"))
                .where(sa.or_(*(deliveries.c.state == state for state in OPEN_STATES)))
                .values(parked_until=sa.bindparam("due"), next_attempt_at=sa.bindparam("due")),
                [{"rid": rid, "due": due} for rid, due in parked],
            )

    def unpark(self, request_ids: Iterable[str]) -> set[str]:
        """Take parked deliveries back into memory; those this call won (one claimant each)."""
        won = set()
        with self.engine.begin() as conn:
            for rid in request_ids:
                if conn.execute(
                    deliveries.update()
                    .where(deliveries.c.request_id == rid)
                    .where(deliveries.c.parked_until.is_not(None))
                    .values(parked_until=None)
                ).rowcount:
                    won.add(rid)
        return won

    def parked_due(self, until: datetime.datetime, limit: int) -> list[Record]:
        """This owner's open deliveries parked until ``until`` or earlier, soonest first."""
        return self._parked(
            deliveries.c.parked_until <= until, order=deliveries.c.parked_until, limit=limit
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

    def turn(self, request_id: str) -> str:
        """Whether this delivery may go now, as far as other processes sharing the
        journal know: ``superseded`` when a newer transition of its alarm reached
        its action since, ``wait`` while an older one is still open, else ``go``.
        """
        this = deliveries.alias("this")
        other = deliveries.alias("other")
        same = (
            sa.select(other.c.request_id)
            .select_from(this.join(other, other.c.alarm_id == this.c.alarm_id))
            .where(this.c.request_id == request_id)
            .where(other.c.action_masked == this.c.action_masked)
            .where(other.c.request_id != this.c.request_id)
            .limit(1)
        )
        newer = same.where(other.c.created_at > this.c.created_at).where(
            other.c.state != events.DROPPED
        )
        older = same.where(other.c.created_at < this.c.created_at).where(
            other.c.state.in_(OPEN_STATES)
        )
        with self.engine.connect() as conn:
            if conn.execute(newer).first() is not None:
                return "superseded"
            if conn.execute(older).first() is not None:
                return "wait"
        return "go"

    def live_owners(self, lease: float) -> int:
        """How many processes heartbeat in this journal (this one included)."""
        cutoff = utcnow() - datetime.timedelta(seconds=lease)
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).where(instances.c.heartbeat_at >= cutoff)
            ).scalar_one()

    # -- heartbeats and takeover ----------------------------------------------

    def heartbeat(self, host: str) -> None:
        """Say that this owner (a worker of ``host``) is alive."""
        now = utcnow()
        with self.engine.begin() as conn:
            done = conn.execute(
                instances.update().where(instances.c.owner == self.owner).values(heartbeat_at=now)
            ).rowcount
            if not done:
                conn.execute(
                    instances.insert().values(owner=self.owner, host=host, heartbeat_at=now)
                )

    def silent_hosts(self, me: str, lease: float) -> dict[str, datetime.datetime | None]:
        """Hosts other than ``me`` with open deliveries and no heartbeat for ``lease`` s."""
        cutoff = utcnow() - datetime.timedelta(seconds=lease)
        with self.engine.connect() as conn:
            owners = conn.execute(
                sa.select(deliveries.c.owner, sa.func.max(deliveries.c.updated_at))
                .where(deliveries.c.state.in_(OPEN_STATES))
                .group_by(deliveries.c.owner)
            ).all()
            beats = dict(
                conn.execute(
                    sa.select(instances.c.host, sa.func.max(instances.c.heartbeat_at)).group_by(
                        instances.c.host
                    )
                ).all()
            )
        silent: dict[str, datetime.datetime | None] = {}
        for owner, updated in owners:
            host = owner.split("/", 1)[0]
            if host == me:
                continue
            seen = _aware(beats.get(host)) or _aware(updated)
            if seen is None or seen < cutoff:
                silent[host] = seen
        return silent

    def take_over(self, host: str) -> list[Record]:
        """Claim the open deliveries of a silent host."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(deliveries)
                .where(deliveries.c.state.in_(OPEN_STATES))
                .where(deliveries.c.owner.like(f"{host}/%"))
                .order_by(deliveries.c.created_at)
            ).all()
        return self._claim_rows(rows)

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
                    .values(owner=self.owner, state=PENDING, updated_at=utcnow(), parked_until=None)
                ).rowcount
            if won:
                claimed.append(Record.from_row(row))
        return claimed

    def get(self, request_ids: Sequence[str]) -> list[Record]:
        """The deliveries with these request ids, wherever they are in the table."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(deliveries).where(deliveries.c.request_id.in_(list(request_ids)))
            )
            return [Record.from_row(r) for r in rows]

    def newest(self, records: Sequence[Record]) -> dict[tuple[str, str], datetime.datetime]:
        """For the (alarm, masked action) of each record, when its newest delivery was accepted.

        Masked actions are compared, since settled rows keep only those.
        """
        alarm_ids = sorted({r.alarm_id for r in records})
        found: dict[tuple[str, str], datetime.datetime] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(alarm_ids), 500):
                rows = conn.execute(
                    sa.select(
                        deliveries.c.alarm_id,
                        deliveries.c.action_masked,
                        sa.func.max(deliveries.c.created_at),
                    )
                    .where(deliveries.c.alarm_id.in_(alarm_ids[start : start + 500]))
                    .where(deliveries.c.state != events.DROPPED)
                    .group_by(deliveries.c.alarm_id, deliveries.c.action_masked)
                )
                for alarm_id, action, newest in rows:
                    found[(alarm_id, action)] = _aware(newest)
        return found

    # -- reading and housekeeping ---------------------------------------------

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
        return count, _aware(oldest)

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

    def close(self) -> None:
        self.engine.dispose()


def _alive(pid: int) -> bool:
    """Whether a process of this machine still runs (workers share the host's pids)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_launch() -> str:
    """Tag of one start of the service, shared by all its workers."""
    return uuid.uuid4().hex[:12]


def owner_tag(host: str, launch: str) -> str:
    """Owner of a delivery: the host, the launch, the worker process."""
    return f"{host}/{launch}/{os.getpid()}"


# Alembic's bookkeeping table of the journal. Not Alembic's default name:
# the journal may share a database with aodh (an aodh.conf as it is), whose
# own migrations keep their revision in "alembic_version".
VERSION_TABLE = "ceilo_notifier_alembic_version"
_OWN_REVISIONS = ("0001", "0002", "0003")


def _adopt_old_version_table(conn: sa.engine.Connection) -> None:
    """Journals made before VERSION_TABLE kept their revision in "alembic_version"."""
    tables = set(sa.inspect(conn).get_table_names())
    if VERSION_TABLE in tables or "alembic_version" not in tables or "deliveries" not in tables:
        return
    old = sa.table("alembic_version", sa.column("version_num", sa.String))
    revisions = [row[0] for row in conn.execute(sa.select(old.c.version_num))]
    if not revisions or not all(r in _OWN_REVISIONS for r in revisions):
        return  # someone else's
    new = sa.Table(
        VERSION_TABLE, sa.MetaData(), sa.Column("version_num", sa.String(32), primary_key=True)
    )
    new.create(conn)
    conn.execute(new.insert(), [{"version_num": r} for r in revisions])
    conn.execute(sa.text("DROP TABLE alembic_version"))


def upgrade(url: str) -> None:
    """Create or migrate the journal's schema to the newest revision (Alembic)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "ceilo_notifier:migrations")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _adopt_old_version_table(conn)
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    finally:
        engine.dispose()
