"""Notifier plugins: one class per URL scheme, loaded with stevedore.

A plugin only delivers. It knows nothing of the broker, the pool, the
journal or retries: it raises ``RetryableError`` and the dispatcher decides
when (and whether) to try again.
"""

from __future__ import annotations

import abc
from urllib import parse

from oslo_config import cfg

from ceilo_notifier.notification import AlarmNotification

NAMESPACE = "ceilo_notifier.notifier"


class DeliveryError(Exception):
    """The delivery failed and trying again would not help."""

    def __init__(self, reason: str, status_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


class RetryableError(DeliveryError):
    """The delivery failed for now; ``retry_after`` is the receiver's wish, in seconds."""

    def __init__(
        self, reason: str, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason, status_code)
        self.retry_after = retry_after


class AlarmNotifier(abc.ABC):
    """Base class of notifier plugins.

    Plugins are instantiated once, with the service configuration, and
    ``notify`` is called from many threads at once.
    """

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf

    @abc.abstractmethod
    def notify(self, action: parse.SplitResult, notification: AlarmNotification) -> int | None:
        """Deliver one notification to one action.

        :returns: a status code where the transport has one, else None.
        :raises RetryableError: for a failure worth another attempt.
        :raises DeliveryError: for a failure that is final.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release connections; called once when the service stops."""
