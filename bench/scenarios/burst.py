"""burst: N alarms x 1 webhook, sent as fast as the sender can, through every target.

Per target: deliveries/s (first alarm sent -> last arrival at the webhook; for
the no-op consumers: handled), CPU ms per alarm (utime+stime of the whole
process tree from just before the first alarm until the last arrival), latency
p50/p99/max (sent -> arrival), and the RSS of the whole process tree (the
largest sum over its processes, sampled every 0.2 s). The targets run in
alternation, --repeat rounds, so whatever else runs on the machine weighs on
all alike; each target's median run is reported, and the ratios to
aodh-notifier and to the bare ceiling are the medians of each round's ratios.
"""

from __future__ import annotations

import time

from common import RssSampler, cpu_seconds, log, median_by, peak_rss_mb, r
from harness import new_prefix

from scenarios import Scenario, lat_summary, latencies, ok, verdict

CEILINGS = {"rpc": "bare", "notification": "bare-listener"}
# issue 8's targets for ceilo-notifier, against aodh-notifier measured in the same run
RPC_VS_AODH = 2.0
RPC_CPU_MS = 0.9
LISTENER_CPU_MS = 0.7
RPC_P99_S = 1.5
TREE_MB = 110.0
VS_CEILING = 0.90


def measure(scenario, target_cls, d, n: int, rate: float = 0.0, threads: int = 1,
            label: str = "") -> dict:  # fmt: skip
    """One target, one run in a vhost of its own: n alarms to /ok/ on one webhook host,
    as a burst (rate 0) or paced."""
    bench = scenario.bench
    sink = bench.sink()
    with bench.broker(label or scenario.name) as broker:
        target = target_cls(bench, d)
        target.start(broker)
        sender = None
        try:
            prefix = new_prefix(scenario.name[:4])
            sender = target.feed(prefix, [(n, sink.url("ok", prefix))], rate=rate,
                                 threads=threads, warmup_url=sink.url("ok", "warmup"))  # fmt: skip
            target.wait_warm(sink)
            idle_cores = None
            if rate:
                # what the target burns doing nothing, included in the CPU per alarm below
                pids = target.pids()
                c0, t0 = cpu_seconds(pids), time.monotonic()
                time.sleep(2.0)
                idle_cores = (cpu_seconds(pids) - c0) / (time.monotonic() - t0)
            pids = target.pids()
            with RssSampler(target.pids) as rss:
                rss_before = rss.last
                cpu0 = cpu_seconds(pids)
                start = sender.go()
                casts = sender.wait_done(300)
                got = target.wait_count(sink, n, 240)
                cpu1 = cpu_seconds(target.pids() or pids)
                hwm = peak_rss_mb(target.pids())
            time.sleep(0.3)
            records = target.records(sink, prefix)
            target.reset(sink)
            processes = len(target.pids())
        finally:
            if sender:
                sender.stop()
            target.stop()
    first, lat, dups = latencies(records)
    last = max((x[0] for x in first.values()), default=start)
    sent_end = max(c[2] for c in casts)
    took = last - start
    return {
        "alarms": n,
        "delivered": len(first),
        "duplicates": dups,
        "arrived": got,
        "sender": f"paced at {rate:g}/s" if rate else f"burst, {threads} threads",
        "rate_per_s": rate or None,
        "sender_per_s": round(n / max(1e-6, sent_end - start)),
        "failed_sends": sum(1 for c in casts if c[3]),
        "deliveries_per_s": round(len(first) / took) if first and took > 0 else 0,
        "seconds": r(took, 2),
        **lat_summary(lat),
        "cpu_ms_per_alarm": r((cpu1 - cpu0) * 1000 / n, 3),
        "cpu_s_total": r(cpu1 - cpu0, 2),
        "cpu_cores_busy": r((cpu1 - cpu0) / took, 2) if took > 0 else None,
        "cpu_cores_when_idle": r(idle_cores, 3),
        "processes": processes,
        "rss_tree_mb_before": r(rss_before, 1),
        "rss_tree_mb_peak": r(rss.peak, 1),
        "peak_rss_mb_per_process": [round(v, 1) for v in hwm.values()],
        "settings": target.settings(),
    }


