"""Stage 1 of a delivery: validate what a caller sent.

``AlarmValidator`` turns the ``data`` of a cast (or the payload of an
``alarm.update`` notification) into an ``AlarmNotification`` and its list of
actions; ``ActionChecker`` turns each action into a ``Delivery`` bound to its
plugin. Whatever cannot be delivered stops here with one log line naming the
alarm and the cause (SPEC 4) and a ``dropped`` event; the rest of the alarm
goes on.

Code points the journal's database cannot store (NUL, which PostgreSQL
refuses, and lone surrogates, which no UTF-8 encoder writes; JSON's
``"\\u0000"`` and ``"\\ud800"`` decode to them) never get past here, since a
refused journal write would requeue the message for ever or deliver without
a record. In the keys of a delivery, ``alarm_id`` and the action URL, they
refuse that alarm or that action: replaced, they could name another alarm or
another receiver. In free text (``alarm_name``, ``severity``, ``previous``,
``current``, ``reason``, the strings and keys of ``reason_data``) they are
replaced by U+FFFD with one warning per field, as an over-long field is
truncated: a transition is worth more than a few characters of its text.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from oslo_config import cfg
from oslo_log import log

from ceilo_notifier import actions, events, journal, masking, notifiers, templates
from ceilo_notifier.delivery import Delivery
from ceilo_notifier.notification import AlarmNotification

LOG = log.getLogger(__name__)

_TEXT_FIELDS = ("alarm_name", "severity", "previous", "current", "reason")


# How json.dumps writes NUL and lone (or any) surrogates: a cheap test before a walk.
_ESCAPED_UNSTORABLE = re.compile(r"\\u(?:0000|d[89a-f])")


def _unstorable_in(value: object) -> str | None:
    """The first code point the journal cannot store in a JSON value's strings and keys."""
    if isinstance(value, str):
        return masking.unstorable(value)
    if isinstance(value, dict):
        value = [item for pair in value.items() for item in pair]
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _unstorable_in(item)
            if found:
                return found
    return None


def _replace_unstorable(value: object) -> object:
    if isinstance(value, str):
        return masking.replace_unstorable(value)
    if isinstance(value, dict):
        return {_replace_unstorable(k): _replace_unstorable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_replace_unstorable(item) for item in value]
    return value


class InvalidAlarm(ValueError):
    """The cast cannot be turned into any delivery."""


def alarm_label(data: object) -> str:
    """The alarm id of a caller's data, short and masked, for a log line."""
    if isinstance(data, dict):
        alarm_id = data.get("alarm_id")
        if alarm_id not in (None, ""):
            return masking.mask_text(str(alarm_id)[:200])
    return "<unknown>"


def unreadable(exc: Exception) -> str:
    """The cause of a rejection for an unexpected error reading what a caller sent."""
    return f"unreadable ({type(exc).__name__}: {exc})"


