"""Stage 3b: endpoint health — hold the deliveries of a failing endpoint, probe, drain.

An *endpoint* is where a plugin's attempts go (``AlarmNotifier.endpoint``:
scheme, host and port). Between the scheduler, which gives a delivery its
slot, and the attempt, ``EndpointHealth.admit`` decides whether it may go:

* **closed** (healthy): it goes, once fewer than the endpoint's *limit* of
  attempts are in flight. The limit starts at ``[alarm]
  per_host_concurrency``; an answer 429, or none in time, cuts it to four
  fifths of the attempts that were in flight when that attempt was sent, and
  each answer adds half of one over the limit (additive increase,
  multiplicative decrease, as TCP does, but cut from the concurrency the receiver actually
  refused rather than halved per refusal, so that a burst of refusals
  converges at once instead of collapsing to one);
* **open** (``failure_threshold`` consecutive failures, or a ``Retry-After``
  on 429/503): nothing goes. Its deliveries are *held*: they wait like a
  retry (in the journal, parked with their endpoint, when there is one) but
  use up no attempt, keep their order per alarm and action, and a newer
  transition supersedes a held one as it does a waiting retry. When its
  time is up, one delivery (the oldest held) goes as the *probe*
  (**half_open**). An answer closes the endpoint: its held rows are made due
  at once and drain at the endpoint's limits; a failure opens it again for
  twice as long, up to ``max_open_seconds``;
* **paused** by an operator (``ceilo-notifier-manage endpoint-pause``):
  held until resumed, or until the pause's end.

A held delivery's retry age still runs, from its acceptance if it was never
attempted: one that cannot go before ``rest_notifier_retry_max_age`` fails
with the cause ``endpoint unavailable`` and is never sent later.

States live in memory, so the hot path asks nothing; processes sharing a
journal share them through it (``journal.endpoints``, ``EndpointSync``).
Each change is one WARNING line, never one per delivery. Endpoint names
are chosen by tenants: they appear in logs escaped, and metrics count
states only (``ceilo_notifier_endpoints{state}``).
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from oslo_config import cfg
from oslo_log import log

from ceilo_notifier import attempt, masking, metrics, pools
from ceilo_notifier.delivery import Delivery
from ceilo_notifier.journal import EndpointRow, Journal, utcnow
from ceilo_notifier.journal.endpoints import CLOSED, HALF_OPEN, OPEN, PAUSED

LOG = log.getLogger(__name__)

STATES = (CLOSED, OPEN, HALF_OPEN, PAUSED)
HELD_STATES = (OPEN, HALF_OPEN, PAUSED)
# An answer 429 or a timeout cuts the limit to this share of the attempts in
# flight when the refused one was sent.
DECREASE = 0.8
# Each answer adds this over the limit: one more at once after two rounds of
# answers, so that a receiver at its limit refuses about one attempt in eight.
GROWTH = 0.5
# Endpoints remembered at most; idle healthy ones are forgotten first.
MAX_CIRCUITS = 65536
# A held delivery asks again at least this far apart, and at most this far
# apart while its endpoint is paused (a resume is seen within sync_seconds,
# but a delivery read back just before that is held again).
MIN_HOLD = 0.05
PAUSE_RECHECK = 60.0
HALF_OPEN_RECHECK = 1.0


class Hold(NamedTuple):
    """Not now: ask again in ``delay`` seconds; or, ``expired``, fail with ``cause``."""

    delay: float
    cause: str
    expired: bool = False


class Circuit:
    """One endpoint's state, as this process knows it."""

    __slots__ = (
        "endpoint",
        "state",
        "failures",
        "since",
        "until",
        "open_for",
        "reason",
        "changed_at",
        "limit",
        "in_flight",
        "waiters",
        "probe",
        "timer",
    )

    def __init__(self, endpoint: str, limit: float) -> None:
        self.endpoint = endpoint
        self.state = CLOSED
        self.failures = 0
        self.since = 0.0
        self.until: float | None = None
        self.open_for = 0.0
        self.reason: str | None = None
        self.changed_at = 0.0
        self.limit = limit
        self.in_flight = 0
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self.probe: str | None = None  # request id of this process's probe
        self.timer: asyncio.TimerHandle | None = None


