"""broker-restart: alarms paced at a steady rate while the broker restarts; then a backlog
queued while the target is stopped, a restart, and the target again.

On a RabbitMQ node of the benchmark's own (bench/rabbit.py: own name, ports,
data and cookie in the run's directory), never the shared broker. Counted at
the webhook: lost (sent without error, never delivered), duplicated
(delivered more than once), and separately "not sent" (the send raised). Run
once per queue setting (--restart-variants), applied to target and sender
alike, each in a vhost of its own.
"""

from __future__ import annotations

import re
import time
import traceback
import uuid

import rabbit
from common import log, r
from harness import Broker, new_prefix

from scenarios import Scenario, ok, verdict

VARIANTS = {
    "default": {},
    "quorum": {"rabbit_quorum_queue": "true", "rabbit_transient_quorum_queue": "true"},
    "durable": {"amqp_durable_queues": "true"},
}
DEFAULT_VARIANTS = ("default", "quorum")


def wait_quiet(target, sink, n: int, timeout: float, quiet: float) -> int:
    """Until n arrived and then `quiet` s without a new one, or 2*quiet s without one."""
    deadline = time.monotonic() + timeout
    last, changed = target.count(sink), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        count = target.count(sink)
        if count != last:
            last, changed = count, time.monotonic()
        idle = time.monotonic() - changed
        if (count >= n and idle >= quiet) or idle >= 2 * quiet:
            break
    return last


