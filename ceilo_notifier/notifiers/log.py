"""``log://``: one INFO line per notification."""

from __future__ import annotations

from urllib import parse

from oslo_log import log

from ceilo_notifier import masking, notifiers
from ceilo_notifier.notification import AlarmNotification

LOG = log.getLogger(__name__)


class LogAlarmNotifier(notifiers.AlarmNotifier):
    """One INFO line per notification: the alarm, its transition, reason and action."""

    def notify(self, action: parse.SplitResult, notification: AlarmNotification) -> None:
        LOG.info(
            "Alarm %(alarm_id)s (%(name)s, severity %(severity)s) %(previous)s -> "
            "%(current)s: %(reason)s [action %(action)s]",
            {
                "alarm_id": notification.alarm_id,
                "name": notification.alarm_name,
                "severity": notification.severity,
                "previous": notification.previous,
                "current": notification.current,
                "reason": notification.reason,
                "action": masking.mask_url(action.geturl()),
            },
        )
        return None
