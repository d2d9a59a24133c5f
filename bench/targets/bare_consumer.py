"""The ceiling: a bare oslo.messaging consumer (bench/bare_server.py) that does nothing.

``bare`` is an RPC server fed notify_alarm casts, as ceilo-rpc is;
``bare-listener`` a notification listener fed alarm.update notifications, as
aodh and ceilo-listener are. Neither delivers anything: they count what they
handled themselves, so their rate is the most a notifier built on
oslo.messaging consumes on this machine with this sender.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from common import BENCH, NOTIFICATION_EXCHANGE, RPC_TOPIC, merge

from targets import PY, Target


class Bare(Target):
    name = "bare"
    title = "bare oslo.messaging RPC server (no-op)"
    order = 10
    feed_mode = "rpc"
    topic = RPC_TOPIC
    delivers = False

    def config(self, broker, extra: dict) -> dict:
        sections = {"DEFAULT": {"transport_url": broker.url}}
        if self.feed_mode == "notification":
            sections["DEFAULT"]["control_exchange"] = NOTIFICATION_EXCHANGE
        return merge(sections, extra)

    def command(self, config: Path) -> list[str]:
        return [PY, str(BENCH / "bare_server.py"), "--config-file", str(config),
                "--mode", self.feed_mode, "--topic", self.topic, "--prefix", ""]  # fmt: skip

    def proc_kwargs(self) -> dict:
        return {"stdin": True, "stdout_pipe": True}

    def wait_ready(self, timeout: float = 90.0) -> None:
        self.proc.event("ready", timeout)
        super().wait_ready(timeout)

    def wait_warm(self, sink, timeout: float = 60.0) -> None:
        self.proc.event("warmup", timeout)
        self.reset(sink)

    def reset(self, sink) -> None:
        self.proc.send("reset")

    def count(self, sink) -> int:
        self.proc.send("count")
        return self.proc.event("count", 30)["n"]

    def records(self, sink, prefix: str) -> list[list]:
        out = self.d / f"handled-{time.monotonic_ns()}.json"
        self.proc.send(f"dump {out}")
        self.proc.event("dumped", 60)
        handled = json.loads(out.read_text())["handled"]
        return [[h[1], None, h[0], h[2]] for h in handled if h[0].startswith(prefix)]


class BareListener(Bare):
    name = "bare-listener"
    title = "bare oslo.messaging notification listener (no-op)"
    order = 11
    feed_mode = "notification"
    topic = Target.topic
