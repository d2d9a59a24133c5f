"""The RPC endpoint: ``notify_alarm`` casts, validated and handed to the engine.

Nothing a caller sends may escape from here as an exception: oslo.messaging
would log a traceback per cast and the caller, who only casts, would never
know. Every rejection is one log line naming the alarm and the cause.
"""

from __future__ import annotations

import oslo_messaging
from oslo_config import cfg
from oslo_log import log

from ceilo_notifier import intake
from ceilo_notifier.delivery import Delivery
from ceilo_notifier.engine import Engine, JournalUnavailable

LOG = log.getLogger(__name__)


class NotifierEndpoint:
    """``notify_alarm`` v1.0."""

    target = oslo_messaging.Target(version="1.0")

    def __init__(self, conf: cfg.ConfigOpts, engine: Engine) -> None:
        self.validator = intake.AlarmValidator(conf)
        self.engine = engine

    def notify_alarm(self, context: dict | None, data: object) -> None:
        """The RPC method; casts carry no answer back, so it returns nothing."""
        self.handle(data)

    def handle(self, data: object, strict: bool = False) -> list[Delivery]:
        """Validate and accept one alarm; returns the deliveries scheduled."""
        return self.handle_many([data], strict)

    def handle_many(self, batch: list[object], strict: bool = False) -> list[Delivery]:
        """Validate every alarm, then accept the valid ones together.

        With ``strict``, a journal failure propagates (JournalUnavailable) and
        nothing is scheduled, so that the caller can requeue the messages
        instead of acknowledging them.
        """
        alarms = self.validator.validate_many(batch)
        if not alarms:
            return []
        try:
            return self.engine.accept(alarms, strict=strict)
        except JournalUnavailable:
            raise
        except Exception:
            LOG.exception("Alarm %s: accepting failed", ", ".join(n.alarm_id for n, _ in alarms))
            return []
