"""``file:///path/alarms.jsonl``: append each notification as one JSON line."""

from __future__ import annotations

import json
import threading
from urllib import parse

from ceilo_notifier import notifiers
from ceilo_notifier.notification import AlarmNotification


class FileAlarmNotifier(notifiers.AlarmNotifier):
    _lock = threading.Lock()

    def notify(self, action: parse.SplitResult, notification: AlarmNotification) -> None:
        if not action.path:
            raise notifiers.DeliveryError("file:// action has no path")
        line = json.dumps({**notification.body(), "request_id": notification.request_id})
        try:
            with self._lock, open(parse.unquote(action.path), "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as exc:
            raise notifiers.DeliveryError(f"cannot write {action.path}: {exc.strerror}") from None