def queue_summary(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and not parts[0].startswith("reply_") and parts[0] != "name":
            name = re.sub(r"bench-[0-9a-f]{8}", "<host>", parts[0])
            name = re.sub(r"_fanout_[0-9a-f]{32}", "_fanout_<uuid>", name)
            out.append(" ".join([name, *parts[1:3]]))
    return sorted(out)


class BrokerRestart(Scenario):
    name = "broker-restart"
    title = "the broker restarts under a steady load"
    order = 60
    default_targets = ("ceilo-rpc", "aodh")
    sizes = {"alarms": (1000, 400), "rate": (100.0, 100.0), "backlog": (200, 100)}

    def run(self, target_classes: list) -> dict:
        node = rabbit.OwnNode(self.bench.workdir)
        self.bench.stack.enter_context(node)
        log(f"starting own RabbitMQ node {node.name} on port {node.port}")
        node_start = node.start()
        out: dict = {}
        for cls in target_classes:
            out[cls.name] = self.guarded(cls, lambda cls=cls: self._variants(node, cls))
            out[cls.name]["node_start_s"] = round(node_start, 1)
        return out

    def _variants(self, node, cls) -> dict:
        out = {}
        for name in self.bench.args.restart_variants or DEFAULT_VARIANTS:
            log(f"broker-restart / {cls.name}: variant {name}")
            try:
                out[name] = self._once(node, cls, name, VARIANTS[name])
            except Exception as exc:  # noqa: BLE001 - the next variant still runs
                traceback.print_exc()
                out[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
                if not node.running:
                    node.start()
        return out

    def _once(self, node, cls, name: str, opts: dict) -> dict:
        bench = self.bench
        n, rate = self.size("alarms"), self.size("rate")
        sink = bench.sink()
        d = bench.run_dir(self.name, cls.name, name)
        vhost = f"restart-{name}-{uuid.uuid4().hex[:6]}"
        node.add_vhost(vhost)
        broker = Broker("127.0.0.1", node.port, vhost, dict(opts))
        target = cls(bench, d)
        target.start(broker)
        sender = None
        try:
            prefix = new_prefix(f"rst{name[:3]}")
            sender = target.feed(prefix, [(n, sink.url("ok", prefix))], rate=rate,
                                 warmup_url=sink.url("ok", "warmup"))  # fmt: skip
            target.wait_warm(sink)
            queues_before = node.list_queues(vhost)
            sender.go()
            # restart once 40 % of the alarms are sent
            at = max(100, int(n * 0.4) // 100 * 100)
            while True:
                ev = sender.proc.event("progress", 120)
                if ev["n"] >= at:
                    break
            restarted_at = ev["n"]
            down_s, _stop_s = node.restart()
            casts = sender.wait_done(300)
            sender.stop()
            sender = None
            sent_ok = {c[0] for c in casts if not c[3]}
            wait_quiet(target, sink, len(sent_ok), 120, 4.0)
            records = target.records(sink, prefix)
            target.reset(sink)
            queues_after = node.list_queues(vhost)
            log_text = target.log_text()
        finally:
            if sender:
                sender.stop()
            target.stop()
        not_sent = {c[0] for c in casts if c[3]}
        arrived: dict[str, int] = {}
        for rec in records:
            arrived[rec[2]] = arrived.get(rec[2], 0) + 1
        lost = sorted(sent_ok - set(arrived))
        backlog = self._backlog(node, target, sink, name)
        return {
            "alarms": n,
            "rate_per_s": rate,
            "settings": opts or "oslo.messaging defaults",
            "restart_after": restarted_at,
            "broker_down_s": r(down_s, 1),
            "sent": len(sent_ok),
            "not_sent": len(not_sent),
            "not_sent_errors": sorted({c[3] for c in casts if c[3]})[:3],
            "delivered": len(set(arrived) & sent_ok),
            "lost": len(lost),
            "lost_ids": lost[:20],
            "duplicated": sum(v - 1 for v in arrived.values()),
            "delivered_although_not_sent": len(set(arrived) & not_sent),
            "queues_before": queue_summary(queues_before),
            "queues_after": queue_summary(queues_after),
            "target_reconnects": log_text.count("Reconnected to AMQP server"),
            "target_errors": len(re.findall(r" ERROR ", log_text)),
            "backlog": backlog,
        }

    def _backlog(self, node, target, sink, name: str) -> dict:
        """Alarms queued while the target is stopped, then a broker restart, then the
        target again: what survives in the queue."""
        n = self.size("backlog")
        prefix = new_prefix(f"bkl{name[:3]}")
        sender = target.feed(prefix, [(n, sink.url("ok", prefix))])
        try:
            sender.go()
            casts = sender.wait_done(120)
        finally:
            sender.stop()
        sent_ok = {c[0] for c in casts if not c[3]}
        down_s, _ = node.restart()
        target.restart()
        try:
            wait_quiet(target, sink, len(sent_ok), 60, 3.0)
            records = target.records(sink, prefix)
            target.reset(sink)
        finally:
            target.stop()
        ids = [x[2] for x in records]
        return {
            "queued_while_target_stopped": len(sent_ok),
            "not_sent": n - len(sent_ok),
            "delivered_after_restart": len(set(ids) & sent_ok),
            "lost": len(sent_ok - set(ids)),
            "duplicated": len(ids) - len(set(ids)),
            "broker_down_s": r(down_s, 1),
        }

    def brief(self, res: dict) -> str:
        if not ok(res):
            return super().brief(res)
        return "; ".join(f"{k}: {v['lost']} lost, {v['duplicated']} dup" if ok(v) else f"{k}: error"
                         for k, v in res.items() if isinstance(v, dict))  # fmt: skip

    def rows(self, result: dict) -> list[list]:
        rows = []
        for tname, res in result.items():
            if not ok(res):
                rows.append([tname, self.name, f"ERROR {res.get('error', '')[:100]}"])
                continue
            for name, v in res.items():
                if not isinstance(v, dict):
                    continue
                if not ok(v):
                    rows.append([tname, f"{self.name} {name}", f"ERROR {v['error'][:100]}"])
                    continue
                rows.append([tname, f"{name} queues: sent / not sent / lost / duplicated",
                             f"{v['sent']} / {v['not_sent']} / {v['lost']} / {v['duplicated']}"])
                b = v.get("backlog") or {}
                if "lost" in b:
                    rows.append([tname, f"{name} queues: backlog queued while stopped / lost / "
                                 "duplicated", f"{b['queued_while_target_stopped']} / "
                                 f"{b['lost']} / {b['duplicated']}"])  # fmt: skip
        return rows

    def verdicts(self, result: dict, results: dict) -> list[dict]:
        out = []
        aodh = result.get("aodh") or {}

        def counts(v):
            if not ok(v):
                return "-"
            b = v.get("backlog") or {}
            return (f"{v['lost']} lost, {v['duplicated']} dup of {v['sent']}; backlog "
                    f"{b.get('lost')} lost of {b.get('queued_while_target_stopped')}")

        for tname in ("ceilo-rpc", "ceilo-listener"):
            res = result.get(tname)
            if not ok(res):
                continue
            for name, v in res.items():
                if not isinstance(v, dict) or not ok(v):
                    continue
                b = v.get("backlog") or {}
                lost = v["lost"] + b.get("lost", 0)
                dup = v["duplicated"] + b.get("duplicated", 0)
                opts = VARIANTS.get(name) or {}
                why = ", ".join(f"{k} = {x}" for k, x in opts.items()) or (
                    "transient classic queues: a restart deletes them with what they hold")
                why += f"; queues after the restart: {', '.join(v['queues_after'])}"
                out.append(verdict(
                    f"{tname}: broker restart, {name} queues: 0 lost / 0 duplicated",
                    counts(aodh.get(name)), counts(v),
                    (lost == 0 and dup == 0) if name != "default" else None,
                    f"{lost} lost, {dup} duplicated", why,
                ))  # fmt: skip
        return out
