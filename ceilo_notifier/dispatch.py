"""Hand each action of an alarm to its plugin, in a bounded pool, and retry.

Three rules shape this module:

* the consumer thread never waits on a webhook: ``dispatch`` only queues;
* one slow or dead webhook host delays only itself: each host has a small
  number of pool slots (``per_host_concurrency``) and its own waiting line,
  so it can never take the whole pool;
* deliveries of one alarm to one action keep their order, and a delivery
  waiting for its retry is superseded by a newer transition of the same
  alarm to the same action (a receiver never gets a stale ``alarm`` after
  ``ok``).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from urllib import parse

from oslo_config import cfg
from oslo_log import log
from stevedore import extension

from ceilo_notifier import events, masking, metrics, notifiers, retry
from ceilo_notifier.journal import Journal, Record
from ceilo_notifier.notification import AlarmNotification

LOG = log.getLogger(__name__)

Listener = Callable[[events.DeliveryEvent], None]

# Life of a delivery inside the dispatcher.
_QUEUED, _RUNNING, _WAITING, _DONE = "queued", "running", "waiting", "done"


# Guards the lazy creation of Delivery._done: few deliveries are ever waited for.
_WAITERS_LOCK = threading.Lock()


class Delivery:
    """One notification on its way to one action, across all its attempts."""

    def __init__(
        self,
        notification: AlarmNotification,
        action: str,
        url: parse.SplitResult,
        plugin: notifiers.AlarmNotifier,
        request_id: str | None = None,
        attempt: int = 0,
    ) -> None:
        self.request_id = request_id or f"req-{uuid.uuid4()}"
        self.notification = notification.for_delivery(self.request_id)
        self.action = action
        self.masked_action = masking.mask_url(action)
        self.url = url
        self.plugin = plugin
        self.attempt = attempt
        self.first_attempt: float | None = None
        self.state = _QUEUED
        self.outcome: str | None = None
        self.status_code: int | None = None
        self.error: str | None = None
        self.duration: float | None = None
        self._done: threading.Event | None = None  # made only if someone waits

    @property
    def key(self) -> tuple[str, str]:
        return (self.notification.alarm_id, self.action)

    @property
    def host(self) -> str:
        return f"{self.url.scheme}://{self.url.hostname or ''}:{self.url.port or ''}"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the delivery has a final outcome; True if it has."""
        with _WAITERS_LOCK:
            if self.outcome is not None:
                return True
            if self._done is None:
                self._done = threading.Event()
            done = self._done
        return done.wait(timeout)

    def _finished(self) -> None:
        with _WAITERS_LOCK:
            if self._done is not None:
                self._done.set()

    def event(
        self, outcome: str, error: str | None = None, next_attempt_in: float | None = None
    ) -> events.DeliveryEvent:
        return events.DeliveryEvent(
            alarm_id=self.notification.alarm_id,
            action=self.masked_action,
            scheme=self.url.scheme,
            outcome=outcome,
            attempt=self.attempt,
            request_id=self.request_id,
            status_code=self.status_code,
            duration=self.duration,
            error=error,
            next_attempt_in=next_attempt_in,
            alarm_name=self.notification.alarm_name,
            severity=self.notification.severity,
            previous=self.notification.previous,
            current=self.notification.current,
        )

    def journal_row(self) -> dict:
        return {
            "request_id": self.request_id,
            "alarm_id": self.notification.alarm_id,
            "action": self.action,
            "action_masked": self.masked_action,
            "scheme": self.url.scheme,
            "notification": self.notification.body(),
            "attempts": self.attempt,
        }


class JournalUnavailable(Exception):
    """The deliveries could not be written to the journal before their first attempt."""


class _KeyLine:
    """Deliveries of one alarm to one action: the current one, then the rest in order."""

    __slots__ = ("current", "pending")

    def __init__(self, current: Delivery) -> None:
        self.current = current
        self.pending: collections.deque[Delivery] = collections.deque()


