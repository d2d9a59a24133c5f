"""Notifier plugins that fail in odd ways, to show that no plugin can wedge the service.

Each call is first appended to the file named by ``CEILO_ODD_CALLS`` (if set), one
line ``<scheme> <alarm_id> <current>``, so a test can see every attempt made.
``odd-block`` sleeps ``CEILO_ODD_BLOCK`` seconds (default 3) and then returns.
"""

from __future__ import annotations

import os
import threading
import time
from urllib import parse

from ceilo_notifier import notifiers
from ceilo_notifier.notification import AlarmNotification

_lock = threading.Lock()


def _record(scheme: str, notification: AlarmNotification) -> None:
    path = os.environ.get("CEILO_ODD_CALLS")
    if path:
        with _lock, open(path, "a", encoding="utf-8") as f:
            f.write(f"{scheme} {notification.alarm_id} {notification.current}\n")


class _Odd(notifiers.AlarmNotifier):
    scheme = "odd"

    def notify(self, action: parse.SplitResult, notification: AlarmNotification) -> None:
        _record(self.scheme, notification)
        self.fail()

    def fail(self) -> None:
        raise NotImplementedError


class ReasonNotText(_Odd):
    """A DeliveryError whose reason is an exception, not a string."""

    scheme = "odd-reason"

    def fail(self) -> None:
        raise notifiers.DeliveryError(ValueError("reason is an exception"))


class ReasonDict(_Odd):
    """A RetryableError whose reason is a dict and whose status code is text."""

    scheme = "odd-dict"

    def fail(self) -> None:
        raise notifiers.RetryableError({"code": 7, "why": ["a", "b"]}, status_code="five")


class Exit(_Odd):
    scheme = "odd-exit"

    def fail(self) -> None:
        raise SystemExit(3)


class Interrupt(_Odd):
    scheme = "odd-interrupt"

    def fail(self) -> None:
        raise KeyboardInterrupt("pressed inside a plugin")


class Stop(BaseException):
    """Not an Exception: ``except Exception`` does not catch it."""


class Base(_Odd):
    scheme = "odd-base"

    def fail(self) -> None:
        raise Stop("a BaseException of its own")


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ raised")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ raised")


class Unprintable(_Odd):
    """An exception that cannot even be turned into text."""

    scheme = "odd-str"

    def fail(self) -> None:
        raise _Unprintable("never shown")


class Block(_Odd):
    """A blocking call longer than any sane rest_notifier_timeout."""

    scheme = "odd-block"

    def fail(self) -> None:
        time.sleep(float(os.environ.get("CEILO_ODD_BLOCK", "3")))
