"""``test://``: keep the latest notifications in memory, for tests.

At most ``KEPT`` (1000) are kept, the newest: any tenant can set a
``test://`` action on an alarm, and the service must not grow for it.
"""

from __future__ import annotations

import collections
import threading
from urllib import parse

from ceilo_notifier import notifiers
from ceilo_notifier.notification import AlarmNotification

KEPT = 1000


class TestAlarmNotifier(notifiers.AlarmNotifier):
    """Records (action URL, notification) pairs in ``TestAlarmNotifier.notifications``.

    The sequence (the newest ``KEPT`` pairs) is class-level so a test can read
    it without reaching into the service's plugin manager.
    """

    __test__ = False  # not a pytest test class
    notifications: collections.deque[tuple[str, AlarmNotification]] = collections.deque(maxlen=KEPT)
    _lock = threading.Lock()

    def notify(self, action: parse.SplitResult, notification: AlarmNotification) -> None:
        with self._lock:
            type(self).notifications.append((action.geturl(), notification))
        return None

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls.notifications.clear()