class AlarmValidator:
    """Turns the ``data`` of a cast into an AlarmNotification and its actions."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.opts = conf.alarm

    def _text(self, alarm: str, name: str, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            value = str(value)
        value = self._storable(alarm, name, value)
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

    def _storable(self, alarm: str, name: str, value: str) -> str:
        bad = masking.unstorable(value)
        if bad is None:
            return value
        LOG.warning(
            "Alarm %s: field %s contains %s, which the journal cannot store; "
            "such code points replaced by U+FFFD",
            alarm,
            name,
            bad,
        )
        return masking.replace_unstorable(value)

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
        if _ESCAPED_UNSTORABLE.search(encoded):
            found = _unstorable_in(value)
            if found:
                LOG.warning(
                    "Alarm %s: field reason_data contains %s, which the journal cannot "
                    "store; such code points replaced by U+FFFD",
                    alarm,
                    found,
                )
                value = _replace_unstorable(value)
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
        alarm = alarm_label(data)
        alarm_id = data.get("alarm_id")
        if alarm_id in (None, ""):
            raise InvalidAlarm("no alarm_id")
        if not isinstance(alarm_id, str):
            alarm_id = str(alarm_id)
        bad = masking.unstorable(alarm_id)
        if bad:
            # Replaced, two alarms could become one: refused instead.
            raise InvalidAlarm(f"alarm_id contains {bad}, which the journal cannot store")
        if len(alarm_id) > journal.ALARM_ID_LENGTH:
            # Truncated, two alarms could become one: refused instead.
            raise InvalidAlarm(
                f"alarm_id is {len(alarm_id)} characters long, more than {journal.ALARM_ID_LENGTH}"
            )
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

    def validate_many(
        self, batch: list[object], message_ids: Sequence[str | None] | None = None
    ) -> list[tuple[AlarmNotification, list[object]]]:
        """Every valid alarm of a batch; each invalid one is one log line.

        ``message_ids`` (one per item of the batch) name the broker messages
        that carried them.
        """
        alarms = []
        for data, message_id in zip(batch, message_ids or [None] * len(batch), strict=True):
            try:
                notification, actions = self.validate(data)
                if message_id and masking.unstorable(message_id):
                    # Request ids are derived from it (hashed as UTF-8).
                    message_id = message_id.encode("utf-8", "backslashreplace").decode()
                if message_id:
                    notification = dataclasses.replace(notification, message_id=message_id)
                alarms.append((notification, actions))
                continue
            except InvalidAlarm as exc:
                cause = str(exc)
            except Exception as exc:
                cause = unreadable(exc)
            LOG.error("Alarm %s: notification rejected: %s", alarm_label(data), cause)
        return alarms


class ActionChecker:
    """Checks one action URL and binds it to the plugin of its scheme."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        plugins: dict[str, notifiers.AlarmNotifier],
        announce: Callable[[events.DeliveryEvent], None],
    ) -> None:
        self.max_len = conf.alarm.max_action_length
        self.plugins = plugins
        self.announce = announce
        self.templates = templates.get(conf)

    def check(
        self, notification: AlarmNotification, action: object, request_id: str | None = None
    ) -> Delivery | None:
        """The delivery of one action, or None (logged and announced as dropped)."""
        alarm_id = notification.alarm_id
        if not isinstance(action, str):
            masked = repr(action)[:200]
        elif len(action) > self.max_len:
            masked = masking.mask_url(action)[:200] + "..."
        else:
            masked = masking.mask_url(action)
        if isinstance(action, str):
            # Written to the journal with the dropped event: escaped, a NUL or a
            # lone surrogate in it cannot make the database refuse the event.
            masked = masking.escape_control(masked)
        try:
            url = actions.parse(action, self.max_len)
        except actions.InvalidAction as exc:
            return self._drop(alarm_id, masked, None, str(exc), request_id)
        plugin = self.plugins.get(url.scheme.lower())
        if plugin is None:
            cause = str(actions.unknown_scheme(url.scheme, self.plugins))
            return self._drop(alarm_id, masked, url.scheme, cause, request_id)
        if getattr(plugin, "supports_templates", False) is True:
            try:
                self.templates.check_action(url)
            except ValueError as exc:
                return self._drop(alarm_id, masked, url.scheme, str(exc), request_id)
        return Delivery(notification, action.strip(), url, plugin, request_id)

    def _drop(
        self,
        alarm_id: str,
        masked_action: str,
        scheme: str | None,
        cause: str,
        request_id: str | None,
    ) -> None:
        LOG.error("Alarm %s: action %s dropped: %s", alarm_id, masked_action, cause)
        self.announce(
            events.DeliveryEvent(
                alarm_id=alarm_id,
                action=masked_action,
                scheme=scheme[: journal.SCHEME_LENGTH] if scheme else scheme,
                outcome=events.DROPPED,
                attempt=0,
                request_id=request_id,
                error=cause,
            )
        )
        return None
