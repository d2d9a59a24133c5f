"""slow: alarms to a webhook that answers each request after 1 s: time from the first
alarm sent until the last answer (last arrival + 1 s)."""

from __future__ import annotations

import time

from common import r
from harness import new_prefix

from scenarios import Scenario, ok, verdict

TARGET_S = 1.5


class Slow(Scenario):
    name = "slow"
    title = "a webhook that takes 1 s"
    order = 30
    default_targets = ("ceilo-rpc", "ceilo-listener", "aodh", "stub")
    sizes = {"alarms": (200, 200)}

    def run_target(self, target_cls) -> dict:
        bench = self.bench
        n = self.size("alarms")
        sink = bench.sink()
        d = bench.run_dir(self.name, target_cls.name)
        with bench.broker(f"{self.name}-{target_cls.name}") as broker:
            target = target_cls(bench, d)
            target.start(broker)
            sender = None
            try:
                prefix = new_prefix("slow")
                sender = target.feed(prefix, [(n, sink.url("delay", prefix))],
                                     warmup_url=sink.url("ok", "warmup"))  # fmt: skip
                target.wait_warm(sink)
                start = sender.go()
                casts = sender.wait_done(120)
                target.wait_count(sink, n, 120)
                time.sleep(0.2)
                records = target.records(sink, prefix)
                target.reset(sink)
            finally:
                if sender:
                    sender.stop()
                target.stop()
        ids = {x[2] for x in records}
        arrivals = sorted(x[0] - start for x in records)
        return {
            "alarms": n,
            "delivered": len(ids),
            "webhook_delay_s": sink.delay,
            "total_s": r(arrivals[-1] + sink.delay, 2) if len(ids) >= n else None,
            "sending_s": r(max(c[2] for c in casts) - start, 2),
            "first_request_at_s": r(arrivals[0], 2) if arrivals else None,
            "last_request_at_s": r(arrivals[-1], 2) if arrivals else None,
            "settings": target.settings(),
        }

    def brief(self, res: dict) -> str:
        return super().brief(res) if not ok(res) else f"total {res['total_s']} s"

    def rows(self, result: dict) -> list[list]:
        return [[name, f"{v['alarms']} x 1 s webhook: total s (delivered)",
                 f"{v['total_s']} ({v['delivered']})"] if ok(v)
                else [name, "slow", f"ERROR {v.get('error', '')[:100]}"]
                for name, v in result.items()]  # fmt: skip

    def verdicts(self, result: dict, results: dict) -> list[dict]:
        aodh = result.get("aodh")
        out = []
        for name in ("ceilo-rpc", "ceilo-listener"):
            v = result.get(name)
            if not ok(v):
                continue
            total = v["total_s"]
            out.append(verdict(
                f"{name}: {v['alarms']} alarms to a 1 s webhook in <= {TARGET_S} s",
                f"{aodh['total_s']} s" if ok(aodh) else "-", f"{total} s",
                total is not None and total <= TARGET_S, f"{(total or 99) - TARGET_S:.2f} s",
                f"all on one host:port; sending took {v['sending_s']} s, the last request "
                f"reached the webhook {v['last_request_at_s']} s after the first alarm was sent",
            ))  # fmt: skip
        return out
