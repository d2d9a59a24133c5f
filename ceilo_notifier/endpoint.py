"""The RPC endpoint: check what a caller sent, then hand it to the dispatcher.

Nothing a caller sends may escape from here as an exception: oslo.messaging
would log a traceback per cast and the caller, who only casts, would never
know. Every rejection is one log line naming the alarm and the cause.
"""

from __future__ import annotations

import json
from typing import Any

import oslo_messaging
from oslo_config import cfg
from oslo_log import log

from ceilo_notifier import masking
from ceilo_notifier.dispatch import Delivery, Dispatcher, JournalUnavailable
from ceilo_notifier.notification import AlarmNotification

LOG = log.getLogger(__name__)

_TEXT_FIELDS = ("alarm_name", "severity", "previous", "current", "reason")


class InvalidAlarm(ValueError):
    """The cast cannot be turned into any delivery."""


def _alarm_label(data: object) -> str:
    if isinstance(data, dict):
        alarm_id = data.get("alarm_id")
        if alarm_id not in (None, ""):
            return masking.mask_text(str(alarm_id)[:200])
    return "<unknown>"


class AlarmValidator:
    """Turns the ``data`` of a cast into an AlarmNotification and its actions."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.opts = conf.alarm

    def _text(self, alarm: str, name: str, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            value = str(value)
        limit = self.opts.max_field_length
        if len(value) > limit:
            LOG.warning(
                "Alarm %s: field %s is %d characters long, truncated to %d",
                alarm,
                name,
                len(value),
                limit,
            )
            value = value[:limit]
        return value

    def _reason_data(self, alarm: str, value: object) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            LOG.warning(
                'Alarm %s: reason_data is a %s, not a dict; sent as {"value": ...}',
                alarm,
                type(value).__name__,
            )
            value = {"value": value}
        try:
            encoded = json.dumps(value)
        except (TypeError, ValueError) as exc:
            LOG.warning(
                "Alarm %s: reason_data is not JSON-serialisable (%s); "
                "unserialisable values sent as their text",
                alarm,
                exc,
            )
            value = json.loads(json.dumps(value, default=str, skipkeys=True))
            encoded = json.dumps(value)
        limit = self.opts.max_reason_data_size
        if len(encoded) > limit:
            LOG.warning(
                "Alarm %s: reason_data is %d bytes of JSON, more than %d; sent as an empty dict",
                alarm,
                len(encoded),
                limit,
            )
            return {}
        return value

    def validate(self, data: object) -> tuple[AlarmNotification, list[object]]:
        if not isinstance(data, dict):
            raise InvalidAlarm(f"data is a {type(data).__name__}, not a dict")
        alarm = _alarm_label(data)
        alarm_id = data.get("alarm_id")
        if alarm_id in (None, ""):
            raise InvalidAlarm("no alarm_id")
        actions = data.get("actions")
        if actions is None:
            raise InvalidAlarm("no actions")
        if isinstance(actions, str) or not isinstance(actions, (list, tuple)):
            raise InvalidAlarm(f"actions is a {type(actions).__name__}, not a list")
        if not actions:
            raise InvalidAlarm("actions is an empty list")
        limit = self.opts.max_actions
        if len(actions) > limit:
            LOG.error(
                "Alarm %s: %d actions, more than max_actions=%d; the last %d dropped",
                alarm,
                len(actions),
                limit,
                len(actions) - limit,
            )
            actions = actions[:limit]
        fields = {name: self._text(alarm, name, data.get(name)) for name in _TEXT_FIELDS}
        notification = AlarmNotification(
            alarm_id=self._text(alarm, "alarm_id", alarm_id),
            reason_data=self._reason_data(alarm, data.get("reason_data")),
            **fields,
        )
        return notification, list(actions)


class NotifierEndpoint:
    """``notify_alarm`` v1.0."""

    target = oslo_messaging.Target(version="1.0")

    def __init__(self, conf: cfg.ConfigOpts, dispatcher: Dispatcher) -> None:
        self.validator = AlarmValidator(conf)
        self.dispatcher = dispatcher

    def notify_alarm(self, context: dict | None, data: object) -> None:
        """The RPC method; casts carry no answer back, so it returns nothing."""
        self.handle(data)

    def handle(self, data: object, strict: bool = False) -> list[Delivery]:
        """Validate and dispatch one alarm; returns the deliveries queued."""
        return self.handle_many([data], strict)

    def handle_many(self, batch: list[object], strict: bool = False) -> list[Delivery]:
        """Validate every alarm, then dispatch the valid ones together.

        With ``strict``, a journal failure propagates (JournalUnavailable) and
        nothing is queued, so that the caller can requeue the messages instead
        of acknowledging them.
        """
        alarms = []
        for data in batch:
            try:
                alarms.append(self.validator.validate(data))
                continue
            except InvalidAlarm as exc:
                cause = str(exc)
            except Exception as exc:
                cause = f"unreadable ({type(exc).__name__}: {exc})"
            LOG.error("Alarm %s: notification rejected: %s", _alarm_label(data), cause)
        if not alarms:
            return []
        try:
            return self.dispatcher.dispatch_many(alarms, strict=strict)
        except JournalUnavailable:
            raise
        except Exception:
            LOG.exception("Alarm %s: dispatching failed", ", ".join(n.alarm_id for n, _ in alarms))
            return []