class _HostLine:
    __slots__ = ("active", "waiting")

    def __init__(self) -> None:
        self.active = 0
        self.waiting: collections.deque[Delivery] = collections.deque()


class _RetryTimer(threading.Thread):
    """One thread that wakes deliveries whose backoff has elapsed."""

    def __init__(self, fire: Callable[[Delivery], None]) -> None:
        super().__init__(name="delivery-retry-timer", daemon=True)
        self._fire = fire
        self._heap: list[tuple[float, int, Delivery]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False

    def schedule(self, delay: float, delivery: Delivery) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), delivery))
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, delivery = heapq.heappop(self._heap)
            self._fire(delivery)


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


class Dispatcher:
    """Turns (alarm, actions) into deliveries and drives them to a final outcome."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        listeners: Iterable[Listener] = (),
        plugins: dict[str, notifiers.AlarmNotifier] | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.conf = conf
        self.journal = journal
        self.plugins = load_plugins(conf) if plugins is None else plugins
        self.listeners = list(listeners)
        self.policy = retry.RetryPolicy.from_conf(conf)
        self.per_host = conf.alarm.per_host_concurrency
        self._pool = futures.ThreadPoolExecutor(
            conf.alarm.dispatch_pool_size, thread_name_prefix="delivery"
        )
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._keys: dict[tuple[str, str], _KeyLine] = {}
        self._hosts: dict[str, _HostLine] = collections.defaultdict(_HostLine)
        self._running = 0
        self._timer = _RetryTimer(self._retry_due)
        self._timer.start()
        self._stopping = False

    # -- intake -------------------------------------------------------------

    def prepare(
        self, notification: AlarmNotification, action: object, request_id: str | None = None
    ) -> Delivery | None:
        """Check one action and find its plugin; log and drop what cannot be delivered."""
        alarm_id = notification.alarm_id
        if not isinstance(action, str):
            self._drop(
                alarm_id,
                repr(action)[:200],
                None,
                f"action is a {type(action).__name__}, not a string",
                request_id=request_id,
            )
            return None
        masked = masking.mask_url(action)
        max_len = self.conf.alarm.max_action_length
        if len(action) > max_len:
            self._drop(
                alarm_id,
                masked[:200] + "...",
                None,
                f"action is {len(action)} characters long, more than {max_len}",
                request_id=request_id,
            )
            return None
        try:
            url = parse.urlsplit(action.strip())
            url.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            self._drop(alarm_id, masked, None, f"unparsable URL: {exc}", request_id=request_id)
            return None
        if not url.scheme:
            self._drop(alarm_id, masked, None, "URL has no scheme", request_id=request_id)
            return None
        plugin = self.plugins.get(url.scheme.lower())
        if plugin is None:
            known = ", ".join(sorted(self.plugins))
            self._drop(
                alarm_id,
                masked,
                url.scheme,
                f"unknown scheme {url.scheme!r} (installed: {known})",
                request_id=request_id,
            )
            return None
        return Delivery(notification, action.strip(), url, plugin, request_id)

    def dispatch(
        self, notification: AlarmNotification, actions: Sequence[object], strict: bool = False
    ) -> list[Delivery]:
        """Journal one delivery per valid action, queue them, and return at once."""
        return self.dispatch_many([(notification, actions)], strict)

    def dispatch_many(
        self,
        alarms: Iterable[tuple[AlarmNotification, Sequence[object]]],
        strict: bool = False,
    ) -> list[Delivery]:
        """Like dispatch, for several alarms journaled in one transaction.

        :param strict: raise JournalUnavailable, queueing nothing, when the
            journal cannot be written (the caller can then requeue the
            message); otherwise log it and deliver anyway, since a delivery
            without a record beats none.
        """
        deliveries = [
            d
            for notification, actions in alarms
            for d in (self.prepare(notification, a) for a in actions)
            if d
        ]
        if self.journal is not None and deliveries:
            try:
                self.journal.record_new([d.journal_row() for d in deliveries])
            except Exception as exc:
                cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
                if strict:
                    raise JournalUnavailable(f"{type(exc).__name__}: {cause}") from exc
                LOG.error(
                    "Alarm %s: journal unavailable (%s); delivering %d action(s) without a record",
                    ", ".join(sorted({d.notification.alarm_id for d in deliveries})),
                    cause,
                    len(deliveries),
                )
        for delivery in deliveries:
            self.submit(delivery)
        return deliveries

    def resume(self, records: Iterable[Record]) -> list[Delivery]:
        """Continue deliveries that were journaled but not finished."""
        resumed = []
        now = time.time()
        for record in records:
            notification = AlarmNotification(**record.notification)
            # A plugin gone since then drops it, with its request id: the
            # journal marks it dropped instead of resuming it at every start.
            delivery = self.prepare(notification, record.action, record.request_id)
            if delivery is None:
                continue
            delivery.attempt = record.attempts
            age = max(0.0, now - record.created_at.timestamp())
            delivery.first_attempt = time.monotonic() - age
            delay = 0.0
            if record.next_attempt_at is not None:
                delay = max(0.0, record.next_attempt_at.timestamp() - now)
            self.submit(delivery, delay)
            resumed.append(delivery)
        return resumed

    def submit(self, delivery: Delivery, delay: float = 0.0) -> None:
        """Queue a delivery behind earlier ones of its alarm and action.

        A newer delivery supersedes one that is waiting for its retry.
        """
        with self._lock:
            line = self._keys.get(delivery.key)
            if line is None:
                self._keys[delivery.key] = _KeyLine(delivery)
                self._start(delivery, delay)
            elif line.current.state == _WAITING:
                self._supersede(line.current)
                line.current = delivery
                self._start(delivery, delay)
            else:
                line.pending.append(delivery)

    # -- scheduling (called with the lock held) -----------------------------

    def _start(self, delivery: Delivery, delay: float) -> None:
        if delay > 0:
            delivery.state = _WAITING
            self._timer.schedule(delay, delivery)
        else:
            self._ready(delivery)

    def _ready(self, delivery: Delivery) -> None:
        delivery.state = _QUEUED
        host = self._hosts[delivery.host]
        if host.active < self.per_host:
            host.active += 1
            self._running += 1
            self._pool.submit(self._attempt, delivery)
        else:
            host.waiting.append(delivery)

    def _release_host(self, delivery: Delivery) -> None:
        host = self._hosts[delivery.host]
        host.active -= 1
        self._running -= 1
        if not self._running:
            self._idle.notify_all()
        if host.waiting:
            self._ready(host.waiting.popleft())
        elif host.active == 0:
            del self._hosts[delivery.host]

    def _next_of_key(self, delivery: Delivery) -> None:
        line = self._keys[delivery.key]
        if line.pending:
            line.current = line.pending.popleft()
            self._ready(line.current)
        else:
            del self._keys[delivery.key]
            if not self._keys:
                self._idle.notify_all()

    def _supersede(self, delivery: Delivery) -> None:
        LOG.info(
            "Alarm %s: delivery %s to %s superseded by a newer transition",
            delivery.notification.alarm_id,
            delivery.request_id,
            delivery.masked_action,
        )
        self._finish(delivery, events.SUPERSEDED, "superseded by a newer transition")

    # -- attempts ------------------------------------------------------------

    def _attempt(self, delivery: Delivery) -> None:
        delivery.state = _RUNNING
        delivery.attempt += 1
        if delivery.first_attempt is None:
            delivery.first_attempt = time.monotonic()
        start = time.monotonic()
        delay = None
        error = None
        metrics.IN_FLIGHT.inc()
        try:
            delivery.status_code = delivery.plugin.notify(delivery.url, delivery.notification)
            outcome = events.DELIVERED
        except notifiers.RetryableError as exc:
            delivery.status_code = exc.status_code
            error = masking.mask_text(exc.reason)
            delay = self.policy.next_delay(
                delivery.attempt, time.monotonic() - delivery.first_attempt, exc.retry_after
            )
            outcome = events.FAILED if delay is None else events.RETRYING
        except notifiers.DeliveryError as exc:
            delivery.status_code = exc.status_code
            error = masking.mask_text(exc.reason)
            outcome = events.FAILED
        except Exception as exc:
            delivery.status_code = None
            error = masking.mask_text(
                f"plugin {type(delivery.plugin).__name__} raised {type(exc).__name__}: {exc}"
            )
            outcome = events.FAILED
        metrics.IN_FLIGHT.dec()
        delivery.duration = time.monotonic() - start
        self._log_attempt(delivery, outcome, error, delay)
        with self._lock:
            self._release_host(delivery)
            if outcome == events.RETRYING:
                line = self._keys[delivery.key]
                if line.pending:
                    self._supersede(delivery)
                    line.current = line.pending.popleft()
                    self._ready(line.current)
                    return
                delivery.state = _WAITING
                self._emit(delivery.event(outcome, error, delay))
                self._timer.schedule(delay, delivery)
                return
            self._finish(delivery, outcome, error)
            self._next_of_key(delivery)

    def _retry_due(self, delivery: Delivery) -> None:
        with self._lock:
            if delivery.state == _WAITING and not self._stopping:
                self._ready(delivery)

    def _finish(self, delivery: Delivery, outcome: str, error: str | None) -> None:
        delivery.state = _DONE
        delivery.outcome = outcome
        delivery.error = error
        self._emit(delivery.event(outcome, error))
        delivery._finished()

    def _drop(
        self,
        alarm_id: str,
        masked_action: str,
        scheme: str | None,
        cause: str,
        request_id: str | None = None,
    ) -> None:
        LOG.error("Alarm %s: action %s dropped: %s", alarm_id, masked_action, cause)
        self._emit(
            events.DeliveryEvent(
                alarm_id=alarm_id,
                action=masked_action,
                scheme=scheme,
                outcome=events.DROPPED,
                attempt=0,
                request_id=request_id,
                error=cause,
            )
        )

    def _log_attempt(
        self, delivery: Delivery, outcome: str, error: str | None, delay: float | None
    ) -> None:
        args = {
            "alarm": delivery.notification.alarm_id,
            "action": delivery.masked_action,
            "attempt": delivery.attempt,
            "status": delivery.status_code,
            "ms": delivery.duration * 1000,
            "error": error,
            "delay": delay,
            "rid": delivery.request_id,
        }
        if outcome == events.DELIVERED:
            LOG.info(
                "Alarm %(alarm)s delivered to %(action)s (status %(status)s, attempt "
                "%(attempt)d, %(ms).0f ms, %(rid)s)",
                args,
            )
        elif outcome == events.RETRYING:
            LOG.warning(
                "Alarm %(alarm)s: attempt %(attempt)d to %(action)s failed: %(error)s; "
                "retrying in %(delay).1f s (%(rid)s)",
                args,
            )
        else:
            LOG.error(
                "Alarm %(alarm)s: delivery to %(action)s failed after %(attempt)d "
                "attempt(s): %(error)s (%(rid)s)",
                args,
            )

    def _emit(self, event: events.DeliveryEvent) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                LOG.exception(
                    "Event listener %r failed on %s for alarm %s",
                    listener,
                    event.outcome,
                    event.alarm_id,
                )

    # -- shutdown ------------------------------------------------------------

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no delivery is queued, running or waiting for a retry."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._keys:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def stop(self, grace: float = 0.0) -> list[Delivery]:
        """Stop retrying, let running attempts finish within grace, return the unfinished."""
        with self._lock:
            self._stopping = True
        self._timer.stop()
        deadline = time.monotonic() + grace
        with self._lock:
            while self._running and (remaining := deadline - time.monotonic()) > 0:
                self._idle.wait(remaining)
            unfinished = [d for line in self._keys.values() for d in (line.current, *line.pending)]
        self._pool.shutdown(wait=False, cancel_futures=True)
        for plugin in self.plugins.values():
            try:
                plugin.close()
            except Exception:
                LOG.exception("Closing notifier plugin %r failed", plugin)
        return unfinished