class Burst(Scenario):
    name = "burst"
    aliases = ("throughput", "ceiling")
    title = "burst of alarms, one webhook each"
    order = 10
    needs_delivery = False
    sizes = {"alarms": (3000, 1000)}

    def run(self, target_classes: list) -> dict:
        args = self.bench.args
        runs: dict[str, list[dict]] = {cls.name: [] for cls in target_classes}
        rounds = max(1, args.repeat)
        for i in range(rounds):
            for cls in target_classes:
                d = self.bench.run_dir(self.name, cls.name, str(i + 1))
                res = self.guarded(cls, lambda cls=cls, d=d: measure(
                    self, cls, d, self.size("alarms"), threads=args.sender_threads,
                    label=f"{self.name}-{cls.name}"))  # fmt: skip
                runs[cls.name].append(res)
        out: dict[str, dict] = {}
        for name, rs in runs.items():
            good = [x for x in rs if ok(x)]
            out[name] = median_by(good, "deliveries_per_s") if good else rs[-1]
        by_name = {cls.name: cls for cls in target_classes}

        def ratios(name: str, other: str) -> list[float]:
            return [a["deliveries_per_s"] / b["deliveries_per_s"]
                    for a, b in zip(runs[name], runs[other], strict=True)
                    if ok(a) and ok(b) and b["deliveries_per_s"]]  # fmt: skip

        for name, cls in by_name.items():
            if not ok(out[name]):
                continue
            for key, other in (("ceiling", CEILINGS.get(cls.feed_mode)), ("aodh", "aodh")):
                if other in runs and other != name:
                    rs = sorted(ratios(name, other))
                    if rs:
                        out[name][f"ratio_to_{key}_of_each_round"] = [round(x, 3) for x in rs]
                        out[name][f"ratio_to_{key}"] = round(rs[(len(rs) - 1) // 2], 3)
                        out[name][f"{key}_target"] = other
        return out

    def brief(self, res: dict) -> str:
        if "error" in res:
            return super().brief(res)
        return (f"{res['deliveries_per_s']}/s, {res['cpu_ms_per_alarm']} ms CPU/alarm, "
                f"p99 {res['latency_p99_s']} s, tree RSS {res['rss_tree_mb_peak']} MB")  # fmt: skip

    def rows(self, result: dict) -> list[list]:
        rows = []
        for name, v in result.items():
            if not ok(v):
                rows.append([name, "burst", f"ERROR {v.get('error', '')[:100]}"])
                continue
            rows.append([name, "deliveries/s (no-op consumers: handled/s)",
                         v["deliveries_per_s"]])  # fmt: skip
            rows.append([name, "CPU ms per alarm (process tree)", v["cpu_ms_per_alarm"]])
            rows.append([name, "latency p50 / p99 / max s",
                         f"{v['latency_p50_s']} / {v['latency_p99_s']} / {v['latency_max_s']}"])
            rows.append([name, "RSS of the process tree, peak MB (processes)",
                         f"{v['rss_tree_mb_peak']} ({v['processes']})"])
            rows.append([name, "delivered / duplicates of alarms",
                         f"{v['delivered']} / {v['duplicates']} of {v['alarms']}"])
            for key in ("aodh", "ceiling"):
                if f"ratio_to_{key}" in v:
                    rows.append([name, f"deliveries/s vs {v[f'{key}_target']} (median of rounds)",
                                 f"{v[f'ratio_to_{key}']:.2f}x"])  # fmt: skip
        return rows

    def verdicts(self, result: dict, results: dict) -> list[dict]:
        out = []
        aodh = result.get("aodh") if ok(result.get("aodh")) else None
        rpc = result.get("ceilo-rpc") if ok(result.get("ceilo-rpc")) else None
        lis = result.get("ceilo-listener") if ok(result.get("ceilo-listener")) else None
        a = (lambda key, unit="": f"{aodh[key]}{unit}" if aodh else "-")  # noqa: E731
        if rpc and aodh and "ratio_to_aodh" in rpc:
            ratio = rpc["ratio_to_aodh"]
            out.append(verdict(
                f"RPC path: deliveries/s >= {RPC_VS_AODH:g}x aodh-notifier's",
                a("deliveries_per_s", "/s"),
                f"{rpc['deliveries_per_s']}/s, {ratio:.2f}x (median of the rounds' ratios)",
                ratio >= RPC_VS_AODH, f"{RPC_VS_AODH - ratio:.2f}x",
                f"{rpc['cpu_cores_busy']} cores busy at {rpc['cpu_ms_per_alarm']} ms CPU per "
                f"alarm: at that cost 1 core delivers ~{1000 / rpc['cpu_ms_per_alarm']:.0f}/s "
                "(2 cores shared with RabbitMQ, the sender and the sink)",
            ))  # fmt: skip
        for v, label, limit in ((rpc, "RPC path", RPC_CPU_MS), (lis, "listener path",
                                                                LISTENER_CPU_MS)):  # fmt: skip
            if not v:
                continue
            cpu = v["cpu_ms_per_alarm"]
            ceiling = result.get(v.get("ceiling_target") or "")
            why = "utime+stime of the whole process tree during the burst"
            if ok(ceiling):
                why += (f"; the bare consumer needs {ceiling['cpu_ms_per_alarm']} ms per alarm, "
                        f"so ~{cpu - ceiling['cpu_ms_per_alarm']:.2f} ms is the notifier's own "
                        "work")
            out.append(verdict(f"{label}: CPU <= {limit} ms per alarm",
                               a("cpu_ms_per_alarm", " ms"), f"{cpu} ms", cpu <= limit,
                               f"{cpu - limit:.2f} ms", why))  # fmt: skip
        if rpc:
            p99 = rpc["latency_p99_s"]
            drain = rpc["alarms"] / max(1, rpc["deliveries_per_s"])
            burst = rpc["alarms"] / max(1, rpc["sender_per_s"])
            out.append(verdict(
                f"RPC path: p99 latency <= {RPC_P99_S} s in the burst", a("latency_p99_s", " s"),
                f"p50 {rpc['latency_p50_s']} s, p99 {p99} s",
                p99 is not None and p99 <= RPC_P99_S, f"{(p99 or 0) - RPC_P99_S:.2f} s",
                f"queueing: the sender sends {rpc['alarms']} alarms in {burst:.1f} s, the "
                f"service needs {drain:.1f} s to deliver them, so the last ones wait "
                f"~{max(0, drain - burst):.1f} s",
            ))  # fmt: skip
            mb = rpc["rss_tree_mb_peak"]
            out.append(verdict(
                f"RPC path: RSS of the whole process tree <= {TREE_MB:g} MB",
                a("rss_tree_mb_peak", " MB"), f"{mb} MB over {rpc['processes']} processes "
                f"(per process peak {rpc['peak_rss_mb_per_process']})",
                mb <= TREE_MB, f"{mb - TREE_MB:.0f} MB",
                f"settings: {rpc.get('settings')}",
            ))  # fmt: skip
            ceil = result.get("bare")
            if ok(ceil) and "ratio_to_ceiling" in rpc:
                ratio = rpc["ratio_to_ceiling"]
                out.append(verdict(
                    f"(extra) RPC path: deliveries/s >= {VS_CEILING:.0%} of the bare ceiling", "-",
                    f"{rpc['deliveries_per_s']}/s vs {ceil['deliveries_per_s']}/s, {ratio:.0%}",
                    ratio >= VS_CEILING, f"{(VS_CEILING - ratio) * 100:.0f} points",
                    "the bare RPC server does nothing with a cast; what it handles per second "
                    "is the most a notifier on oslo.messaging consumes here",
                ))  # fmt: skip
        return out


__all__ = ["Burst", "measure", "log"]
