"""Stage 4: one attempt of one delivery, with a deadline, whatever the plugin does.

A plugin offers ``notify_async`` (run on the engine's event loop: an
in-flight attempt then costs memory, not a thread) or the blocking ``notify``
(run in a bounded thread pool beside the loop). Either way the attempt ends
within its deadline (a blocking call past it is abandoned as failed, not
retried: its thread runs on, and a retry could overtake it), and whatever
the plugin raises — any type, any arguments, ``SystemExit`` included —
becomes an outcome here: nothing leaves this module but an ``Outcome``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
from concurrent import futures

from oslo_config import cfg

from ceilo_notifier import events, masking, metrics, notifiers, retry
from ceilo_notifier.delivery import Delivery

# What an attempt says of its endpoint's health (endpoints.py reads it).
ANSWERED = "answered"  # the receiver answered: delivered, or refused for good
FAILED = "failed"  # connection error, 408, 425, 5xx...
OVERLOADED = "overloaded"  # 429, or no complete answer in time
NEUTRAL = "neutral"  # nothing reached the receiver, or our own refusal


@dataclasses.dataclass(frozen=True)
class Outcome:
    outcome: str
    status_code: int | None = None
    error: str | None = None
    retry_in: float | None = None
    health: str = ANSWERED
    retry_after: float | None = None


class Abandoned(notifiers.DeliveryError):
    """A blocking call past its deadline, left to run on in its thread."""


def health_of(exc: BaseException, status: int | None) -> str:
    """What a failed attempt says of its endpoint: ANSWERED, FAILED, OVERLOADED or NEUTRAL."""
    if status is not None:
        if status == 429:
            return OVERLOADED
        if status in notifiers.RETRYABLE_STATUS or status >= 500:
            return FAILED
        return ANSWERED
    if isinstance(exc, (notifiers.TimedOut, Abandoned, asyncio.TimeoutError)):
        return OVERLOADED
    if isinstance(exc, notifiers.NotReached):
        return NEUTRAL
    if isinstance(exc, notifiers.RetryableError):
        return FAILED
    return NEUTRAL


def _text(value: object) -> str:
    """str(value), even for objects whose __str__ raises."""
    try:
        return str(value)
    except BaseException:  # noqa: BLE001 - a plugin's object may fail in any way
        return f"<unprintable {type(value).__name__}>"


def describe(exc: BaseException, plugin: object) -> str:
    """The cause of a failed attempt, for the log and the journal."""
    if isinstance(exc, notifiers.DeliveryError):
        reason = getattr(exc, "reason", None)
        return _text(reason if reason is not None else exc)
    return f"plugin {type(plugin).__name__} raised {type(exc).__name__}: {_text(exc)}"


def _number(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _status(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def is_async(plugin: notifiers.AlarmNotifier) -> bool:
    return inspect.iscoroutinefunction(getattr(plugin, "notify_async", None))


class Attempter:
    """Runs attempts and turns whatever happens into an Outcome."""

    def __init__(self, conf: cfg.ConfigOpts, policy: retry.RetryPolicy) -> None:
        self.policy = policy
        self.http_timeout = conf.alarm.rest_notifier_timeout
        self.plugin_timeout = conf.alarm.plugin_timeout
        self.pool_size = conf.alarm.plugin_pool_size
        self.pool = futures.ThreadPoolExecutor(self.pool_size, thread_name_prefix="plugin")
        self._threads: asyncio.Semaphore | None = None
        self._async: dict[int, bool] = {}

    def _deadline(self, plugin: notifiers.AlarmNotifier) -> float:
        return float(getattr(plugin, "attempt_timeout", None) or self.plugin_timeout)

    async def run(self, delivery: Delivery) -> Outcome:
        """One attempt; the engine's cancellation (at stop) is the only exception out."""
        plugin = delivery.plugin
        delivery.attempt += 1
        if delivery.first_attempt is None:
            delivery.first_attempt = time.monotonic()
        start = time.monotonic()
        deadline = self._deadline(plugin)
        metrics.IN_FLIGHT.inc()
        asynchronous = self._async.setdefault(id(plugin), is_async(plugin))
        try:
            if asynchronous:
                call = plugin.notify_async(delivery.url, delivery.notification)
            else:
                call = await self._in_thread(plugin.notify, delivery.url, delivery.notification)
            status = await asyncio.wait_for(call, deadline)
            result = Outcome(events.DELIVERED, _status(status))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the engine is stopping: the delivery stays unfinished
            result = self._failed(delivery, asyncio.CancelledError(), retryable=False)
        except asyncio.TimeoutError:
            if asynchronous:  # cancelled for good: trying again is safe
                error = notifiers.TimedOut(f"no complete answer within {deadline:g} s")
                result = self._failed(delivery, error, retryable=True)
            else:  # its thread runs on: another call could overtake it
                error = Abandoned(
                    f"plugin {type(plugin).__name__} did not return within {deadline:g} s; "
                    "attempt abandoned"
                )
                result = self._failed(delivery, error, retryable=False)
        except notifiers.RetryableError as exc:
            result = self._failed(delivery, exc, retryable=True)
        except BaseException as exc:  # noqa: BLE001 - contained at the plugin boundary
            result = self._failed(delivery, exc, retryable=False)
        finally:
            metrics.IN_FLIGHT.dec()
            delivery.duration = time.monotonic() - start
        return result

    async def _in_thread(self, fn, *args) -> asyncio.Future:
        """Start fn in a thread of the pool once one is free; its future.

        The deadline counts from here, not from the wait for a thread, and a
        thread is counted free only when its call returns (an abandoned call
        still holds its thread).
        """
        loop = asyncio.get_running_loop()
        if self._threads is None:
            self._threads = asyncio.Semaphore(self.pool_size)
        threads = self._threads
        try:
            await asyncio.wait_for(threads.acquire(), self.plugin_timeout)
        except asyncio.TimeoutError:
            # Nothing ran: trying again later is safe.
            raise notifiers.NotReached(
                f"all {self.pool_size} plugin threads busy for {self.plugin_timeout:g} s"
            ) from None

        def freed(_future: futures.Future) -> None:
            try:
                loop.call_soon_threadsafe(threads.release)
            except RuntimeError:  # the loop is closed: the engine has stopped
                pass

        try:
            running = self.pool.submit(fn, *args)
        except BaseException:
            threads.release()
            raise
        running.add_done_callback(freed)
        return asyncio.wrap_future(running, loop=loop)

    def _failed(self, delivery: Delivery, exc: BaseException, retryable: bool) -> Outcome:
        error = masking.mask_text(describe(exc, delivery.plugin))
        status = _status(getattr(exc, "status_code", None))
        health = health_of(exc, status)
        if not retryable:
            return Outcome(events.FAILED, status, error, health=health)
        retry_after = _number(getattr(exc, "retry_after", None))
        delay = self.policy.next_delay(
            delivery.attempt,
            time.monotonic() - (delivery.first_attempt or time.monotonic()),
            retry_after,
        )
        outcome = events.FAILED if delay is None else events.RETRYING
        return Outcome(outcome, status, error, delay, health, retry_after)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
