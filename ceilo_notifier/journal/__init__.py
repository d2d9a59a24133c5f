"""The journal: every delivery and every attempt, in a SQL database.

A delivery is written before its first attempt and updated by each of its
events, so a service that stops (SIGTERM, a crash, ``kill -9``) finds on its
next start what was still pending or waiting for a retry and resumes it, and
instances sharing one database share the work without doing it twice.

The invariants, each kept by one module of this package:

**Who owns a row** (``ownership``). The process that journaled it: its
``owner`` is host/launch/pid. Ownership moves only by an update conditional
on the current owner — to a later launch of the same host at its start, to
any live process once the owner's lease ran out, to a replay — so exactly one
claimant wins a row. A claimant that cannot resume a row gives it back.

**Who may change a row** (``writing``, ``parking``, ``ordering``). Only its
owner, and only while the row is open: every update carries ``owner = me``
and an open state. A process cut off from the database that comes back after
its rows were taken over changes nothing; its next turn says ``lost`` and it
stops that delivery. The single exception is supersession: any process may
supersede an older row of the same key *that is waiting* (not in flight), by
an update conditional on it still waiting, and its owner respects that.

**Which clock counts** (``clock``). The database server's. Heartbeats are
written and leases judged with the server's time read in the same
connection, so no host's skew or clock step makes a live host look dead.
``created_at`` (the order of transitions) and due times use the local clock
corrected by the offset measured at each heartbeat, so a constant skew
cannot reorder transitions (a local clock step can, until the next beat).

**What is one action** (``ordering``). ``(alarm_id, action_key)``: a keyed
hash of the action as written, which tells apart what the receiver tells
apart (two passwords, two API keys) without keeping the credential at rest;
a fanout copy's key is its host's own.

**Which endpoints are held** (``endpoints``). The newest change of an
endpoint's state wins; one process probes an open endpoint, by a
conditional update; held deliveries are parked with their endpoint.

**What is an outage** (``outages``). Anything but a value refused by the
database. During an outage nothing is acknowledged and the write is retried;
a turn that cannot be asked means wait (a stale send is worse than a late
one). A refused value costs only itself, with one log line.

Credentials at rest: once a delivery is delivered, superseded or dropped,
its row keeps only the masked action; a failed one keeps the action as it
came (``replay`` needs it) until it is replayed or purged.
"""

from __future__ import annotations

import os
import uuid

from ceilo_notifier.journal.clock import Clock, utcnow
from ceilo_notifier.journal.connection import (
    VERSION_TABLE,
    make_engine,
    pool_size_for,
    upgrade,
)
from ceilo_notifier.journal.endpoints import EndpointRow, EndpointStates
from ceilo_notifier.journal.ordering import GO, LOST, SUPERSEDED, WAIT, Ordering
from ceilo_notifier.journal.outages import JournalDown, is_outage, is_refusal
from ceilo_notifier.journal.ownership import Lease, Ownership
from ceilo_notifier.journal.parking import Parking
from ceilo_notifier.journal.queries import Queries
from ceilo_notifier.journal.schema import (
    ALARM_ID_LENGTH,
    OPEN_STATES,
    PENDING,
    SCHEME_LENGTH,
    SETTLED_STATES,
    Record,
    deliveries,
    delivery_events,
    instances,
    journal_keys,
    metadata,
)
from ceilo_notifier.journal.writing import GroupCommit, Writer

__all__ = [
    "ALARM_ID_LENGTH",
    "GO",
    "LOST",
    "OPEN_STATES",
    "PENDING",
    "SCHEME_LENGTH",
    "SETTLED_STATES",
    "SUPERSEDED",
    "VERSION_TABLE",
    "WAIT",
    "Clock",
    "EndpointRow",
    "GroupCommit",
    "Journal",
    "JournalDown",
    "Lease",
    "Record",
    "deliveries",
    "delivery_events",
    "instances",
    "is_outage",
    "is_refusal",
    "journal_keys",
    "make_engine",
    "metadata",
    "new_launch",
    "owner_tag",
    "pool_size_for",
    "upgrade",
    "utcnow",
]


class Journal(Writer, Ownership, Ordering, Parking, EndpointStates, Queries):
    """One process's view of the journal: its owner tag, its connections, its clock.

    Each base class is one job, in a module of its own, with its invariant
    in that module's docstring.
    """

    def __init__(
        self,
        url: str,
        owner: str,
        timeout: float = 10.0,
        pool_size: int = 5,
        max_overflow: int = 10,
    ) -> None:
        self.url = url
        self.owner = owner
        self.engine = make_engine(url, timeout, pool_size, max_overflow)
        self.clock = Clock()
        self._group_commit = GroupCommit(self._insert)

    def close(self) -> None:
        self.engine.dispose()


def new_launch() -> str:
    """Tag of one start of the service, shared by all its workers."""
    return uuid.uuid4().hex[:12]


def owner_tag(host: str, launch: str) -> str:
    """Owner of a delivery: the host, the launch, the worker process."""
    return f"{host}/{launch}/{os.getpid()}"
