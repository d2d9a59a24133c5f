"""When a failed delivery is tried again: exponential backoff with full jitter.

Full jitter (a uniformly random wait up to the exponential bound) spreads the
retries of many deliveries to one recovering webhook instead of sending them
in waves. A receiver's ``Retry-After`` is a floor, itself capped by
``retry_after_max`` (a receiver asking for a day is retried sooner, not
obeyed); ``max_age`` bounds the whole life of a delivery.
"""

from __future__ import annotations

import dataclasses
import random

from oslo_config import cfg


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    backoff: float
    backoff_max: float
    max_age: float
    retry_after_max: float = float("inf")

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> RetryPolicy:
        opts = conf.alarm
        return cls(
            max_retries=opts.rest_notifier_max_retries,
            backoff=opts.rest_notifier_retry_backoff,
            backoff_max=opts.rest_notifier_retry_backoff_max,
            max_age=opts.rest_notifier_retry_max_age,
            retry_after_max=opts.rest_notifier_retry_after_max,
        )

    def next_delay(
        self, attempt: int, age: float, retry_after: float | None = None
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None when it is over.

        :param attempt: attempts made so far (1 after the first failure).
        :param age: seconds since the first attempt started.
        """
        if attempt > self.max_retries:
            return None
        bound = min(self.backoff_max, self.backoff * (2 ** (attempt - 1)))
        delay = random.uniform(0, bound)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_max))
        if age + delay > self.max_age:
            return None
        return delay
