"""The ``message`` event dispatcher: final outcomes as notifications on the bus.

Event types ``alarm_action.deliver.end`` (INFO) and
``alarm_action.deliver.error`` (ERROR), publisher ``ceilo-notifier:<host>``.
Versioned payloads go to ``[notifications] versioned_notifications_topics``;
unversioned ones (a plain dict) to oslo.messaging's notification topics.
"""

from __future__ import annotations

import oslo_messaging
from oslo_config import cfg

from ceilo_notifier import dispatchers, events, payloads

END = "alarm_action.deliver.end"
ERROR = "alarm_action.deliver.error"
_ERROR_OUTCOMES = frozenset({events.FAILED, events.DROPPED})


def event_type(event: events.DeliveryEvent) -> str:
    return ERROR if event.outcome in _ERROR_OUTCOMES else END


class MessageBackend(dispatchers.QueuedBackend):
    """Publishes the final outcome of every delivery as an oslo.messaging notification.

    ``alarm_action.deliver.end`` or ``.error``, versioned or not as
    ``[notifications] notification_format`` says (see the notifications page).
    """

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self.transport = None
        self.versioned = None
        self.unversioned = None

    def start(self) -> None:
        conf = self.conf
        self.transport = oslo_messaging.get_notification_transport(conf)
        publisher = f"ceilo-notifier:{conf.host}"
        # Listing this dispatcher is the wish to publish: messagingv2 unless
        # oslo.messaging's own driver option says otherwise.
        driver = None if conf.oslo_messaging_notifications.driver else "messagingv2"
        fmt = conf.notifications.notification_format
        if fmt in ("versioned", "both"):
            self.versioned = oslo_messaging.Notifier(
                self.transport,
                publisher,
                driver=driver,
                topics=conf.notifications.versioned_notifications_topics,
            )
        if fmt in ("unversioned", "both"):
            self.unversioned = oslo_messaging.Notifier(self.transport, publisher, driver=driver)
        super().start()

    def write(self, batch: list[tuple[int, events.DeliveryEvent]]) -> None:
        for _, event in batch:
            if not event.final:
                continue
            kind = event_type(event)
            if self.versioned is not None:
                payload = payloads.AlarmActionPayload.from_event(event).to_primitive()
                self._send(self.versioned, kind, payload)
            if self.unversioned is not None:
                self._send(self.unversioned, kind, event.as_dict())

    @staticmethod
    def _send(notifier: oslo_messaging.Notifier, kind: str, payload: dict) -> None:
        if kind == ERROR:
            notifier.error({}, kind, payload)
        else:
            notifier.info({}, kind, payload)

    def stop(self) -> None:
        super().stop()
        if self.transport is not None:
            self.transport.cleanup()
            self.transport = None
