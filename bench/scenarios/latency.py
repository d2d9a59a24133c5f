"""latency: alarms paced below what the target can do, so the latency is what one alarm
waits without a backlog; also the CPU per alarm at that rate and the target's CPU while
idle."""

from __future__ import annotations

from scenarios import Scenario, ok
from scenarios.burst import measure


class Latency(Scenario):
    name = "latency"
    title = "paced alarms, no backlog"
    order = 20
    default_targets = ("ceilo-rpc", "aodh")
    sizes = {"alarms": (2000, 600), "rate": (200.0, 200.0)}

    def run_target(self, target_cls) -> dict:
        d = self.bench.run_dir(self.name, target_cls.name)
        return measure(self, target_cls, d, self.size("alarms"), rate=self.size("rate"),
                       label=f"{self.name}-{target_cls.name}")  # fmt: skip

    def brief(self, res: dict) -> str:
        if not ok(res):
            return super().brief(res)
        return f"p50 {res['latency_p50_s']} s, p99 {res['latency_p99_s']} s"

    def rows(self, result: dict) -> list[list]:
        rows = []
        for name, v in result.items():
            if not ok(v):
                rows.append([name, "latency", f"ERROR {v.get('error', '')[:100]}"])
                continue
            rows.append([name, f"{v['sender']}: p50 / p99 / max s",
                         f"{v['latency_p50_s']} / {v['latency_p99_s']} / {v['latency_max_s']}"])
            rows.append([name, "CPU ms per alarm at that rate (cores busy when idle)",
                         f"{v['cpu_ms_per_alarm']} ({v['cpu_cores_when_idle']})"])
        return rows
