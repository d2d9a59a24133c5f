"""The delivery engine: the pipeline from a validated alarm to its announced outcomes.

    consumers (RPC, notifications)
      → intake.py     validate the alarm and each action, find its plugin
      → journal.py    record every delivery before its first attempt
      → scheduler.py  ordering, supersession, per-host and pool caps, fairness,
                      retry timing
      → endpoints.py  endpoint health: hold a failing endpoint's deliveries,
                      probe it, limit the attempts in flight to it
      → attempt.py    one plugin call with a deadline, failures contained
      → retry.py      whether and when to try again
      → announce.py   events to the event sinks (log, metrics, dispatchers)

One asyncio event loop per process runs the scheduler and every attempt; an
in-flight delivery costs memory, not a thread. Consumer threads hand alarms
over with ``accept`` and never wait on a webhook; they wait only when the
number of deliveries running or waiting for a slot reaches ``[alarm]
max_pending_deliveries``, so that memory stays bounded and a flood is
consumed more slowly instead.

Deliveries waiting for a retry do not count there: a webhook answering 503
with ``Retry-After`` could otherwise hold intake for every tenant. With the
journal, a retry due in more than ``PARK_AFTER`` seconds (or any, once
``max_pending_deliveries`` retries wait in memory) is *parked*: its row says
when it is due and the delivery leaves memory; a thread reads parked rows
back shortly before they are due and resumes them as a restart would (stale
ones are failed or superseded, and the attempt asks the journal for newer
transitions first). Without the journal, up to ``max_pending_deliveries``
retries wait in memory, beyond which a retry is failed.
"""

from __future__ import annotations

import array
import asyncio
import concurrent.futures
import dataclasses
import datetime
import threading
import time
from collections.abc import Iterable, Sequence

from oslo_config import cfg
from oslo_log import log

from ceilo_notifier import (
    announce,
    attempt,
    endpoints,
    events,
    intake,
    limits,
    masking,
    metrics,
    notifiers,
    pools,
    retry,
    scheduler,
)
from ceilo_notifier import delivery as delivery_mod
from ceilo_notifier import journal as journal_mod
from ceilo_notifier.delivery import Delivery, request_id_for
from ceilo_notifier.journal import Journal, Record, is_outage, utcnow
from ceilo_notifier.notification import AlarmNotification

LOG = log.getLogger(__name__)

# Waiting for an older transition that another process holds, or for a
# journal that cannot be asked: ask again this often; say so after this long.
TURN_WAIT = 0.2
TURN_WAIT_LOG = 60.0

# A retry due later than this waits in the journal (parked), not in memory.
PARK_AFTER = 2.0
# Parked retries are looked for this often, due up to this far ahead (less
# than PARK_AFTER, so one just parked is not read straight back), this many a read.
PARK_POLL = 1.0
PARK_LOOKAHEAD = 1.5
PARK_BATCH = 500
# Shares whose recent outcomes are remembered (the longest unheard of go first).
ANSWERS_KEPT = 4096
# Deliveries held back for a crowded share are logged at most this often.
HELD_LOG_INTERVAL = 10.0
# Held back again, a delivery waits half as long again as it has, at most this.
HOLD_BACKOFF_MAX = 300.0


class JournalUnavailable(Exception):
    """The deliveries could not be written to the journal before their first attempt."""


def load_plugins(conf: cfg.ConfigOpts) -> dict[str, notifiers.AlarmNotifier]:
    """Every installed notifier plugin, by URL scheme (``notifiers.plugin_classes``:
    providers' schemes too); one instance per class, whatever its schemes."""
    instances: dict[type, notifiers.AlarmNotifier | None] = {}
    plugins = {}
    for scheme, cls in notifiers.plugin_classes(conf).items():
        if cls not in instances:
            try:
                instances[cls] = cls(conf)
            except Exception as exc:  # noqa: BLE001 - a third party's plugin
                LOG.error("Notifier plugin %s could not be loaded: %s", scheme, exc)
                instances[cls] = None
        if instances[cls] is not None:
            plugins[scheme] = instances[cls]
    return plugins


class _ParkedKeys:
    """Which journal keys (alarm, action key) may have a retry parked in the journal.

    Counts per hash bucket, so that intake asks the journal only for alarms
    that may have one: a false "maybe" costs a query; a key missed (parked by
    an earlier launch) only means its retry is superseded when due, not at once.
    """

    SIZE = 1 << 16

    def __init__(self) -> None:
        self._counts = array.array("I", bytes(4 * self.SIZE))
        self._lock = threading.Lock()

    def _slot(self, key: tuple[str, str]) -> int:
        return hash(key) & (self.SIZE - 1)

    def add(self, keys: Iterable[tuple[str, str]]) -> None:
        with self._lock:
            for key in keys:
                self._counts[self._slot(key)] += 1

    def discard(self, keys: Iterable[tuple[str, str]]) -> None:
        with self._lock:
            for key in keys:
                slot = self._slot(key)
                if self._counts[slot]:
                    self._counts[slot] -= 1

    def maybe(self, key: tuple[str, str]) -> bool:
        return self._counts[self._slot(key)] > 0