class Ticket:
    """A pass to attempt: handed back to ``done`` with the outcome."""

    __slots__ = ("circuit", "sent_at", "probe")

    def __init__(self, circuit: Circuit | None, sent_at: int = 0, probe: bool = False) -> None:
        self.circuit = circuit
        self.sent_at = sent_at
        self.probe = probe


FREE = Ticket(None)


def _when(timestamp: float | None) -> datetime.datetime | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)


def _stamp(when: datetime.datetime | None) -> float | None:
    return None if when is None else when.timestamp()


class EndpointHealth:
    """The endpoint stage; every method but ``load`` and ``merge_soon`` runs on the loop."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        loop: asyncio.AbstractEventLoop,
        journal: Journal | None = None,
        journal_pool: pools.BoundedPool | None = None,
        wake: Callable[[str], None] | None = None,
        shared: Callable[[], bool] = lambda: False,
    ) -> None:
        opts = conf.endpoint_health
        self.enabled = opts.enabled
        self.threshold = opts.failure_threshold
        self.open_seconds = opts.open_seconds
        self.max_open = max(opts.max_open_seconds, opts.open_seconds)
        self.sync_seconds = opts.sync_seconds
        self.per_host = float(conf.alarm.per_host_concurrency)
        self.max_age = conf.alarm.rest_notifier_retry_max_age
        # How long a probe may take, and after how long a silent prober's
        # claim is taken again.
        self.probe_wait = max(conf.alarm.rest_notifier_timeout, conf.alarm.plugin_timeout) + 1.0
        self.stale = 2 * self.probe_wait + self.sync_seconds
        self.loop = loop
        self.journal = journal
        self.pool = journal_pool
        self.wake = wake
        self.shared = shared
        self.owner = journal.owner if journal is not None else ""
        self._circuits: dict[str, Circuit] = {}
        self._counts = dict.fromkeys(HELD_STATES, 0)

    # -- the gate -------------------------------------------------------------

    async def admit(self, delivery: Delivery) -> Ticket | Hold:
        """A ticket to attempt now, or how long to hold the delivery."""
        endpoint = delivery.endpoint
        if not self.enabled or endpoint is None:
            return FREE
        while True:
            c = self._circuit(endpoint)
            now = self._now()
            if c.state == PAUSED and c.until is not None and now >= c.until:
                self._change(c, CLOSED, "the pause ended")
                continue
            if c.state == CLOSED:
                if c.in_flight < max(1, int(c.limit)):
                    c.in_flight += 1
                    return Ticket(c, c.in_flight)
                waiter = self.loop.create_future()
                c.waiters.append(waiter)
                try:
                    await waiter
                except asyncio.CancelledError:
                    if waiter in c.waiters:
                        c.waiters.remove(waiter)
                    raise
                continue
            if c.state == PAUSED:
                delay = PAUSE_RECHECK if c.until is None else min(PAUSE_RECHECK, c.until - now)
                return self._bounded(delivery, c, delay, now)
            probe_due = (c.state == OPEN and now >= (c.until or 0.0)) or (
                c.state == HALF_OPEN and c.probe is None and now - c.since >= self.stale
            )
            if probe_due and await self._claim(c, delivery):
                c.in_flight += 1
                return Ticket(c, c.in_flight, probe=True)
            if c.state == OPEN and now < (c.until or 0.0):
                # Held past the probe's answer (a journal's held rows are
                # released at once when it closes; one of them is the probe).
                extra = self.probe_wait if self.journal is not None else 0.0
                return self._bounded(delivery, c, c.until - now + extra, now)
            # A probe is in flight: its answer releases the journal's held rows;
            # without a journal, ask again shortly.
            wait = self.probe_wait if self.journal is not None else HALF_OPEN_RECHECK
            return self._bounded(delivery, c, wait, now)

    def done(self, ticket: Ticket, result: attempt.Outcome | None) -> None:
        """An attempt admitted by ``ticket`` ended with ``result`` (None: it did not run)."""
        c = ticket.circuit
        if c is None:
            return
        c.in_flight -= 1
        if result is None:
            if ticket.probe and c.state == HALF_OPEN:
                self._change(c, OPEN, "its probe did not run", until=self._now())
        else:
            self._judge(c, ticket, result)
        self._wake_waiters(c)
        self._forget_if_idle(c)

    def _judge(self, c: Circuit, ticket: Ticket, result: attempt.Outcome) -> None:
        health = result.health
        if result.retry_after is not None and result.status_code in (429, 503):
            if c.state != PAUSED:
                quiet = min(result.retry_after, self.max_open)
                until = self._now() + quiet
                if c.state != OPEN or (c.until or 0.0) < until:
                    self._change(
                        c,
                        OPEN,
                        f"it answered {result.status_code} with Retry-After: {quiet:g} s",
                        until=until,
                    )
            return
        if health == attempt.ANSWERED:
            c.failures = 0
            c.limit = min(self.per_host, c.limit + GROWTH / c.limit)
            if c.state in (OPEN, HALF_OPEN):
                self._change(c, CLOSED, "it answered")
            return
        if health == attempt.NEUTRAL:
            if ticket.probe and c.state == HALF_OPEN:
                self._change(c, OPEN, "its probe reached nothing", until=self._now())
            return
        if health == attempt.OVERLOADED:
            c.limit = max(1.0, min(c.limit, DECREASE * ticket.sent_at))
            # A 429 says "fewer at once"; only one refused alone says "down".
            if result.status_code == 429 and ticket.sent_at > 1:
                return
        c.failures += 1
        cause = result.error or "failed"
        if ticket.probe and c.state == HALF_OPEN:
            open_for = min(self.max_open, 2 * (c.open_for or self.open_seconds))
            self._change(c, OPEN, f"its probe failed: {cause}", open_for=open_for)
        elif c.state == CLOSED and c.failures >= self.threshold:
            self._change(
                c,
                OPEN,
                f"{c.failures} consecutive failures, the last: {cause}",
                open_for=self.open_seconds,
            )

    def _bounded(self, delivery: Delivery, c: Circuit, delay: float, now: float) -> Hold:
        """Hold for ``delay``, but not past the delivery's retry age: at its end, fail."""
        mono = time.monotonic()
        if delivery.first_attempt is None:
            # Never attempted: its age counts from its acceptance.
            accepted = delivery.accepted if delivery.accepted is not None else now
            delivery.first_attempt = mono - max(0.0, now - accepted)
        left = self.max_age - (mono - delivery.first_attempt)
        if left <= 0:
            since = _when(c.since)
            return Hold(
                0.0,
                f"endpoint unavailable: {self._name(c)} {c.state} since "
                f"{since:%Y-%m-%d %H:%M:%S}Z ({c.reason}); held past "
                f"rest_notifier_retry_max_age ({self.max_age:g} s)",
                expired=True,
            )
        return Hold(max(MIN_HOLD, min(delay, left)), f"endpoint {c.state}")

    async def _claim(self, c: Circuit, delivery: Delivery) -> bool:
        """Whether this delivery is the probe: the journal says so when it is shared."""
        now = self._now()
        if self.journal is not None and self.pool is not None and self.shared():
            try:
                row = await self.pool.run(self.journal.claim_probe, c.endpoint, self.stale)
            except Exception as exc:
                LOG.warning(
                    "Endpoint %s: could not claim its probe in the journal (%s)",
                    self._name(c),
                    _cause(exc),
                )
                return False
            if row is None:
                # Another process probes; hold until its answer is known.
                c.state, c.since, c.probe = HALF_OPEN, now, None
                self._recount()
                return False
            if c.state == CLOSED:  # closed meanwhile: no probe needed
                return False
            self._apply(c, row)
            c.probe = delivery.request_id
            self._log(c, f"probing with {delivery.request_id}")
            return True
        self._change(c, HALF_OPEN, f"probing with {delivery.request_id}")
        c.probe = delivery.request_id
        return True

    # -- state changes --------------------------------------------------------

    def _change(
        self,
        c: Circuit,
        state: str,
        reason: str,
        until: float | None = None,
        open_for: float | None = None,
    ) -> None:
        now = self._now()
        if open_for is not None:
            c.open_for = open_for
            until = now + open_for
        if state == CLOSED:
            c.failures, c.open_for, until = 0, 0.0, None
        if state != HALF_OPEN:
            c.probe = None
        c.state, c.since, c.until, c.reason = state, now, until, reason
        c.changed_at = now
        self._recount()
        self._log(c, reason)
        self._save(c)
        self._after_change(c)

    def _after_change(self, c: Circuit) -> None:
        if c.timer is not None:
            c.timer.cancel()
            c.timer = None
        if c.state == CLOSED:
            self._release(c)
            self._wake_waiters(c, everyone=True)
        elif c.state in (OPEN, PAUSED):
            self._wake_waiters(c, everyone=True)
            if c.state == OPEN and c.until is not None and self.wake is not None:
                c.timer = self.loop.call_later(
                    max(0.0, c.until - self._now()), self._probe_due, c.endpoint
                )

    def _probe_due(self, endpoint: str) -> None:
        """An open endpoint's time is up: bring its oldest held delivery back to probe."""
        c = self._circuits.get(endpoint)
        if c is not None and c.state == OPEN:
            c.timer = None
            self.wake(endpoint)

    def _release(self, c: Circuit) -> None:
        """Its held rows are due now (this process's; others release theirs on sync)."""
        if self.journal is None or self.pool is None:
            return
        released = self.pool.start(self.journal.release_held, c.endpoint)
        released.add_done_callback(lambda f: self._logged(f, c, "release its held deliveries"))

    def _save(self, c: Circuit) -> None:
        if self.journal is None or self.pool is None:
            return
        row = EndpointRow(
            endpoint=c.endpoint,
            state=c.state,
            failures=c.failures,
            since=_when(c.since),
            until=_when(c.until),
            open_for=c.open_for,
            reason=c.reason,
            changed_at=_when(c.changed_at),
            changed_by=self.owner,
        )
        saved = self.pool.start(self.journal.save_endpoint, row)
        saved.add_done_callback(lambda f: self._logged(f, c, "write its state"))

    def _logged(self, future: asyncio.Future, c: Circuit, what: str) -> None:
        exc = future.exception() if not future.cancelled() else None
        if exc is not None:
            LOG.warning(
                "Endpoint %s: could not %s in the journal (%s)", self._name(c), what, _cause(exc)
            )

    def _log(self, c: Circuit, reason: str) -> None:
        next_probe = ""
        if c.state == OPEN and c.until is not None:
            next_probe = f"; next probe in {max(0.0, c.until - self._now()):.0f} s"
        elif c.state == PAUSED:
            next_probe = "; until resumed" if c.until is None else f"; until {_when(c.until)}"
        LOG.warning(
            "Endpoint %s now %s: %s%s",
            self._name(c),
            c.state,
            masking.escape_control(masking.mask_text(reason)),
            next_probe,
        )

    # -- what other processes changed -----------------------------------------

    def merge(self, rows: Iterable[EndpointRow]) -> None:
        """Take the newer of each endpoint's rows that others wrote."""
        for row in rows:
            if row.changed_by == self.owner:
                continue
            c = self._circuit(row.endpoint)
            if (_stamp(row.changed_at) or 0.0) <= c.changed_at:
                continue
            held = c.state in HELD_STATES
            self._apply(c, row)
            LOG.info("Endpoint %s now %s (by %s)", self._name(c), c.state, row.changed_by)
            if held or c.state != CLOSED:
                self._after_change(c)
            self._forget_if_idle(c)

    def _apply(self, c: Circuit, row: EndpointRow) -> None:
        c.state, c.failures = row.state, row.failures
        c.since, c.until = _stamp(row.since) or 0.0, _stamp(row.until)
        c.open_for, c.reason = row.open_for, row.reason
        c.changed_at = _stamp(row.changed_at) or 0.0
        if c.state != HALF_OPEN:
            c.probe = None
        self._recount()

    def merge_soon(self, rows: list[EndpointRow]) -> None:
        """From another thread: merge on the loop."""
        if rows:
            self.loop.call_soon_threadsafe(self.merge, rows)

    # -- bookkeeping ------------------------------------------------------------

    def _circuit(self, endpoint: str) -> Circuit:
        c = self._circuits.get(endpoint)
        if c is None:
            if len(self._circuits) >= MAX_CIRCUITS:
                self._evict()
            c = self._circuits[endpoint] = Circuit(endpoint, self.per_host)
        return c

    def _idle(self, c: Circuit) -> bool:
        return (
            c.state == CLOSED
            and not c.in_flight
            and not c.waiters
            and not c.failures
            and c.limit >= self.per_host
        )

    def _forget_if_idle(self, c: Circuit) -> None:
        if self._idle(c) and self._circuits.get(c.endpoint) is c:
            del self._circuits[c.endpoint]

    def _evict(self) -> None:
        """Forget the oldest closed endpoint with nothing in flight (its lessons lost)."""
        for name, c in self._circuits.items():
            if c.state == CLOSED and not c.in_flight and not c.waiters:
                del self._circuits[name]
                return

    def _wake_waiters(self, c: Circuit, everyone: bool = False) -> None:
        room = len(c.waiters) if everyone else max(1, int(c.limit)) - c.in_flight
        while c.waiters and room > 0:
            waiter = c.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                room -= 1

    def _recount(self) -> None:
        counts = dict.fromkeys(HELD_STATES, 0)
        for c in self._circuits.values():
            if c.state in counts:
                counts[c.state] += 1
        for state, count in counts.items():
            if count != self._counts[state]:
                metrics.ENDPOINTS.labels(state).set(count)
        self._counts = counts

    def unavailable(self, endpoint: str | None) -> str | None:
        """Why a delivery to this endpoint could not go, if it is held now
        (read from any thread: a moment's view)."""
        c = self._circuits.get(endpoint) if endpoint is not None else None
        if c is None or c.state not in HELD_STATES:
            return None
        return f"endpoint unavailable: {self._name(c)} {c.state} ({c.reason})"

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def _now(self) -> float:
        return (self.journal.clock.now() if self.journal is not None else utcnow()).timestamp()

    @staticmethod
    def _name(c: Circuit) -> str:
        return masking.escape_control(c.endpoint)


