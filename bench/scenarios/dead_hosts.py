"""dead-hosts: two dead webhook hosts (accept, never answer; each on its own port) with N
alarms each, then healthy alarms to a third port: how long the healthy ones wait."""

from __future__ import annotations

import time

from common import RssSampler, r
from harness import new_prefix

from scenarios import Scenario, lat_summary, latencies, ok, verdict

HEALTHY_P99_S = 1.0


def blocked_run(scenario, target_cls, blocked: list[tuple[int, int]], healthy: int,
                healthy_port: int, cap: float) -> dict:  # fmt: skip
    """`blocked` [(alarms, sink port)] to /hang/ first, then `healthy` alarms to /ok/ on
    healthy_port; waits up to `cap` s after the last one was sent for the healthy ones."""
    bench = scenario.bench
    sink = bench.sink()
    d = bench.run_dir(scenario.name, target_cls.name)
    with bench.broker(f"{scenario.name}-{target_cls.name}") as broker:
        target = target_cls(bench, d)
        target.start(broker)
        sender = None
        try:
            prefix = new_prefix(scenario.name[:4])
            batches = [(n, sink.url("hang", prefix, port)) for n, port in blocked]
            batches.append((healthy, sink.url("ok", prefix, healthy_port)))
            sender = target.feed(prefix, batches, threads=bench.args.sender_threads,
                                 warmup_url=sink.url("ok", "warmup", healthy_port))  # fmt: skip
            target.wait_warm(sink)
            with RssSampler(target.pids) as rss:
                before = rss.last
                start = sender.go()
                casts = sender.wait_done(300)
                sent_end = max(c[2] for c in casts)
                deadline = time.monotonic() + cap
                ok_ids = {c[0] for c in casts[len(casts) - healthy:]}
                arrived = []
                while time.monotonic() < deadline:
                    arrived = [x for x in sink.records("ok") if x[2] in ok_ids]
                    if len({x[2] for x in arrived}) >= healthy:
                        break
                    time.sleep(0.25)
                waited = time.monotonic() - deadline + cap
                stats = sink.stats()
            processes = len(target.pids())
        finally:
            # hung requests fail at once from now on, so the target can stop
            sink.release()
            if sender:
                sender.stop()
            target.stop()
            sink.reset()
    first, lat, dups = latencies(arrived)
    return {
        "blocked_alarms": [{"alarms": n, "webhook_host": port} for n, port in blocked],
        "healthy_alarms": healthy,
        "healthy_delivered": len(first),
        "waited_at_most_s": cap,
        "waited_s": r(waited, 1),
        "sending_s": r(sent_end - start, 2),
        **lat_summary(lat, healthy, prefix="healthy"),
        "blocked_requests_arrived": (stats.get("modes") or {}).get("hang", 0),
        "rss_tree_mb_before": r(before, 1),
        "rss_tree_mb_peak": r(rss.peak, 1),
        "rss_tree_growth_mb": r(rss.peak - before, 1),
        "processes": processes,
        "settings": target.settings(),
    }


class DeadHosts(Scenario):
    name = "dead-hosts"
    title = "two dead webhook hosts beside a healthy one"
    order = 40
    default_targets = ("ceilo-rpc", "ceilo-listener", "aodh", "stub")
    sizes = {"per_dead_host": (300, 300), "healthy": (100, 50), "cap_s": (30.0, 15.0)}

    def run_target(self, target_cls) -> dict:
        n = self.size("per_dead_host")
        return blocked_run(self, target_cls, [(n, 0), (n, 1)], self.size("healthy"), 2,
                           self.size("cap_s"))  # fmt: skip

    def brief(self, res: dict) -> str:
        if not ok(res):
            return super().brief(res)
        return (f"healthy {res['healthy_delivered']}/{res['healthy_alarms']}, "
                f"p99 {res['healthy_p99_s']} s")  # fmt: skip

    def rows(self, result: dict) -> list[list]:
        rows = []
        for name, v in result.items():
            if not ok(v):
                rows.append([name, self.name, f"ERROR {v.get('error', '')[:100]}"])
                continue
            rows.append([name, f"healthy delivered within {v['waited_at_most_s']:g} s; "
                         "p50 / p99 / max s",
                         f"{v['healthy_delivered']}/{v['healthy_alarms']}; "
                         f"{v['healthy_p50_s']} / {v['healthy_p99_s']} / {v['healthy_max_s']}"])
            rows.append([name, "RSS of the process tree: before / peak MB",
                         f"{v['rss_tree_mb_before']} / {v['rss_tree_mb_peak']}"])
        return rows

    def verdicts(self, result: dict, results: dict) -> list[dict]:
        return healthy_verdicts(self, result, "healthy alarms behind two dead hosts")


def healthy_verdicts(scenario, result: dict, what: str) -> list[dict]:
    aodh = result.get("aodh")
    out = []
    for name in ("ceilo-rpc", "ceilo-listener"):
        v = result.get(name)
        if not ok(v):
            continue
        p99 = v["healthy_p99_s"]
        shown = "never (not all arrived)" if p99 is None else f"{p99} s"
        out.append(verdict(
            f"{name}: {what}: p99 <= {HEALTHY_P99_S} s",
            (f"{aodh['healthy_p99_s'] or 'never'} ({aodh['healthy_delivered']}/"
             f"{aodh['healthy_alarms']} within {aodh['waited_at_most_s']:g} s)")
            if ok(aodh) else "-",
            f"p99 {shown}; {v['healthy_delivered']}/{v['healthy_alarms']} within "
            f"{v['waited_at_most_s']:g} s",
            p99 is not None and p99 <= HEALTHY_P99_S,
            f"{(p99 or v['waited_at_most_s']) - HEALTHY_P99_S:.2f} s or more" if p99 is None
            else f"{p99 - HEALTHY_P99_S:.2f} s",
            f"settings: {v.get('settings')}",
        ))  # fmt: skip
    return out