class Engine:
    """Turns (alarm, actions) into deliveries and drives each to a final outcome."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        sinks: Iterable[announce.Sink] = (),
        plugins: dict[str, notifiers.AlarmNotifier] | None = None,
        journal: Journal | None = None,
        ordering: Journal | None = None,
    ) -> None:
        self.conf = conf
        self.journal = journal
        # Whose turn it is across processes: this engine's journal, or (for a
        # replay, which journals through its own writer) the one given.
        self.ordering = ordering or journal
        self.plugins = load_plugins(conf) if plugins is None else plugins
        self.announcer = announce.Announcer([announce.log_event, *sinks], self._released)
        self.checker = intake.ActionChecker(conf, self.plugins, self.announcer.announce)
        self.attempter = attempt.Attempter(conf, retry.RetryPolicy.from_conf(conf))
        self.max_pending = conf.alarm.max_pending_deliveries
        # Retries waiting in memory have a bound of their own, the same size.
        self.max_waiting = self.max_pending
        self._pending = 0  # deliveries running or waiting for a slot, not final
        self._waiting = 0  # deliveries waiting in memory for a retry (or being parked)
        self._waiters = 0  # threads waiting for _pending to drop
        self._pending_cond = threading.Condition()
        self._closed = False
        self.loop = asyncio.new_event_loop()
        self.scheduler = scheduler.Scheduler(
            self.loop,
            limits.pool_size(conf, warn=True),
            conf.alarm.per_host_concurrency,
            start=self._start,
            supersede=self._supersede,
            due=self._retry_due,
        )
        self._parking: list[tuple[Delivery, datetime.datetime]] = []
        self._parked_keys = _ParkedKeys()
        # Deliveries one share may have running or waiting for a slot before
        # further ones wait in the journal (with one), unless it is answering
        # (``_answering``): its slots and as many queued, or half the intake
        # bound if that is more, so that one share never takes more than half
        # of it. Holding costs a journal write a delivery: a bound any lower
        # slowed intake for everyone under a flood to a hung host
        # (bench/RESULTS.md). A burst to a webhook that answers is never held.
        self.share_cap = max(2 * self.scheduler.per_host, self.max_pending // 2)
        self._answers: dict[str, tuple[float, float]] = {}  # share: (score, when)
        self._answer_window = 2 * conf.alarm.rest_notifier_timeout
        self._held, self._held_logged = 0, -HELD_LOG_INTERVAL
        self._tasks: set[asyncio.Task] = set()
        self._handed: dict[str, int] = {}  # share: deliveries the loop has yet to take
        self._handed_lock = threading.Lock()
        # Set while other processes share the journal (workers, other hosts).
        self.journal_shared = journal is not None and conf.workers > 1
        # This process's lease in the journal (the service sets it): while it
        # is not fresh, another process may have taken rows over.
        self.lease: journal_mod.Lease | None = None
        self._turn_waited: dict[str, float] = {}
        # Journal queries from the loop: threads of their own, not the loop's
        # default executor, and a deadline, so a stalled database holds them only.
        self.journal_pool = pools.BoundedPool(
            "journal", conf.alarm.journal_pool_size, conf.database.timeout
        )
        self.endpoints = endpoints.EndpointHealth(
            conf,
            self.loop,
            journal,
            self.journal_pool,
            wake=self._wake_held,
            shared=lambda: self.journal_shared,
            park_after=PARK_AFTER,
        )
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="delivery-loop", daemon=True
        )
        self._thread.start()
        self.loop.call_soon_threadsafe(self._beat)
        self._sync: endpoints.EndpointSync | None = None
        if journal is not None and self.endpoints.enabled:
            # Before anything is resumed: what is held stays held across a restart.
            self._sync = endpoints.EndpointSync(self.endpoints, journal)
            self._sync.load()
            self._sync.start()
        self._reader_stop = threading.Event()
        self._reader: threading.Thread | None = None
        if journal is not None:
            self._reader = threading.Thread(
                target=self._read_parked, name="retry-reader", daemon=True
            )
            self._reader.start()

    # -- intake (any thread) ------------------------------------------------

    def accept(
        self,
        alarms: Iterable[tuple[AlarmNotification, Sequence[object]]],
        strict: bool = False,
    ) -> list[Delivery]:
        """Check, journal and schedule one delivery per valid action; return at once.

        :param strict: raise JournalUnavailable, scheduling nothing, when the
            journal cannot be written (the caller can then requeue the
            message); otherwise log it and deliver anyway, since a delivery
            without a record beats none.
        """
        deliveries = []
        for notification, actions in alarms:
            for i, action in enumerate(actions):
                request_id = request_id_for(notification.message_id, i)
                delivery = self.checker.check(notification, action, request_id)
                if delivery is not None:
                    deliveries.append(delivery)
        if self.journal is not None and deliveries:
            deliveries = self._record(deliveries, strict)
            if deliveries is None:
                raise JournalUnavailable("stopping while the journal is unreachable")
            self._supersede_parked(deliveries)
            admitted = self._hold_crowded(deliveries)
        else:
            admitted = deliveries
        for delivery in admitted:
            self.submit(delivery)
        return deliveries

    def _hold_crowded(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Park deliveries to shares that already have ``share_cap`` deliveries
        running or waiting for a slot; those to submit.

        So that one tenant's flood to a dead host does not fill
        ``max_pending_deliveries`` and stop the consumers for everyone: its
        excess waits in the journal, read back (and held again while the share
        is still full) like a parked retry.
        """
        extra: dict[str, int] = {}
        admitted, held = [], []
        for delivery in deliveries:
            share = delivery.share
            # One the journal has no row of (it refused it) can only wait in memory.
            journaled = delivery.accepted is not None
            load = self.scheduler.load(share) + self._handed.get(share, 0) + extra.get(share, 0)
            crowded = load >= self.share_cap
            if journaled and crowded and not self._answering(share):
                held.append(delivery)
            else:
                admitted.append(delivery)
                extra[share] = extra.get(share, 0) + 1
        if not held:
            return admitted
        # Spread over the time the share needs to take them, at worst (every
        # attempt to its timeout): read back at the pace it drains, not all at
        # once; and the longer one has waited, the later it is read again, so
        # that a backlog of many held a long time is not read over and over.
        pace = self.conf.alarm.rest_notifier_timeout / self.scheduler.per_host
        start, now, rows, place = utcnow(), _now(self.journal), [], {}
        for d in held:
            place[d.share] = place.get(d.share, -1) + 1
            waited = max(0.0, now - (d.accepted or now))
            wait = PARK_AFTER + place[d.share] * pace + min(waited / 2, HOLD_BACKOFF_MAX)
            rows.append((d.request_id, start + datetime.timedelta(seconds=wait)))
        try:
            self.journal.park(rows)
        except Exception as exc:
            LOG.warning("Could not park %d deliveries in the journal (%s)", len(held), _cause(exc))
            return deliveries
        self._parked_keys.add(d.journal_key for d in held)
        self._held += len(held)
        now = time.monotonic()
        if now - self._held_logged >= HELD_LOG_INTERVAL:
            LOG.warning(
                "%d deliveries wait in the journal: their hosts (%s) already have %d "
                "deliveries running or waiting for a slot",
                self._held,
                ", ".join(sorted({d.share for d in held})[:5]),
                self.share_cap,
            )
            self._held, self._held_logged = 0, now
        return admitted

    def _answered(self, share: str, delivered: bool) -> None:
        """On the loop: how a share's attempts end, as a moving score (1: delivered)."""
        score, _ = self._answers.pop(share, (0.5, 0.0))
        self._answers[share] = (0.8 * score + 0.2 * delivered, time.monotonic())
        if len(self._answers) > ANSWERS_KEPT:
            del self._answers[next(iter(self._answers))]  # the longest unheard of

    def _answering(self, share: str) -> bool:
        """Whether most of a share's recent attempts were delivered. One never heard
        of, or whose slots are all held by attempts that hang, is not: a tenant
        cannot mix in a few working actions to keep a dead host's flood in memory,
        since the hung attempts take the slots those would need."""
        score, when = self._answers.get(share, (0.0, 0.0))
        return score >= 0.5 and time.monotonic() - when <= self._answer_window

    def _supersede_parked(self, deliveries: list[Delivery]) -> None:
        """Newer transitions supersede their keys' retries parked in the journal at
        once, as they do those waiting in memory (else, when due: ``resume``)."""
        keys = {d.journal_key for d in deliveries}
        keys = {key for key in keys if self._parked_keys.maybe(key)}
        if not keys:
            return
        try:
            parked = self.journal.parked_of(alarm_id for alarm_id, _ in keys)
            stale = [r for r in parked if r.key in keys]
            if stale:
                self._resume_parked(stale)
        except Exception as exc:
            LOG.warning("Could not look for retries parked in the journal (%s)", _cause(exc))

    def _not_journaled_yet(self, deliveries: list[Delivery]) -> list[Delivery]:
        """The deliveries of messages the broker delivered again, dropped when journaled.

        A consumer that dies between the journal write and the
        acknowledgement leaves its messages to the broker, which hands them
        to another consumer: their deliveries are the journal's already
        (resumed by a worker of the dead one's host, or taken over), so they
        are not accepted twice. Asked only once the journal refused their
        rows: their request ids, derived from the message, are taken.
        """
        if not any(d.notification.message_id for d in deliveries):
            return deliveries
        try:
            known = self.journal.journaled(d.request_id for d in deliveries)
        except Exception:  # the caller's own error handling carries on
            return deliveries
        for d in deliveries:
            if d.request_id in known:
                LOG.info(
                    "Alarm %s: %s to %s is journaled already (the broker delivered its "
                    "message again); not accepted twice",
                    d.notification.alarm_id,
                    d.request_id,
                    d.masked_action,
                )
        return [d for d in deliveries if d.request_id not in known]

    def _record(self, deliveries: list[Delivery], strict: bool) -> list[Delivery] | None:
        """Journal new deliveries; those to schedule, or None when none may be.

        While the database is unreachable the write is retried (the consumer
        waits: consumption slows instead of acknowledged alarms going
        unrecorded), unless ``strict``, where the caller requeues instead. A
        row the database refuses for its content is delivered without a
        record: losing it would be worse. One refused because its message
        was journaled before (the broker delivered it again) is not delivered.
        """
        if not deliveries:
            return deliveries
        rows = [d.journal_row() for d in deliveries]
        alarms = ", ".join(sorted({d.notification.alarm_id for d in deliveries}))
        delay, waited = 0.5, 0.0
        while True:
            try:
                for delivery, (accepted, key) in zip(
                    deliveries, self.journal.record_new(rows), strict=True
                ):
                    delivery.accepted_at(accepted)
                    delivery.action_key = key
                if waited:
                    LOG.warning("Alarm %s: journaled after %.0f s", alarms, waited)
                return deliveries
            except Exception as exc:
                cause = _cause(exc)
                if not is_outage(exc):
                    unseen = self._not_journaled_yet(deliveries)
                    if len(unseen) < len(deliveries):
                        deliveries, rows = unseen, [d.journal_row() for d in unseen]
                        if not deliveries:
                            return deliveries
                        continue
                    if strict:
                        raise JournalUnavailable(f"{type(exc).__name__}: {cause}") from exc
                    LOG.error(
                        "Alarm %s: the journal refused the record (%s); delivering %d "
                        "action(s) without one",
                        alarms,
                        cause,
                        len(deliveries),
                    )
                    return deliveries
                if strict:
                    raise JournalUnavailable(f"{type(exc).__name__}: {cause}") from exc
                if self._closed:
                    LOG.error(
                        "Alarm %s: journal unavailable (%s) while stopping; %d action(s) "
                        "not accepted",
                        alarms,
                        cause,
                        len(deliveries),
                    )
                    return None
                if not waited:
                    LOG.error(
                        "Alarm %s: journal unavailable (%s); retrying until it is back",
                        alarms,
                        cause,
                    )
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)

    def resume(
        self,
        records: Iterable[Record],
        the_journal: Journal | None = None,
        ageing: bool = True,
        unparked: bool = False,
        newest: dict | None = None,
    ) -> list[Delivery]:
        """Continue deliveries that were journaled but not finished, unless stale.

        A delivery with a newer transition of its alarm to the same action in
        the journal is superseded; with ``ageing``, one accepted longer than
        ``rest_notifier_retry_max_age`` ago is failed. Neither is sent. In the
        engine's own journal, one whose retry is due in more than
        ``PARK_AFTER`` seconds stays (or is put) there, parked, until it is
        due; a parked one taken into memory is first taken from the journal's
        parked rows (``unparked``: by the caller already), so that exactly
        one reader resumes it. ``newest``: the journal's newest transitions of
        the records' keys, when the caller asked already.
        """
        records = list(records)
        the_journal = the_journal or self.journal
        parked: set[str] = set()
        own = the_journal is not None and the_journal is self.journal
        # Asked before any row is taken from the parked ones (see _resume_parked).
        if newest is None:
            newest = the_journal.newest(records) if the_journal is not None and records else {}
        if own and not unparked:
            records, parked = self._settle_parked(records)
        max_age = self.conf.alarm.rest_notifier_retry_max_age
        resumed = []
        to_submit: list[tuple[Delivery, float]] = []
        now = _now(the_journal)
        for record in records:
            notification = AlarmNotification(**record.notification)
            # A plugin gone since then drops it, with its request id: the
            # journal marks it dropped instead of resuming it at every start.
            delivery = self.checker.check(notification, record.action, record.request_id)
            if delivery is None:
                continue
            delivery.attempt = record.attempts
            delivery.accepted_at(record.created_at)
            delivery.action_key = record.action_key
            age = max(0.0, now - record.created_at.timestamp())
            if newest.get(record.key, record.created_at) > record.created_at:
                self._conclude(delivery, events.SUPERSEDED, "superseded by a newer transition")
                continue
            if ageing and age > max_age:
                self._conclude(
                    delivery,
                    events.FAILED,
                    (record.parked_until and self.endpoints.unavailable(delivery.endpoint))
                    or f"not resumed: accepted {age:.0f} s ago, more than "
                    f"rest_notifier_retry_max_age ({max_age:g} s)",
                )
                continue
            delivery.first_attempt = time.monotonic() - age
            resumed.append(delivery)
            if record.request_id in parked:
                continue  # read back when due
            if own:
                to_submit.append((delivery, _delay(record, now)))
            else:
                self.submit(delivery, _delay(record, now))
        if to_submit:
            # Those of shares already full wait in the journal (again).
            admitted = {id(d) for d in self._hold_crowded([d for d, _ in to_submit])}
            for delivery, delay in to_submit:
                if id(delivery) in admitted:
                    self.submit(delivery, delay)
        return resumed

    def _settle_parked(self, records: list[Record]) -> tuple[list[Record], set[str]]:
        """Park the records whose retry is far off; take the others out of the
        parked rows. The records left to resume (not those another reader
        took meanwhile), and the request ids of those that stay parked."""
        now = _now(self.journal)
        far = {r.request_id for r in records if _delay(r, now) >= PARK_AFTER}
        to_park = [
            (r.request_id, r.next_attempt_at)
            for r in records
            if r.request_id in far and r.parked_until is None
        ]
        try:
            self.journal.park(to_park)
        except Exception as exc:
            LOG.warning("Could not park %d retries in the journal (%s)", len(to_park), _cause(exc))
            far -= {rid for rid, _ in to_park}  # they wait in memory instead
        self._parked_keys.add(r.key for r in records if r.request_id in far)
        near = [r for r in records if r.parked_until and r.request_id not in far]
        won = {r.request_id for r in self._unpark(near)}
        kept = [r for r in records if not r.parked_until or r.request_id in far | won]
        return kept, far

    def _unpark(self, records: list[Record]) -> list[Record]:
        """Take parked records out of the journal's parked rows; those this reader won."""
        if not records:
            return []
        won = self.journal.unpark(r.request_id for r in records)
        taken = [r for r in records if r.request_id in won]
        self._parked_keys.discard(r.key for r in taken)
        return taken

    def submit(self, delivery: Delivery, delay: float = 0.0) -> None:
        """Schedule a delivery; waits while ``max_pending_deliveries`` are unfinished.

        One with a ``delay`` waits for its retry, outside that bound: it never
        waits. Once intake is closed (the service is stopping) the delivery is
        left as it is: journaled, it resumes at the next start.
        """
        # The engine's own threads (a sink calling back, say) never wait for
        # room: only they can make it.
        own = threading.current_thread() in (self._thread, self.announcer.thread)
        with self._pending_cond:
            if delay > 0 and not self._closed:
                self._waiting += 1
                self._hand(delivery, delay)
                return
            while self._pending >= self.max_pending and not self._closed and not own:
                self._waiters += 1
                self._pending_cond.wait(1.0)
                self._waiters -= 1
            if self._closed:
                return
            self._pending += 1
        self._hand(delivery, delay)

    def _hand(self, delivery: Delivery, delay: float) -> None:
        """Give a delivery to the loop's scheduler. Until the loop takes it, it
        counts in ``_handed``: a burst handed faster than the loop takes it would
        otherwise not count towards its share's load, and a flood to one dead
        host could fill ``max_pending_deliveries`` past ``share_cap``."""
        with self._handed_lock:
            self._handed[delivery.share] = self._handed.get(delivery.share, 0) + 1
        self.loop.call_soon_threadsafe(self._enter, delivery, delay)

    def _enter(self, delivery: Delivery, delay: float) -> None:
        with self._handed_lock:
            left = self._handed.pop(delivery.share, 1) - 1
            if left:
                self._handed[delivery.share] = left
        self.scheduler.submit(delivery, delay)

    def close_intake(self) -> None:
        """Release consumers waiting for room; accept nothing more."""
        with self._pending_cond:
            self._closed = True
            self._pending_cond.notify_all()
        self._reader_stop.set()

    def _count(self, pending: int, waiting: int) -> None:
        """Move deliveries between the intake bound and the retries waiting in memory."""
        with self._pending_cond:
            self._pending += pending
            self._waiting += waiting
            if self._waiters:
                self._pending_cond.notify_all()

    # -- on the loop --------------------------------------------------------

    def _beat(self) -> None:
        """The loop's heartbeat: a loop wedged by a blocking call stops it."""
        metrics.loop_heartbeat().set(time.time())
        self.loop.call_later(metrics.HEARTBEAT_INTERVAL, self._beat)

    def _start(self, delivery: Delivery) -> None:
        task = self.loop.create_task(self._run(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def owners(self, live: int) -> None:
        """The lease's report after each heartbeat: how many processes share the journal."""
        self.journal_shared = live > 1 or self.conf.workers > 1

    def _must_ask(self, delivery: Delivery) -> bool:
        """Whether the journal must say whose turn it is before this attempt: before
        every retry, and before every attempt while another process may hold rows
        of the same key or may have taken this one's (its lease is not fresh)."""
        if self.ordering is None or delivery.accepted is None:
            return False
        return bool(
            delivery.attempt
            or self.journal_shared
            or (self.lease is not None and not self.lease.fresh)
        )

    async def _run(self, delivery: Delivery) -> None:
        # The endpoint first: a held delivery is not marked in flight in the
        # journal (its turn would, and the row would then refuse its events).
        ticket = await self.endpoints.admit(delivery)
        if isinstance(ticket, endpoints.Hold):
            self._hold(delivery, ticket)
            return
        if self._must_ask(delivery):
            turn = await self._turn(delivery)
            if turn != journal_mod.GO:
                self.endpoints.release(ticket)
            if turn == journal_mod.LOST:
                self._lose(delivery)
                return
            if turn == journal_mod.SUPERSEDED:
                self._finish(delivery, events.SUPERSEDED, "superseded by a newer transition")
                self.scheduler.finished(delivery)
                return
            if turn == journal_mod.WAIT:
                if self.scheduler.retry(delivery, TURN_WAIT):
                    self._count(-1, 1)
                return
        delivery.held = False
        result = None
        try:
            result = await self.attempter.run(delivery)
        finally:
            self.endpoints.done(ticket, result)
        delivery.status_code = result.status_code
        self._answered(delivery.share, result.outcome == events.DELIVERED)
        try:
            if result.outcome == events.RETRYING:
                self._retry(delivery, result.error, result.retry_in)
                return
            self._finish(delivery, result.outcome, result.error)
            self.scheduler.finished(delivery)
        except Exception:
            # A fault of ours, not the plugin's: still, the slot and the
            # alarm's line of transitions must move on.
            LOG.exception("Alarm %s: scheduling after an attempt failed", delivery.key[0])
            if delivery.outcome is None:
                self._finish(delivery, events.FAILED, "internal error after the attempt")
            if delivery.state != delivery_mod.DONE:
                self.scheduler.finished(delivery)

    def _retry(self, delivery: Delivery, error: str | None, delay: float) -> None:
        self._wait(delivery, delay, error, "retried")

    def _hold(self, delivery: Delivery, hold: endpoints.Hold) -> None:
        """Its endpoint is held: wait as a retry does, without an attempt or an
        event; fail once its retry age is over."""
        if hold.expired:
            self._finish(delivery, events.FAILED, hold.cause)
            self.scheduler.finished(delivery)
            return
        delivery.held = True
        self._wait(delivery, hold.delay, hold.cause, "held")

    def _wait(self, delivery: Delivery, delay: float, error: str | None, why: str) -> None:
        """Wait in memory, or parked in the journal; without a journal and with
        no room left in memory, fail instead."""
        if self.journal is None and self._waiting >= self.max_waiting:
            self._finish(
                delivery,
                events.FAILED,
                f"{error}; not {why}: {self._waiting} deliveries already wait in memory "
                "(max_pending_deliveries)",
            )
            self.scheduler.finished(delivery)
            return
        if not self.scheduler.retry(delivery, delay):
            return  # superseded by a newer transition waiting behind it
        self._count(-1, 1)
        if why == "retried":
            self.announcer.announce(delivery.event(events.RETRYING, error, delay))
        parkable = self.journal is not None and delivery.accepted is not None
        if parkable and (delay >= PARK_AFTER or self._waiting > self.max_waiting):
            self._park(delivery, delay)

    def _wake_held(self, endpoint: str) -> None:
        """On the loop: an open endpoint's time is up; its oldest held delivery in
        the journal comes back, to be its probe."""
        if self.journal is not None:
            woken = self.journal_pool.start(self._resume_oldest_held, endpoint)
            woken.add_done_callback(_log_failure("Resuming a held delivery to probe"))

    def _resume_oldest_held(self, endpoint: str) -> None:
        records = self.journal.held_oldest(endpoint, 1)
        if not records:
            return
        newest = self.journal.newest(records)  # asked first: see _resume_parked
        won = [
            # Now, not when it was parked until: it is the probe.
            dataclasses.replace(r, parked_until=None, next_attempt_at=None)
            for r in self._unpark(records)
        ]
        self.resume(won, unparked=True, newest=newest)

    def _retry_due(self, _delivery: Delivery) -> None:
        """A retry waiting in memory came due: it counts for intake again."""
        self._count(1, -1)

    def _park(self, delivery: Delivery, delay: float) -> None:
        """Leave the retry to the journal; the rows of one loop turn go in one write."""
        if not self.scheduler.detach(delivery):
            return
        self._parking.append((delivery, utcnow() + datetime.timedelta(seconds=delay)))
        if len(self._parking) == 1:
            self.loop.call_soon(self._write_parked)

    def _write_parked(self) -> None:
        batch, self._parking = self._parking, []
        rows = [(d.request_id, due) for d, due in batch]
        written = self.journal_pool.start(self.journal.park, rows)
        written.add_done_callback(lambda future: self._parked(batch, future))

    def _parked(self, batch: list[tuple[Delivery, datetime.datetime]], written) -> None:
        """The parked rows are written: the deliveries leave memory. If the journal
        could not take them, they wait here after all."""
        exc = written.exception() if not written.cancelled() else asyncio.CancelledError()
        if exc is None:
            self._parked_keys.add(d.journal_key for d, _ in batch)
            self._count(0, -len(batch))
            # Held for an endpoint that closed while they were written: due now.
            self.endpoints.release_if_closed(d.endpoint for d, _ in batch if d.held)
            return
        LOG.warning(
            "Could not park %d retries in the journal (%s); they wait in memory",
            len(batch),
            _cause(exc),
        )
        now = utcnow()
        for delivery, due in batch:
            if not self.scheduler.readmit(delivery, max(0.0, (due - now).total_seconds())):
                self._count(1, -1)
                self._finish(delivery, events.SUPERSEDED, "superseded by a newer transition")

    def _read_parked(self) -> None:
        """The retry-reader thread: parked retries back into memory shortly before due."""
        while not self._reader_stop.wait(PARK_POLL):
            try:
                while self._read_parked_once():
                    pass
            except Exception as exc:
                LOG.warning("Reading parked retries from the journal failed (%s)", _cause(exc))

    def _read_parked_once(self) -> bool:
        """Resume one batch of parked retries now due; True if there may be more."""
        room = min(PARK_BATCH, self.max_waiting - self._waiting)
        if room <= 0 or self._closed:
            return False
        until = utcnow() + datetime.timedelta(seconds=PARK_LOOKAHEAD)
        records = self.journal.parked_due(until, room)
        if not records:
            return False
        self._resume_parked(records)
        return len(records) == room

    def _resume_parked(self, records: list[Record]) -> None:
        """Take parked records into memory and resume them. What resuming asks the
        journal is asked before they are taken: a query failing after would leave
        them neither parked nor in memory, with a live owner, until its restart."""
        newest = self.journal.newest(records)
        self.resume(self._unpark(records), unparked=True, newest=newest)

    async def _turn(self, delivery: Delivery) -> str:
        """Ask the journal whether this delivery may go now (journal.ordering):
        ``lost``, ``superseded``, ``wait`` or ``go``.

        Within a process the scheduler knows this already; across processes the
        journal does. A journal that cannot be asked means ``wait``: it is asked
        again every ``TURN_WAIT`` seconds, for as long as it takes, since a stale
        send is worse than a late one (an older transition in flight elsewhere
        ends within its attempt's deadline, and a dead owner's rows are taken
        over once its lease runs out).
        """
        waited = self._turn_waited.get(delivery.request_id, 0.0)
        try:
            turn = await self.journal_pool.run(
                self.ordering.turn, delivery.request_id, delivery.attempt + 1
            )
        except Exception as exc:
            if not waited:
                LOG.warning(
                    "Alarm %s: could not ask the journal whether %s may go (%s); "
                    "it waits until the journal answers",
                    masking.escape_control(delivery.key[0]),
                    delivery.request_id,
                    _cause(exc),
                )
            turn = journal_mod.WAIT
        if turn != journal_mod.WAIT:
            self._turn_waited.pop(delivery.request_id, None)
            return turn
        self._turn_waited[delivery.request_id] = waited + TURN_WAIT
        if waited < TURN_WAIT_LOG <= waited + TURN_WAIT:
            LOG.warning(
                "Alarm %s: %s has waited %.0f s for an older transition to %s still in "
                "flight in another process, or for the journal",
                masking.escape_control(delivery.key[0]),
                delivery.request_id,
                TURN_WAIT_LOG,
                delivery.masked_action,
            )
        return turn

    def _lose(self, delivery: Delivery) -> None:
        """Another process owns this delivery now (it took it over while this one was
        cut off): stop it here, without an outcome, which is the owner's to write."""
        LOG.warning(
            "Alarm %s: %s to %s now belongs to another process (taken over); stopped here",
            masking.escape_control(delivery.key[0]),
            delivery.request_id,
            delivery.masked_action,
        )
        self._turn_waited.pop(delivery.request_id, None)
        self.scheduler.finished(delivery)
        self._released(delivery)
        delivery.announced()

    def _conclude(self, delivery: Delivery, outcome: str, error: str) -> None:
        """A final outcome reached without an attempt (resume found it stale)."""
        with self._pending_cond:
            self._pending += 1
        self._finish(delivery, outcome, error)

    def _supersede(self, delivery: Delivery) -> None:
        if delivery.state == delivery_mod.WAITING:  # it counted as a waiting retry
            self._count(1, -1)
        self._finish(delivery, events.SUPERSEDED, "superseded by a newer transition")

    def _finish(self, delivery: Delivery, outcome: str, error: str | None) -> None:
        delivery.outcome = outcome
        delivery.error = error
        self._turn_waited.pop(delivery.request_id, None)
        self.announcer.announce(delivery.event(outcome, error), delivery)

    # -- announcer thread ---------------------------------------------------

    def _released(self, _delivery: Delivery) -> None:
        with self._pending_cond:
            self._pending -= 1
            if self._waiters:
                self._pending_cond.notify_all()

    # -- shutdown -----------------------------------------------------------

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every accepted delivery has its final outcome announced."""
        with self._pending_cond:
            self._waiters += 1
            try:
                return self._pending_cond.wait_for(
                    lambda: self._pending == 0 and self._waiting == 0, timeout
                )
            finally:
                self._waiters -= 1

    def stop(self, grace: float = 0.0) -> list[Delivery]:
        """Stop retrying, let running attempts finish within grace, return the unfinished."""
        self.close_intake()
        if self._sync is not None:
            self._sync.stop()
        if self._reader is not None:
            self._reader.join(10)
        if not self._thread.is_alive():
            return []
        future = asyncio.run_coroutine_threadsafe(self._stop(grace), self.loop)
        try:
            unfinished = future.result(grace + 30)
        except (concurrent.futures.TimeoutError, Exception):
            LOG.exception("Stopping the delivery engine failed")
            unfinished = []
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.attempter.close()
        self.journal_pool.close()
        self.announcer.stop()
        for plugin in self.plugins.values():
            try:
                plugin.close()
            except Exception:
                LOG.exception("Closing notifier plugin %r failed", plugin)
        return unfinished

    async def _stop(self, grace: float) -> list[Delivery]:
        self.scheduler.stop()
        deadline = time.monotonic() + grace
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - time.monotonic())
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        for plugin in self.plugins.values():
            closing = getattr(plugin, "close_async", None)
            if closing is None:
                continue
            try:
                await asyncio.wait_for(closing(), 5)
            except Exception:
                LOG.exception("Closing notifier plugin %r failed", plugin)
        return self.scheduler.unfinished()


def _now(the_journal: Journal | None) -> float:
    """Now in the journal's clock, the one its times are written in."""
    return (the_journal.clock.now() if the_journal is not None else utcnow()).timestamp()


def _delay(record: Record, now: float) -> float:
    """Seconds until a journaled delivery's next attempt is due (0: now)."""
    due = record.parked_until or record.next_attempt_at
    return 0.0 if due is None else max(0.0, due.timestamp() - now)


def _log_failure(what: str):
    """A done-callback for a journal query run for its effect: log its failure."""

    def callback(future: asyncio.Future) -> None:
        exc = future.exception() if not future.cancelled() else None
        if exc is not None:
            LOG.warning("%s failed (%s)", what, _cause(exc))

    return callback


def _cause(exc: BaseException) -> str:
    """The first line of a database error's own message, without its statement."""
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]
