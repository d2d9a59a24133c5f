"""The RPC consumer: ``notify_alarm`` casts, validated and handed to the engine.

Nothing a caller sends may escape from here as an exception: oslo.messaging
would log a traceback per cast and the caller, who only casts, would never
know. Every rejection is one log line naming the alarm and the cause.

oslo.messaging's RPC server acknowledges a message as it arrives, before
dispatching it: a crash between the two loses the cast. ``JournalFirstServer``
acknowledges it once ``notify_alarm`` has returned, that is once its
deliveries are in the journal, and requeues it when they could not be
written. It is oslo.messaging's own server, listener and message classes,
composed differently, not a consumer written by hand.

What lies between the broker and the endpoint is bounded, so that a consumer
waiting for the engine's room does not pull the whole queue into memory: the
broker hands over at most ``rabbit_qos_prefetch_count`` unacknowledged
messages (``intake_prefetch`` sets it for the service's own transports unless
the operator did), and ``BoundedIntake`` makes the poll thread wait while every
executor thread has a batch, instead of queueing batches without end in the
executor (futurist's queue is unbounded).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Sequence

import oslo_messaging
from oslo_config import cfg
from oslo_log import log
from oslo_messaging._drivers import amqpdriver, impl_rabbit
from oslo_messaging._drivers import base as driver_base
from oslo_messaging._drivers import common as driver_common
from oslo_messaging._utils import version_is_compatible
from oslo_messaging.rpc import server as rpc_server

from ceilo_notifier import intake
from ceilo_notifier.delivery import Delivery, fanout_message_id
from ceilo_notifier.engine import Engine, JournalUnavailable

LOG = log.getLogger(__name__)

CAST_BATCH_WAIT = 0.02
# What "do not wait" (``[alarm] batch_timeout = 0``) becomes: oslo.messaging
# reads a batch timeout of 0 as none at all, waiting for a full batch for ever.
NO_BATCH_WAIT = 0.01


def batch_wait(seconds: float) -> float:
    """The batch timeout to hand oslo.messaging for ``seconds`` (0: do not wait)."""
    return max(seconds, NO_BATCH_WAIT)


class BadMessage(ValueError):
    """A message that no handler can read; the text says why."""


NOT_A_CAST = object()


def intake_prefetch(conf: cfg.ConfigOpts) -> int:
    """Make ``[oslo_messaging_rabbit] rabbit_qos_prefetch_count`` this service's
    default, unless the operator set it: a few batches, never more messages than
    ``max_pending_deliveries``. Returns the count in effect (0: unlimited)."""
    opts = conf.alarm
    prefetch = max(opts.batch_size, min(opts.max_pending_deliveries, 4 * opts.batch_size))
    conf.set_default("rabbit_qos_prefetch_count", prefetch, group="oslo_messaging_rabbit")
    return conf.oslo_messaging_rabbit.rabbit_qos_prefetch_count


class BoundedIntake:
    """A MessageHandlingServer mixin: the poll thread hands the executor a batch only
    when one of its threads is free, so batches never queue up in it."""

    def _on_incoming(self, incoming):
        slots = getattr(self, "_slots", None)
        if slots is None:
            workers = getattr(self._work_executor, "_max_workers", None) or 64
            slots = self._slots = threading.Semaphore(workers)
        slots.acquire()
        try:
            future = self._work_executor.submit(self._process_incoming, incoming)
        except BaseException:
            slots.release()
            raise
        future.add_done_callback(lambda _future: slots.release())


class NotifierEndpoint:
    """``notify_alarm`` v1.0."""

    target = oslo_messaging.Target(version="1.0")

    def __init__(self, conf: cfg.ConfigOpts, engine: Engine) -> None:
        self.validator = intake.AlarmValidator(conf)
        self.engine = engine
        self.batch_size = conf.alarm.batch_size
        self.batch_timeout = conf.alarm.batch_timeout

    def notify_alarm(self, context: dict | None, data: object) -> None:
        """The RPC method; casts carry no answer back, so it returns nothing."""
        self.handle(data)

    def handle(self, data: object, strict: bool = False) -> list[Delivery]:
        """Validate and accept one alarm; returns the deliveries scheduled."""
        return self.handle_many([data], strict)

    def handle_many(
        self,
        batch: list[object],
        strict: bool = False,
        message_ids: Sequence[str | None] | None = None,
    ) -> list[Delivery]:
        """Validate every alarm, then accept the valid ones together.

        With ``strict``, a journal failure propagates (JournalUnavailable) and
        nothing is scheduled, so that the caller can requeue the messages
        instead of acknowledging them. ``message_ids`` name the broker
        messages of the batch, so that one the broker delivers again is
        recognised in the journal.
        """
        alarms = self.validator.validate_many(batch, message_ids)
        if not alarms:
            return []
        try:
            return self.engine.accept(alarms, strict=strict)
        except JournalUnavailable:
            raise
        except Exception:
            LOG.exception("Alarm %s: accepting failed", ", ".join(n.alarm_id for n, _ in alarms))
            return []


class _NotADictLine(logging.Filter):
    """One line, not a traceback, for a message whose body is not a dict.

    oslo.messaging's rabbit driver cannot even build such a message: it logs
    the traceback of that and rejects it (the broker drops it).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info
        if (
            str(record.msg).startswith("Failed to process message")
            and exc
            and exc[2] is not None
            and _raised_building_a_message(exc[2])
        ):
            record.msg = "Alarm <unknown>: message rejected: the message is not a dict (%s: %s)"
            record.args = (exc[0].__name__, exc[1])
            record.exc_info = record.exc_text = None
        return True


