"""The delivery engine: the pipeline from a validated alarm to its announced outcomes.

    consumers (RPC, notifications)
      → intake.py     validate the alarm and each action, find its plugin
      → journal.py    record every delivery before its first attempt
      → scheduler.py  ordering, supersession, per-host and pool caps, fairness,
                      retry timing
      → attempt.py    one plugin call with a deadline, failures contained
      → retry.py      whether and when to try again
      → announce.py   events to the event sinks (log, metrics, dispatchers)

One asyncio event loop per process runs the scheduler and every attempt; an
in-flight delivery costs memory, not a thread. Consumer threads hand alarms
over with ``accept`` and never wait on a webhook; they wait only when the
number of unfinished deliveries reaches ``[alarm] max_pending_deliveries``,
so that memory stays bounded and a flood is consumed more slowly instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Iterable, Sequence

from oslo_config import cfg
from oslo_log import log
from stevedore import extension

from ceilo_notifier import announce, attempt, events, intake, notifiers, pools, retry, scheduler
from ceilo_notifier import delivery as delivery_mod
from ceilo_notifier.delivery import Delivery, request_id_for
from ceilo_notifier.journal import Journal, Record, is_outage
from ceilo_notifier.notification import AlarmNotification

LOG = log.getLogger(__name__)

# Waiting for an older transition that another process holds.
TURN_WAIT = 0.2
MAX_TURN_WAIT = 60.0


class JournalUnavailable(Exception):
    """The deliveries could not be written to the journal before their first attempt."""


def load_plugins(conf: cfg.ConfigOpts) -> dict[str, notifiers.AlarmNotifier]:
    """Every installed notifier plugin, by URL scheme."""

    def failed(_manager, entrypoint, exc):
        LOG.error("Notifier plugin %s could not be loaded: %s", entrypoint, exc)

    manager = extension.ExtensionManager(
        notifiers.NAMESPACE,
        invoke_on_load=True,
        invoke_args=(conf,),
        on_load_failure_callback=failed,
    )
    return {ext.name: ext.obj for ext in manager}


class Engine:
    """Turns (alarm, actions) into deliveries and drives each to a final outcome."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        sinks: Iterable[announce.Sink] = (),
        plugins: dict[str, notifiers.AlarmNotifier] | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.conf = conf
        self.journal = journal
        self.plugins = load_plugins(conf) if plugins is None else plugins
        self.announcer = announce.Announcer([announce.log_event, *sinks], self._released)
        self.checker = intake.ActionChecker(conf, self.plugins, self.announcer.announce)
        self.attempter = attempt.Attempter(conf, retry.RetryPolicy.from_conf(conf))
        self.max_pending = conf.alarm.max_pending_deliveries
        self._pending = 0  # deliveries accepted and not yet announced final
        self._waiters = 0  # threads waiting for _pending to drop
        self._pending_cond = threading.Condition()
        self._closed = False
        self.loop = asyncio.new_event_loop()
        self.scheduler = scheduler.Scheduler(
            self.loop,
            conf.alarm.dispatch_pool_size,
            conf.alarm.per_host_concurrency,
            start=self._start,
            supersede=self._supersede,
        )
        self._tasks: set[asyncio.Task] = set()
        # Set while other processes share the journal (workers, other hosts).
        self.journal_shared = journal is not None and conf.workers > 1
        self._turn_waited: dict[str, float] = {}
        # Journal queries from the loop: threads of their own, not the loop's
        # default executor, and a deadline, so a stalled database holds them only.
        self.journal_pool = pools.BoundedPool(
            "journal", conf.alarm.journal_pool_size, conf.database.timeout
        )
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="delivery-loop", daemon=True
        )
        self._thread.start()

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
        for delivery in deliveries:
            self.submit(delivery)
        return deliveries

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
                self.journal.record_new(rows)
                if waited:
                    LOG.warning("Alarm %s: journaled after %.0f s", alarms, waited)
                return deliveries
            except Exception as exc:
                cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
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
        self, records: Iterable[Record], the_journal: Journal | None = None, ageing: bool = True
    ) -> list[Delivery]:
        """Continue deliveries that were journaled but not finished, unless stale.

        A delivery with a newer transition of its alarm to the same action in
        the journal is superseded; with ``ageing``, one accepted longer than
        ``rest_notifier_retry_max_age`` ago is failed. Neither is sent.
        """
        records = list(records)
        the_journal = the_journal or self.journal
        newest = the_journal.newest(records) if the_journal is not None and records else {}
        max_age = self.conf.alarm.rest_notifier_retry_max_age
        resumed = []
        now = time.time()
        for record in records:
            notification = AlarmNotification(**record.notification)
            # A plugin gone since then drops it, with its request id: the
            # journal marks it dropped instead of resuming it at every start.
            delivery = self.checker.check(notification, record.action, record.request_id)
            if delivery is None:
                continue
            delivery.attempt = record.attempts
            age = max(0.0, now - record.created_at.timestamp())
            if newest.get((record.alarm_id, record.action_masked), record.created_at) > (
                record.created_at
            ):
                self._conclude(delivery, events.SUPERSEDED, "superseded by a newer transition")
                continue
            if ageing and age > max_age:
                self._conclude(
                    delivery,
                    events.FAILED,
                    f"not resumed: accepted {age:.0f} s ago, more than "
                    f"rest_notifier_retry_max_age ({max_age:g} s)",
                )
                continue
            delivery.first_attempt = time.monotonic() - age
            delay = 0.0
            if record.next_attempt_at is not None:
                delay = max(0.0, record.next_attempt_at.timestamp() - now)
            self.submit(delivery, delay)
            resumed.append(delivery)
        return resumed

    def submit(self, delivery: Delivery, delay: float = 0.0) -> None:
        """Schedule a delivery; waits while ``max_pending_deliveries`` are unfinished.

        Once intake is closed (the service is stopping) the delivery is left
        as it is: journaled, it resumes at the next start.
        """
        # The engine's own threads (a sink calling back, say) never wait for
        # room: only they can make it.
        own = threading.current_thread() in (self._thread, self.announcer.thread)
        with self._pending_cond:
            while self._pending >= self.max_pending and not self._closed and not own:
                self._waiters += 1
                self._pending_cond.wait(1.0)
                self._waiters -= 1
            if self._closed:
                return
            self._pending += 1
        self.loop.call_soon_threadsafe(self.scheduler.submit, delivery, delay)

    def close_intake(self) -> None:
        """Release consumers waiting for room; accept nothing more."""
        with self._pending_cond:
            self._closed = True
            self._pending_cond.notify_all()

    # -- on the loop --------------------------------------------------------

    def _start(self, delivery: Delivery) -> None:
        task = self.loop.create_task(self._run(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, delivery: Delivery) -> None:
        if self.journal_shared or delivery.attempt:
            turn = await self._turn(delivery)
            if turn == "superseded":
                self._finish(delivery, events.SUPERSEDED, "superseded by a newer transition")
                self.scheduler.finished(delivery)
                return
            if turn == "wait":
                self.scheduler.retry(delivery, TURN_WAIT)
                return
        result = await self.attempter.run(delivery)
        delivery.status_code = result.status_code
        try:
            if result.outcome == events.RETRYING:
                if self.scheduler.retry(delivery, result.retry_in):
                    self.announcer.announce(
                        delivery.event(result.outcome, result.error, result.retry_in)
                    )
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

    async def _turn(self, delivery: Delivery) -> str:
        """Ask the journal whether another process holds an older transition of this
        alarm to this action (wait for it) or has accepted a newer one (superseded).

        Within a process the scheduler knows this already; across processes the
        journal does. Asked before every retry, and before every attempt while
        other processes share the journal. A delivery that waited
        ``MAX_TURN_WAIT`` seconds goes anyway, so a stuck neighbour cannot hold
        it for ever.
        """
        if self.journal is None:
            return "go"
        waited = self._turn_waited.get(delivery.request_id, 0.0)
        try:
            turn = await self.journal_pool.run(self.journal.turn, delivery.request_id)
        except Exception as exc:
            LOG.warning(
                "Alarm %s: could not ask the journal about newer or older transitions (%s)",
                delivery.key[0],
                exc,
            )
            turn = "go"
        if turn == "wait" and waited < MAX_TURN_WAIT:
            self._turn_waited[delivery.request_id] = waited + TURN_WAIT
            return "wait"
        self._turn_waited.pop(delivery.request_id, None)
        return "superseded" if turn == "superseded" else "go"

    def _conclude(self, delivery: Delivery, outcome: str, error: str) -> None:
        """A final outcome reached without an attempt (resume found it stale)."""
        with self._pending_cond:
            self._pending += 1
        self._finish(delivery, outcome, error)

    def _supersede(self, delivery: Delivery) -> None:
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
                return self._pending_cond.wait_for(lambda: self._pending == 0, timeout)
            finally:
                self._waiters -= 1

    def stop(self, grace: float = 0.0) -> list[Delivery]:
        """Stop retrying, let running attempts finish within grace, return the unfinished."""
        self.close_intake()
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
