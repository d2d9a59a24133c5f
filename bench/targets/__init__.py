"""What the benchmark measures: one module per target, each a subclass of Target.

A target is a process (tree) started from a config file that consumes alarms
from RabbitMQ and, unless it is a no-op consumer, delivers them to the
webhook sink. Adding a target is adding a module here with a Target subclass
that sets `name` and implements `command()` and `config()`.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import rabbit
from common import (
    NOTIFICATION_EXCHANGE,
    NOTIFICATION_TOPIC,
    PY,
    Proc,
    Sender,
    SinkProc,
    merge,
    proc_tree,
    write_config,
)


class Target:
    name = ""  # on the command line and in the results
    title = ""  # in the reports
    order = 50  # where it comes in the run and the tables
    # how its production callers feed it: "rpc" (notify_alarm casts) or "notification"
    # (alarm.update notifications as aodh's evaluator sends them)
    feed_mode = "notification"
    topic = NOTIFICATION_TOPIC
    exchange = NOTIFICATION_EXCHANGE
    # False for a consumer that does nothing: it then counts what it handled itself
    delivers = True
    # seconds SIGTERM gets before the whole tree is killed
    stop_timeout = 30.0

    def __init__(self, bench, d: Path, label: str = ""):
        self.bench = bench
        self.d = d
        self.label = label or self.name
        self.proc: Proc | None = None
        self.broker = None
        self.config_path: Path | None = None

    # -- to be provided by each target --------------------------------------------

    @classmethod
    def prepare(cls, bench) -> str | None:
        """Once per run before its first start: install what it needs. Returns why it
        cannot run on this machine, or None."""
        return None

    def config(self, broker, extra: dict) -> dict[str, dict[str, object]]:
        """The sections of its config file."""
        raise NotImplementedError

    def command(self, config: Path) -> list[str]:
        raise NotImplementedError

    def ready_queues(self) -> list[str]:
        """Queues that have a consumer once it is ready."""
        if self.feed_mode == "rpc":
            return [self.topic]
        return [f"{self.topic}.sample"]

    def settings(self) -> dict:
        """What the reports say about how it was configured."""
        return {}

    # -- life cycle ------------------------------------------------------------------

    def start(self, broker, extra: dict | None = None) -> None:
        """Write its config (broker, queue settings of the broker, `extra` sections),
        start it and wait until it consumes."""
        self.broker = broker
        sections = self.config(broker, merge(
            {"oslo_messaging_rabbit": broker.rabbit_opts} if broker.rabbit_opts else {},
            extra or {},
        ))  # fmt: skip
        self.config_path = write_config(self.d / f"{self.label}.conf", sections)
        self.proc = Proc(self.command(self.config_path), self.d / f"{self.label}.log",
                         **self.proc_kwargs())  # fmt: skip
        try:
            self.wait_ready()
        except Exception as exc:
            tail = self.proc.tail()
            self.stop()
            raise RuntimeError(f"{self.name} did not start ({exc}):\n{tail}") from None

    def proc_kwargs(self) -> dict:
        return {}

    def wait_ready(self, timeout: float = 90.0) -> None:
        b = self.broker
        rabbit.wait_consumed(b.host, b.port, b.vhost, self.ready_queues(), self.proc.alive,
                             timeout)  # fmt: skip

    def restart(self) -> None:
        """Start it again with the same config (after stop())."""
        self.label += "-again"
        self.proc = Proc(self.command(self.config_path), self.d / f"{self.label}.log",
                         **self.proc_kwargs())  # fmt: skip
        try:
            self.wait_ready()
        except Exception as exc:
            tail = self.proc.tail()
            self.stop()
            raise RuntimeError(f"{self.name} did not start again ({exc}):\n{tail}") from None

    def pids(self) -> list[int]:
        return proc_tree(self.proc.p.pid) if self.proc and self.proc.alive() else []

    def log_text(self) -> str:
        return self.proc.log_text() if self.proc else ""

    def stop(self, timeout: float | None = None) -> None:
        if self.proc:
            self.proc.stop(timeout=self.stop_timeout if timeout is None else timeout)

    # -- feeding ---------------------------------------------------------------------

    def feed(self, prefix: str, batches: list[tuple[int, str]], rate: float = 0.0,
             threads: int = 1, warmup_url: str | None = None) -> Sender:  # fmt: skip
        """A sender, connected and ready, for alarms `batches` [(count, action URL)];
        `go()` starts it."""
        return Sender(self.d, self.broker.url, self.feed_mode, self.topic, prefix, batches,
                      rate=rate, threads=threads, warmup_url=warmup_url,
                      rabbit_opts=self.broker.rabbit_opts, exchange=self.exchange)  # fmt: skip

    # -- what arrived ------------------------------------------------------------------

    def wait_warm(self, sink: SinkProc, timeout: float = 60.0) -> None:
        """Wait for the sender's warm-up alarm, then forget it."""
        deadline = time.monotonic() + timeout
        while sink.count() < 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: the warm-up alarm never arrived")
            if self.proc and not self.proc.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.proc.tail()}")
            time.sleep(0.05)
        time.sleep(0.3)
        self.reset(sink)

    def reset(self, sink: SinkProc) -> None:
        sink.reset()

    def count(self, sink: SinkProc) -> int:
        """Requests (or, for a no-op consumer, alarms) that arrived since the reset."""
        return sink.count()

    def records(self, sink: SinkProc, prefix: str) -> list[list]:
        """[[arrival, path, alarm_id, sent, request_id], ...] of the run's alarms."""
        return [x[:5] for x in sink.records() if (x[2] or "").startswith(prefix)]

    def wait_count(self, sink: SinkProc, n: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        count = self.count(sink)
        while count < n and time.monotonic() < deadline:
            time.sleep(0.05)
            count = self.count(sink)
        return count


def tag() -> str:
    return uuid.uuid4().hex[:8]


__all__ = ["PY", "Target", "tag"]