class EndpointSync(pools.Periodic):
    """Reads the endpoint states other processes wrote, every ``sync_seconds``."""

    def __init__(self, health: EndpointHealth, journal: Journal) -> None:
        super().__init__("endpoint-sync", health.sync_seconds)
        self.health = health
        self.journal = journal
        self._seen: datetime.datetime | None = None
        self._failing = False

    def load(self) -> None:
        """At start, before anything is resumed: the endpoints held now."""
        self._read(None)

    def tick(self) -> None:
        # Rows committed late, or by a process whose clock runs behind, are
        # read again; merging skips what it knows.
        slack = datetime.timedelta(seconds=2 * self.interval + 1)
        self._read(self._seen - slack if self._seen is not None else None)

    def _read(self, since: datetime.datetime | None) -> None:
        try:
            rows = self.journal.endpoint_states(since)
        except Exception as exc:
            if not self._failing:
                LOG.warning("Could not read endpoint states from the journal (%s)", _cause(exc))
            self._failing = True
            return
        self._failing = False
        if self._seen is None:
            self._seen = self.journal.clock.now()
        for row in rows:
            if row.changed_at > self._seen:
                self._seen = row.changed_at
        self.health.merge_soon(rows)


def endpoint_of_url(url: str, plugins: dict) -> str | None:
    """The endpoint an action URL's plugin reports (for operators' commands)."""
    from urllib import parse

    from ceilo_notifier.delivery import endpoint_of

    split = parse.urlsplit(url.strip())
    plugin = plugins.get(split.scheme.lower())
    return None if plugin is None else endpoint_of(plugin, split)


def _cause(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]
