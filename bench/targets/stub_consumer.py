"""A stub notifier (bench/stub_consumer.py), for scale: the simplest threaded one.

A notification listener with 64 executor threads that POSTs each alarm with
requests (one keep-alive session per thread, 10 s timeout, no retry) and
keeps no journal. Fed alarm.update notifications.
"""

from __future__ import annotations

from pathlib import Path

from common import BENCH, NOTIFICATION_EXCHANGE, merge

from targets import PY, Target


class Stub(Target):
    name = "stub"
    title = "stub consumer (64 threads, requests, no journal)"
    order = 50
    stop_timeout = 15.0
    threads = 64
    timeout = 10.0

    def config(self, broker, extra: dict) -> dict:
        return merge({"DEFAULT": {"transport_url": broker.url,
                                  "control_exchange": NOTIFICATION_EXCHANGE,
                                  "executor_thread_pool_size": self.threads}}, extra)  # fmt: skip

    def command(self, config: Path) -> list[str]:
        return [PY, str(BENCH / "stub_consumer.py"), "--config-file", str(config),
                "--topic", self.topic, "--timeout", str(self.timeout)]  # fmt: skip

    def settings(self) -> dict:
        return {"threads": self.threads, "request timeout s": self.timeout}
