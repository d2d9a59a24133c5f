"""Listening as aodh-notifier does: ``alarm.update`` notifications from aodh's evaluator.

aodh's evaluator publishes each transition as a notification (driver
messagingv2, publisher ``alarming.evaluator``, event type ``alarm.update``,
priority sample) on topic ``[alarm] notifier_topic`` of exchange
``[alarm] notifier_exchange``. With ``[alarm] notification_listener`` set,
the service consumes them in batches, next to its RPC server. A batch is
acknowledged only once its deliveries are in the journal; when the journal
cannot be written the batch is requeued and nothing of it is delivered.
"""

from __future__ import annotations

import time

import oslo_messaging
from oslo_config import cfg
from oslo_log import log
from oslo_messaging.notify import dispatcher as notify_dispatcher
from oslo_messaging.notify import listener as notify_listener

from ceilo_notifier import intake
from ceilo_notifier.consumers import rpc
from ceilo_notifier.engine import JournalUnavailable

LOG = log.getLogger(__name__)

EVENT_TYPE = "alarm.update"
REQUEUE_DELAY = 1.0


class AlarmUpdateEndpoint:
    filter_rule = oslo_messaging.NotificationFilter(event_type=r"^alarm\.update$")

    def __init__(self, endpoint: rpc.NotifierEndpoint, pool: str | None = None) -> None:
        self.endpoint = endpoint
        self.pool = pool or ""

    def _message_id(self, message: dict) -> str | None:
        """The notification's own id; each listener pool gets a copy to handle."""
        message_id = (message.get("metadata") or {}).get("message_id")
        return f"notification:{self.pool}:{message_id}" if message_id else None

    def sample(self, messages: list[dict]):
        try:
            self.endpoint.handle_many(
                [m["payload"] for m in messages],
                strict=True,
                message_ids=[self._message_id(m) for m in messages],
            )
            return oslo_messaging.NotificationResult.HANDLED
        except JournalUnavailable as exc:
            cause = str(exc)
        LOG.error(
            "Journal unavailable (%s); %d alarm notification(s) requeued in %g s",
            cause,
            len(messages),
            REQUEUE_DELAY,
        )
        # Not at once: a requeued batch would come straight back and hammer
        # a database that is down.
        time.sleep(REQUEUE_DELAY)
        return oslo_messaging.NotificationResult.REQUEUE


class JudgingListener(rpc.BoundedIntake, notify_listener.BatchNotificationServer):
    """oslo.messaging's batch notification server, with its intake bounded
    (``rpc.BoundedIntake``), reading each message alone first.

    Its dispatcher reads a whole batch in one go: a message it cannot read
    (a priority that is not a string, a body that is not a dict) raised for
    the batch, and the whole batch was requeued, again and again, its good
    messages with it. Such a message is one log line and acknowledged.
    """

    def _process_incoming(self, incoming):
        readable = []
        for message in incoming:
            try:
                self.dispatcher._extract_user_message(message)
                readable.append(message)
                continue
            except Exception as exc:
                cause = intake.unreadable(exc)
            # Logged outside the handler: oslo.log would add the exception again.
            body = getattr(message, "message", None)
            payload = body.get("payload") if isinstance(body, dict) else None
            LOG.error("Alarm %s: notification rejected: %s", intake.alarm_label(payload), cause)
            message.acknowledge()
        if readable:
            super()._process_incoming(readable)


def get_listener(
    conf: cfg.ConfigOpts,
    transport: oslo_messaging.Transport,
    endpoint: rpc.NotifierEndpoint,
    executor: str = "threading",
) -> oslo_messaging.MessageHandlingServer:
    opts = conf.alarm
    target = oslo_messaging.Target(topic=opts.notifier_topic, exchange=opts.notifier_exchange)
    rpc.log_bodies_that_are_not_dicts_in_one_line()
    # What oslo_messaging.get_batch_notification_listener builds, with the server above.
    dispatcher = notify_dispatcher.BatchNotificationDispatcher(
        [AlarmUpdateEndpoint(endpoint, opts.notification_listener_pool)], None
    )
    return JudgingListener(
        transport,
        [target],
        dispatcher,
        executor=None if executor == "threading" else executor,  # threading is the default
        allow_requeue=True,
        pool=opts.notification_listener_pool,
        batch_size=opts.batch_size,
        batch_timeout=rpc.batch_wait(opts.batch_timeout),
    )
