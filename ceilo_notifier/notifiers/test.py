"""``test://``: keep every notification in memory, for tests."""

from __future__ import annotations

import threading
from urllib import parse

from ceilo_notifier import notifiers
from ceilo_notifier.notification import AlarmNotification


class TestAlarmNotifier(notifiers.AlarmNotifier):
    """Records (action URL, notification) pairs in ``TestAlarmNotifier.notifications``.

    The list is class-level so a test can read it without reaching into the
    service's plugin manager.
    """

    __test__ = False  # not a pytest test class
    notifications: list[tuple[str, AlarmNotification]] = []
    _lock = threading.Lock()

    def notify(self, action: parse.SplitResult, notification: AlarmNotification) -> None:
        with self._lock:
            type(self).notifications.append((action.geturl(), notification))
        return None

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls.notifications.clear()