def _raised_building_a_message(tb) -> bool:
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return code.co_name == "__init__" and code.co_filename.endswith("impl_rabbit.py")


def log_bodies_that_are_not_dicts_in_one_line() -> None:
    logger = getattr(impl_rabbit.LOG, "logger", impl_rabbit.LOG)
    if not any(isinstance(f, _NotADictLine) for f in logger.filters):
        logger.addFilter(_NotADictLine())


class _AckWhenToldListener(amqpdriver.AMQPListener):
    """The RPC queues' listener, with messages that are acknowledged when told.

    oslo.messaging's notification messages are those: ``acknowledge`` and
    ``requeue`` are queued for the consumer thread, as kombu needs.
    """

    message_cls = amqpdriver.NotificationAMQPIncomingMessage


class JournalFirstServer(BoundedIntake, rpc_server.RPCServer):
    """An RPC server that acknowledges a cast only after it was handled.

    Casts are taken in batches (``[alarm] batch_size``, waiting at most
    ``CAST_BATCH_WAIT`` s for a batch to fill), as aodh's notifications are: the ``notify_alarm``
    casts of a batch are validated and journaled together, in one
    transaction, then acknowledged together; anything else is dispatched
    one message at a time, as oslo.messaging would.

    ``fanout`` says whether this process consumes the fanout queue: of a
    host's workers only one does, so that a fanout cast reaches each host
    once (oslo.messaging would give every worker a fanout queue of its own).
    """

    fanout = True
    batch_size = 1
    batch_timeout = CAST_BATCH_WAIT
    endpoint: NotifierEndpoint | None = None

    def _create_listener(self):
        driver = self.transport._driver
        if not isinstance(driver, amqpdriver.AMQPDriverBase):
            LOG.warning(
                "Transport driver %s: casts are acknowledged on arrival, before they are journaled",
                type(driver).__name__,
            )
            return super()._create_listener()
        target = self._target
        if not (target.topic and target.server):
            raise oslo_messaging.InvalidTarget("a server needs a topic and a server", target)
        log_bodies_that_are_not_dicts_in_one_line()
        conn = driver._get_connection(driver_common.PURPOSE_LISTEN)
        listener = _AckWhenToldListener(driver, conn)
        exchange = driver._get_exchange(target)
        conn.declare_topic_consumer(exchange_name=exchange, topic=target.topic, callback=listener)
        conn.declare_topic_consumer(
            exchange_name=exchange, topic=f"{target.topic}.{target.server}", callback=listener
        )
        if self.fanout:
            conn.declare_fanout_consumer(target.topic, listener)
        return driver_base.PollStyleListenerAdapter(listener, self.batch_size, self.batch_timeout)

    def _cast_data(self, message) -> object:
        """The ``data`` of a ``notify_alarm`` cast, handled in batches here;
        ``NOT_A_CAST`` for any other message, dispatched as oslo.messaging would.

        :raises BadMessage: for a message that no handler can read.
        """
        body = message.message
        if not isinstance(body, dict):
            raise BadMessage(f"the message is a {type(body).__name__}, not a dict")
        if (
            self.endpoint is None
            or _wants_reply(message)
            or body.get("method") != "notify_alarm"
            or body.get("namespace") is not None
        ):
            return NOT_A_CAST
        args = body.get("args")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise BadMessage(f"args is a {type(args).__name__}, not a dict")
        version = body.get("version") or "1.0"
        try:
            compatible = version_is_compatible("1.0", version)
        except (AttributeError, TypeError, ValueError):
            raise BadMessage("version is not a version number") from None
        return args.get("data") if compatible else NOT_A_CAST

    def _process_incoming(self, incoming):
        # Each message is judged alone: one that cannot be read is one log
        # line and acknowledged, and its neighbours go on.
        casts, batch, others = [], [], []
        for message in incoming:
            cause = None
            try:
                data = self._cast_data(message)
            except BadMessage as exc:
                cause = str(exc)
            except Exception as exc:
                cause = intake.unreadable(exc)
            if cause is not None:
                # Logged outside the handler: oslo.log would add the exception again.
                LOG.error("Alarm %s: cast rejected: %s", _alarm_label(message), cause)
                message.acknowledge()
            elif data is NOT_A_CAST:
                others.append(message)
            else:
                casts.append(message)
                batch.append(data)
        if casts:
            self._handle_casts(casts, batch)
        for message in others:
            self._handle_one(message)

    def _message_id(self, message) -> str | None:
        """The cast's own id, which the broker keeps when it delivers it again.

        A fanout cast reaches every host with one id: on the fanout queue it
        is made the host's own, so that hosts sharing a journal each handle it.
        """
        unique_id = getattr(message, "unique_id", None)
        if not unique_id:
            return None
        raw = getattr(message.message, "_raw_message", None)
        exchange = (getattr(raw, "delivery_info", None) or {}).get("exchange") or ""
        if exchange.endswith("_fanout"):
            return fanout_message_id(unique_id, self._target.server)
        return f"rpc:{unique_id}"

    def _handle_casts(self, casts, batch: list[object]) -> None:
        try:
            self.endpoint.handle_many(batch, message_ids=[self._message_id(m) for m in casts])
        except JournalUnavailable as exc:
            LOG.error("Journal unavailable (%s); %d cast(s) requeued", exc, len(casts))
            for message in casts:
                message.requeue()
            return
        except Exception:
            # Acknowledged anyway: casts that fail to be handled would fail again.
            LOG.exception("%d cast(s) could not be handled", len(casts))
        for message in casts:
            message.acknowledge()

    def _handle_one(self, message) -> None:
        try:
            result = self.dispatcher.dispatch(message)
        except JournalUnavailable as exc:
            LOG.error("Journal unavailable (%s); the cast is requeued", exc)
            message.requeue()
            return
        except Exception:
            # Acknowledged anyway: a cast that fails to dispatch would fail again.
            LOG.exception("A cast could not be handled")
            result = None
        message.acknowledge()
        if _wants_reply(message):
            try:
                message.reply(result)
            except Exception:
                LOG.exception("Replying to an RPC call failed")


