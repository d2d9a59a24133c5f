"""sink: the webhook sink alone, loaded by a client in another process: requests/s one
request at a time per connection (16 connections, as a notifier sends) and pipelined. It
must be far above what any target delivers."""

from __future__ import annotations

import json
import subprocess

from common import BENCH, PY

from scenarios import Scenario, ok


class Sink(Scenario):
    name = "sink"
    title = "the webhook sink alone"
    order = 0
    default_targets = ()  # the sink alone
    sizes = {"requests": (40000, 10000)}

    def run(self, target_classes: list) -> dict:
        class Whole:  # the scenario has no target; guarded() only wants a name
            name = "sink"

            @staticmethod
            def prepare(bench):
                return None

        return self.guarded(Whole, self._run)

    def _run(self) -> dict:
        sink = self.bench.sink()
        out = {}
        n = self.size("requests")
        for label, conns, depth in (("pipelined", 8, 16), ("one_at_a_time", 16, 1)):
            res = subprocess.run(
                [PY, str(BENCH / "sink.py"), "--load", str(sink.ports[0]), "--requests", str(n),
                 "--connections", str(conns), "--depth", str(depth)],
                capture_output=True, text=True, timeout=120, check=True,
            )  # fmt: skip
            load = json.loads(res.stdout)
            out[label] = {
                "requests": load["requests"],
                "connections": conns,
                "pipeline_depth": depth,
                "req_per_s": round(load["req_per_s"]),
            }
        sink.reset()
        out["req_per_s"] = min(v["req_per_s"] for v in out.values())
        return out

    def brief(self, res: dict) -> str:
        return super().brief(res) if not ok(res) else f"{res['req_per_s']} req/s at least"

    def rows(self, result: dict) -> list[list]:
        if not ok(result):
            return [["-", "sink", f"ERROR {result.get('error', '')[:100]}"]]
        return [
            ["-", "sink req/s (no pipelining, 16 conns)", result["one_at_a_time"]["req_per_s"]],
            ["-", "sink req/s (pipelined, 8 conns)", result["pipelined"]["req_per_s"]],
        ]
