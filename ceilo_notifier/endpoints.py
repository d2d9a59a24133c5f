"""Stage 3b: endpoint health — hold the deliveries of a failing endpoint, probe, drain.

An *endpoint* is where a plugin's attempts go (``AlarmNotifier.endpoint``:
scheme, host and port). Between the scheduler, which gives a delivery its
slot, and the attempt, ``EndpointHealth.admit`` decides whether it may go:

* **closed** (healthy): it goes, once fewer than the endpoint's *limit* of
  attempts are in flight. The limit starts at ``[alarm]
  per_host_concurrency``; an answer 429, or none in time, cuts it to four
  fifths of the attempts that were in flight when that attempt was sent;
  each answer adds half of one to it, and after ``open_seconds`` without a
  cut it doubles again. AIMD, as TCP does, but cut from the concurrency the
  receiver refused rather than halved per refusal: a burst of refusals sets
  the limit once instead of collapsing it to one;
* **open** (``failure_threshold`` consecutive failures, or a 503 with
  ``Retry-After``): nothing goes. Its deliveries are *held*: they wait like
  a retry (in the journal, parked with their endpoint, when there is one)
  but use up no attempt, keep their order per alarm and action, and a newer
  transition supersedes a held one as it does a waiting retry. When its
  time is up, one delivery (the oldest held) goes as the *probe*
  (**half_open**). An answer closes the endpoint: its held rows are made due
  at once and drain at the endpoint's limits; a failure opens it again for
  twice as long, up to ``max_open_seconds``;
* **paused** by an operator (``ceilo-notifier-manage endpoint-pause``):
  held until resumed, or until the pause's end. Only an operator ends a
  pause (``journal.endpoints``).

What one tenant can do to an endpoint others share (``hooks.slack.com``)
is bounded: a 429 says "fewer at once" (its ``Retry-After`` delays that
delivery only: Slack rate-limits each webhook), and counts as a failure
only when even one attempt at a time is refused; a tenant cannot make a
shared service answer 5xx or fail to connect.

A held delivery's retry age still runs, from its acceptance if it was never
attempted: one that cannot go before ``rest_notifier_retry_max_age`` fails
with the cause ``endpoint unavailable`` and is never sent later.

States live in memory, so the hot path asks nothing; processes sharing a
journal share them through it (``journal.endpoints``, ``EndpointSync``).
Each change is one WARNING line (a probe starting, INFO), never one per
delivery. Endpoint names
are chosen by tenants: they appear in logs escaped, and metrics count
states only (``ceilo_notifier_endpoints{state}``).
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
import math
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
# A held delivery asks again at least this far apart.
MIN_HOLD = 0.05
HALF_OPEN_RECHECK = 1.0
# A Retry-After shorter than this does not quiet the endpoint (one answering
# "Retry-After: 0" would make a state change of every request).
MIN_QUIET = 1.0


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
        "last_cut",
        "in_flight",
        "waiters",
        "probe",
        "held",
        "timer",
        "claim_failing",
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
        self.last_cut = 0.0
        self.in_flight = 0
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self.probe = False  # this process's probe is in flight
        self.held = False  # this process holds deliveries for it
        self.timer: asyncio.TimerHandle | None = None
        self.claim_failing = False


class Ticket:
    """A pass to attempt: handed back to ``done`` with the outcome."""

    __slots__ = ("circuit", "sent_at", "probe")

    def __init__(self, circuit: Circuit | None, sent_at: int = 0, probe: bool = False) -> None:
        self.circuit = circuit
        self.sent_at = sent_at
        self.probe = probe


FREE = Ticket(None)
# What a probe claim says: this delivery probes; hold it; look at the state again.
PROBE, HOLD, RECHECK = "probe", "hold", "recheck"


def _when(timestamp: float | None) -> datetime.datetime | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)


def _stamp(when: datetime.datetime | None) -> float | None:
    return None if when is None else when.timestamp()


class EndpointHealth:
    """The endpoint stage; every method but ``merge_soon`` and ``unavailable`` runs
    on the engine's loop."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        loop: asyncio.AbstractEventLoop,
        journal: Journal | None = None,
        journal_pool: pools.BoundedPool | None = None,
        wake: Callable[[str], None] | None = None,
        shared: Callable[[], bool] = lambda: False,
        park_after: float = 2.0,
    ) -> None:
        opts = conf.endpoint_health
        self.enabled = opts.enabled
        self.threshold = opts.failure_threshold
        self.open_seconds = opts.open_seconds
        self.max_open = max(opts.max_open_seconds, opts.open_seconds)
        # A receiver's Retry-After quiets its endpoint no longer than it delays
        # the delivery that got it.
        self.max_quiet = min(self.max_open, conf.alarm.rest_notifier_retry_after_max)
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
        # A hold this long waits in the journal (the engine's PARK_AFTER).
        self.park_after = park_after
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
                # Until resumed (which releases the held rows) or the pause's end.
                delay = math.inf if c.until is None else c.until - now
                return self._bounded(delivery, c, delay, now)
            probe_due = (c.state == OPEN and now >= (c.until or 0.0)) or (
                c.state == HALF_OPEN and not c.probe and now - c.since >= self.stale
            )
            if probe_due:
                claim = await self._claim(c)
                if claim == RECHECK:
                    continue
                if claim == PROBE:
                    c.in_flight += 1
                    return Ticket(c, c.in_flight, probe=True)
            if c.state == OPEN and now < (c.until or 0.0):
                delay = c.until - now
                if self.journal is not None and delay >= self.park_after:
                    # Parked past the probe's answer: the oldest held row is
                    # brought back to be the probe (``wake``), and the others
                    # are released at once when the endpoint closes. One held
                    # in memory comes back when the time is up, to probe.
                    delay += self.probe_wait
                return self._bounded(delivery, c, delay, now)
            # A probe is in flight: its answer releases the journal's held rows;
            # without a journal, ask again shortly.
            wait = self.probe_wait if self.journal is not None else HALF_OPEN_RECHECK
            return self._bounded(delivery, c, wait, now)

    def done(self, ticket: Ticket, result: attempt.Outcome | None) -> None:
        """An attempt admitted by ``ticket`` ended with ``result`` (None: it did not run)."""
        c = self._give_back(ticket)
        if c is None:
            return
        if result is None:
            self._unprobe(c, ticket)
        else:
            self._judge(c, ticket, result)
        self._wake_waiters(c)
        self._forget_if_idle(c)

    def release(self, ticket: Ticket) -> None:
        """A ticket whose attempt will not run (the journal said not now): its slot
        back, quietly."""
        self.done(ticket, None)

    @staticmethod
    def _give_back(ticket: Ticket) -> Circuit | None:
        c = ticket.circuit
        if c is not None:
            c.in_flight -= 1
            if ticket.probe:
                c.probe = False
        return c

    def _unprobe(self, c: Circuit, ticket: Ticket) -> None:
        """A probe that did not run is claimed again: at once in this process; by
        another once its claim in the journal is stale."""
        if ticket.probe and c.state == HALF_OPEN and not self.shared():
            self._set_state(c, OPEN)
            c.until = self._now()

    def _judge(self, c: Circuit, ticket: Ticket, result: attempt.Outcome) -> None:
        health = result.health
        now = self._now()
        quiet = None
        if result.retry_after is not None and result.status_code == 503:
            # The server says it is unavailable: for every delivery. (A 429's
            # Retry-After limits one client or resource, such as one Slack
            # webhook: it delays that delivery only, and one tenant cannot
            # quiet an endpoint that others share.)
            quiet = min(result.retry_after, self.max_quiet)
            if quiet < MIN_QUIET:
                quiet = None
        if health == attempt.OVERLOADED:
            c.limit = max(1.0, min(c.limit, DECREASE * ticket.sent_at))
            c.last_cut = now
        elif health == attempt.ANSWERED:
            c.failures = 0
            if now - c.last_cut >= self.open_seconds:
                c.limit = min(self.per_host, 2 * c.limit)  # quiet for long: recover fast
            else:
                c.limit = min(self.per_host, c.limit + GROWTH / c.limit)
        # A 429 says "fewer at once"; only one refused alone says "down".
        failed = health == attempt.FAILED or (
            health == attempt.OVERLOADED and (result.status_code != 429 or ticket.sent_at <= 1)
        )
        if failed:
            c.failures += 1
        cause = masking.mask_text(result.error or "failed")
        if ticket.probe and c.state == HALF_OPEN:
            if quiet is not None:
                self._change(
                    c,
                    OPEN,
                    f"its probe was answered 503, Retry-After: {quiet:g} s",
                    until=now + quiet,
                )
            elif health == attempt.ANSWERED:
                self._change(c, CLOSED, "its probe was answered")
            elif health == attempt.NEUTRAL:
                self._change(
                    c, OPEN, f"its probe reached nothing: {cause}", until=now + self.open_seconds
                )
            else:
                open_for = min(self.max_open, 2 * (c.open_for or self.open_seconds))
                self._change(c, OPEN, f"its probe failed: {cause}", open_for=open_for)
            return
        if c.state == PAUSED:
            return
        if quiet is not None:
            if c.state != OPEN or (c.until or 0.0) < now + quiet:
                self._change(
                    c, OPEN, f"it answered 503 with Retry-After: {quiet:g} s", until=now + quiet
                )
        elif health == attempt.ANSWERED and c.state in (OPEN, HALF_OPEN):
            self._change(c, CLOSED, "it answered")
        elif failed and c.state == CLOSED and c.failures >= self.threshold:
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
        if not c.held:
            c.held = True
            self._arm(c)
        return Hold(max(MIN_HOLD, min(delay, left)), f"endpoint {c.state}")

    async def _claim(self, c: Circuit) -> str:
        """Whether a delivery is the probe (``PROBE``), must wait (``HOLD``), or the
        state changed meanwhile (``RECHECK``). The journal decides when it is shared."""
        if self.journal is None or self.pool is None or not self.shared():
            c.probe = True
            self._change(c, HALF_OPEN, "probing it")
            return PROBE
        try:
            won, row = await self.pool.run(self.journal.claim_probe, c.endpoint, self.stale)
        except Exception as exc:
            if not c.claim_failing:
                LOG.warning(
                    "Endpoint %s: could not claim its probe in the journal (%s); "
                    "its deliveries wait",
                    self._name(c),
                    _cause(exc),
                )
            c.claim_failing = True
            return HOLD
        c.claim_failing = False
        if c.state == CLOSED:
            # Closed meanwhile (an answer came): say so again, over the claim.
            if won:
                c.changed_at = self._now()
                self._save(c)
            return RECHECK
        if row is None:
            return HOLD
        if won:
            self._apply(c, row)
            c.probe = True
            LOG.info("Endpoint %s now half_open: probing it", self._name(c))
            return PROBE
        if (_stamp(row.changed_at) or 0.0) > c.changed_at or row.state in (CLOSED, PAUSED):
            self._apply(c, row)  # the journal knows better: another probes, or it closed
            self._after_change(c)
            return RECHECK
        return HOLD

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
        self._set_state(c, state)
        c.since, c.until, c.reason = now, until, reason
        c.changed_at = now
        self._log(c, reason)
        self._save(c)
        self._after_change(c)

    def _after_change(self, c: Circuit) -> None:
        if c.timer is not None:
            c.timer.cancel()
            c.timer = None
        if c.state == CLOSED:
            c.held = False
            self._release(c)
            self._wake_waiters(c, everyone=True)
            return
        if c.state in (OPEN, PAUSED):
            self._wake_waiters(c, everyone=True)
        self._arm(c)

    def _arm(self, c: Circuit) -> None:
        """While this process holds deliveries for it: at an open endpoint's time,
        bring its oldest back to probe; at a pause's end, close it."""
        if not c.held or c.timer is not None or c.until is None:
            return
        if c.state == OPEN and self.wake is not None:
            action = self._probe_due
        elif c.state == PAUSED:
            action = self._pause_over
        else:
            return
        c.timer = self.loop.call_later(max(0.0, c.until - self._now()), action, c.endpoint)

    def _probe_due(self, endpoint: str) -> None:
        c = self._circuits.get(endpoint)
        if c is not None and c.state == OPEN:
            c.timer = None
            self.wake(endpoint)

    def _pause_over(self, endpoint: str) -> None:
        c = self._circuits.get(endpoint)
        if c is not None and c.state == PAUSED and c.until is not None:
            c.timer = None
            if self._now() >= c.until:
                self._change(c, CLOSED, "the pause ended")
            else:
                self._arm(c)

    def _release(self, c: Circuit) -> None:
        """Its held rows are due now (this process's; others release theirs on sync)."""
        if self.journal is None or self.pool is None:
            return
        released = self.pool.start(self.journal.release_held, c.endpoint)
        released.add_done_callback(lambda f: self._logged(f, c, "release its held deliveries"))

    def release_if_closed(self, endpoints: Iterable[str]) -> None:
        """Held rows just parked for endpoints that are no longer held: release them
        (the endpoint closed while they were being written)."""
        for endpoint in set(endpoints):
            c = self._circuits.get(endpoint)
            if c is None or c.state == CLOSED:
                self._release(c or Circuit(endpoint, self.per_host))

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
        changed_at = c.changed_at

        def saved(future: asyncio.Future) -> None:
            if self._logged(future, c, "write its state") and c.changed_at == changed_at:
                # Tried again until written or changed: others must learn it.
                if self._circuits.get(c.endpoint) is c:
                    self.loop.call_later(self.sync_seconds, self._save_again, c, changed_at)

        self.pool.start(self.journal.save_endpoint, row).add_done_callback(saved)

    def _save_again(self, c: Circuit, changed_at: float) -> None:
        if c.changed_at == changed_at and self._circuits.get(c.endpoint) is c:
            self._save(c)

    def _logged(self, future: asyncio.Future, c: Circuit, what: str) -> bool:
        """Log a journal write that failed; whether it did."""
        exc = future.exception() if not future.cancelled() else None
        if exc is not None:
            LOG.warning(
                "Endpoint %s: could not %s in the journal (%s)", self._name(c), what, _cause(exc)
            )
        return exc is not None

    def _log(self, c: Circuit, reason: str) -> None:
        next_probe = ""
        if c.state == OPEN and c.until is not None:
            next_probe = f"; next probe in {max(0.0, c.until - self._now()):.0f} s"
        elif c.state == PAUSED:
            next_probe = "; until resumed" if c.until is None else f"; until {_when(c.until)}"
        LOG.log(
            logging.INFO if c.state == HALF_OPEN else logging.WARNING,
            "Endpoint %s now %s: %s%s",
            self._name(c),
            c.state,
            masking.escape_control(reason),
            next_probe,
        )

    # -- what other processes changed -----------------------------------------

    def merge(self, rows: Iterable[EndpointRow]) -> None:
        """Take the newer of each endpoint's rows that others wrote."""
        for row in rows:
            if row.changed_by == self.owner:
                continue
            c = self._circuits.get(row.endpoint)
            if c is None and row.state == CLOSED:
                continue  # nothing known of it here: nothing to change
            c = c or self._circuit(row.endpoint)
            if (_stamp(row.changed_at) or 0.0) <= c.changed_at:
                continue
            self._apply(c, row)
            LOG.info("Endpoint %s now %s (by %s)", self._name(c), c.state, row.changed_by)
            self._after_change(c)
            self._forget_if_idle(c)

    def _apply(self, c: Circuit, row: EndpointRow) -> None:
        self._set_state(c, row.state)
        c.failures = row.failures
        c.since, c.until = _stamp(row.since) or 0.0, _stamp(row.until)
        c.open_for, c.reason = row.open_for, row.reason
        c.changed_at = _stamp(row.changed_at) or 0.0

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
        """Make room: forget the oldest closed endpoint with nothing in flight, else
        the oldest with nothing in flight (its deliveries are then not held here:
        memory stays bounded whatever names tenants write)."""
        victim = None
        for name, c in self._circuits.items():
            if c.in_flight or c.waiters:
                continue
            if c.state == CLOSED:
                victim = name
                break
            victim = victim or name
        if victim is not None:
            c = self._circuits.pop(victim)
            if c.timer is not None:
                c.timer.cancel()
            self._counts_add(c.state, -1)

    def _wake_waiters(self, c: Circuit, everyone: bool = False) -> None:
        room = len(c.waiters) if everyone else max(1, int(c.limit)) - c.in_flight
        while c.waiters and room > 0:
            waiter = c.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                room -= 1

    def _set_state(self, c: Circuit, state: str) -> None:
        if state != c.state:
            self._counts_add(c.state, -1)
            self._counts_add(state, 1)
            c.state = state

    def _counts_add(self, state: str, n: int) -> None:
        if state in self._counts:
            self._counts[state] += n
            metrics.ENDPOINTS.labels(state).set(self._counts[state])

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
        self._read(None, self.health.max_age)

    def tick(self) -> None:
        # Rows committed late, or by a process whose clock runs behind, are
        # read again; merging skips what it knows.
        slack = datetime.timedelta(seconds=2 * self.interval + 1)
        self._read(self._seen - slack if self._seen is not None else None)

    def _read(self, since: datetime.datetime | None, max_age: float | None = None) -> None:
        try:
            rows = self.journal.endpoint_states(since, max_age)
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