def _alarm_label(message) -> str:
    """The alarm id of a message, if it has one where a cast has it."""
    body = getattr(message, "message", None)
    args = body.get("args") if isinstance(body, dict) else None
    return intake.alarm_label(args.get("data") if isinstance(args, dict) else None)


def _wants_reply(message) -> bool:
    """A call, not a cast: its sender waits on a reply queue.

    Not ``msg_id``: oslo.messaging gives every incoming message one, casts included.
    """
    return bool(getattr(message, "reply_q", None))


def get_server(
    transport: oslo_messaging.Transport,
    target: oslo_messaging.Target,
    endpoint: NotifierEndpoint,
    executor: str = "threading",
    fanout: bool = True,
) -> oslo_messaging.MessageHandlingServer:
    # oslo.messaging warns whenever ``executor`` is passed; threading is its default.
    chosen = {} if executor == "threading" else {"executor": executor}
    server = oslo_messaging.get_rpc_server(
        transport, target, [endpoint], server_cls=JournalFirstServer, **chosen
    )
    server.fanout = fanout
    server.endpoint = endpoint
    server.batch_size = endpoint.batch_size
    # A cast waits at most this long for company: batches fill at once under
    # load, and a lone cast is not held back.
    server.batch_timeout = batch_wait(min(endpoint.batch_timeout, CAST_BATCH_WAIT))
    return server


class FanoutLock:
    """Held by the one worker of a host that consumes the fanout queue.

    An advisory lock on a file under ``state_path``: the kernel releases it
    when its holder dies, and the worker the parent starts in its place
    takes it.
    """

    def __init__(self, state_path: str, host: str) -> None:
        os.makedirs(state_path, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in host)
        self.path = os.path.join(state_path, f"fanout-{safe}.lock")
        self._file = None

    def acquire(self) -> bool:
        handle = open(self.path, "a+")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
