"""outage: alarms paced over a minute to ten receivers, one of which answers 503 for a while.

N alarms (1000) go out evenly over `duration_s` (60 s), each with one action to
one of `receivers` (10) webhook receivers in turn, each receiver on a loopback
address of its own (127.0.0.1 … 127.0.0.10: ceilo-notifier shares its slots
by address). The first receiver answers 503 (no Retry-After) to every request
that arrives from `outage_start_s` (10 s) after the first alarm went out until
`outage_s` (30 s) later, and 200 before and after; the nine others answer 200
at once throughout. Counted at the receivers: the requests that reached the
down receiver during its outage and in all, the distinct alarms that reached
each receiver with a 2xx (is every alarm delivered once the receiver is
back?), and the latency (alarm sent -> its 2xx arrival) of the nine healthy
receivers' alarms, beside the same run without an outage (`baseline`; once per
target, with endpoint health on: without an outage it does nothing).

ceilo-notifier runs twice: with endpoint health on (``[endpoint_health]
enabled = true``, its other options at their defaults unless ``--set``) and
off (``enabled = false``); a code without endpoint health ignores the
section, so both then behave alike. Every ceilo-notifier gets a journal (a
SQLite file in its run directory) and retries that outlast the outage
(RETRY below); aodh-notifier gets its only retry option (AODH_RETRY), which
urllib3 applies to connection errors only, never to a POST answered 503.

After the last alarm went out the scenario waits until every alarm sent has
reached its receiver with a 2xx, or no request arrived for `quiet_s` (longer
than open_seconds, so that a probe still to come is waited for), at most
`cap_s`.
"""

from __future__ import annotations

import time

from common import SinkProc, merge, parse_overrides, r
from harness import new_prefix
from targets.ceilo_rpc import CeiloRPC

from scenarios import Scenario, lat_summary, latencies, ok, verdict

# what every ceilo-notifier of these scenarios is given: retries that outlast a 30 s
# outage (full jitter up to 8 s between attempts, 20 retries: ~75 s on average) and a
# journal where held and retried deliveries wait
RETRY = {
    "alarm": {
        "rest_notifier_max_retries": 20,
        "rest_notifier_retry_backoff": 1.0,
        "rest_notifier_retry_backoff_max": 8.0,
        "rest_notifier_retry_max_age": 600.0,
    },
    "database": {"connection": "sqlite:///{dir}/journal.sqlite"},
}
# aodh-notifier's only retry option: urllib3 retries connection errors, at once, and
# never a POST that got an answer
AODH_RETRY = {"DEFAULT": {"rest_notifier_max_retries": 20}}
HEALTH_ON = {"endpoint_health": {"enabled": "true"}}
HEALTH_OFF = {"endpoint_health": {"enabled": "false"}}
OFF = "/health-off"
# endpoint health's defaults, as announced: what the verdicts assume unless --set
HEALTH_DEFAULTS = {"failure_threshold": 5, "open_seconds": 30.0, "max_open_seconds": 900.0}


def variants(target_classes: list) -> list[tuple[str, type, dict]]:
    """[(result key, target class, extra config)]: each ceilo-notifier target twice,
    endpoint health on (its own name) and off (name + /health-off); others once."""
    out = []
    for cls in target_classes:
        if issubclass(cls, CeiloRPC):
            out.append((cls.name, cls, merge(RETRY, HEALTH_ON)))
            out.append((cls.name + OFF, cls, merge(RETRY, HEALTH_OFF)))
        else:
            out.append((cls.name, cls, merge(AODH_RETRY) if cls.name == "aodh" else {}))
    return out


def health_options(bench) -> dict:
    """endpoint health's options as the ceilo-notifier runs get them (defaults + --set)."""
    given = parse_overrides(bench.args.set or []).get("endpoint_health", {})
    out = dict(HEALTH_DEFAULTS)
    for k, v in given.items():
        if k in out:
            out[k] = type(out[k])(v)
    return out


def probes_within(seconds: float, health: dict) -> int:
    """Probes an endpoint opened at the start of an outage of `seconds` may send before it
    ends: after open_seconds, then after twice as long each time (at most max_open)."""
    t, wait, n = 0.0, health["open_seconds"], 0
    while t + wait <= seconds:
        t += wait
        n += 1
        wait = min(health["max_open_seconds"], wait * 2)
    return n


def wait_delivered(sink: SinkProc, prefix: str, expected: set, quiet: float, cap: float):
    """Until every alarm of `expected` reached the sink with a 2xx, or no request of the
    run arrived for `quiet` s, at most `cap` s; (records of the run, seconds waited)."""
    t0 = time.monotonic()
    last, changed = -1, t0
    records: list = []
    while True:
        records = [x for x in sink.records() if (x[2] or "").startswith(prefix)]
        now = time.monotonic()
        if len(records) != last:
            last, changed = len(records), now
        done = {x[2] for x in records if x[5] is not None and 200 <= x[5] < 300}
        if expected <= done or now - changed >= quiet or now - t0 >= cap:
            return records, now - t0
        time.sleep(1.0)


def receiver_of_alarm(alarm_id: str, receivers: int) -> int:
    """Receiver index of alarm <prefix>-<i> (they go round robin)."""
    return int(alarm_id.rsplit("-", 1)[1]) % receivers


def receiver_of(path: str) -> int:
    """Receiver index of a path /<mode>/<prefix>/r<i>."""
    return int(path.rsplit("/r", 1)[1])


class Outage(Scenario):
    name = "outage"
    title = "one of ten receivers down for 30 s (503); ceilo-notifier with endpoint health on, off"
    order = 70
    default_targets = ("ceilo-rpc", "aodh")
    sizes = {
        "alarms": (1000, 300),
        "duration_s": (60.0, 30.0),
        "receivers": (10, 10),
        "outage_start_s": (10.0, 5.0),
        "outage_s": (30.0, 15.0),
        "quiet_s": (35.0, 35.0),
        "cap_s": (150.0, 90.0),
        "baseline": (1, 1),
    }

    def run(self, target_classes: list) -> dict:
        self.sink = None
        out = {}
        baselines: dict[str, dict] = {}
        for key, cls, extra in variants(target_classes):

            def both(key=key, cls=cls, extra=extra):
                res = self._round(key, cls, extra, outage=True)
                # without an outage the variants of a target do the same: once per target
                if self.size("baseline") and cls.name not in baselines:
                    base = self._round(key, cls, extra, outage=False)
                    baselines[cls.name] = {k: base[k] for k in (
                        "delivered", "sent", "healthy_p50_s", "healthy_p99_s", "healthy_max_s",
                        "down_receiver_requests", "waited_s")}  # fmt: skip
                    baselines[cls.name]["run_as"] = key
                if cls.name in baselines:
                    res["baseline"] = baselines[cls.name]
                return res

            out[key] = self.guarded(cls, both)
        return out

    def _sink(self) -> SinkProc:
        """A sink of the scenario's own, one port (address) per receiver."""
        if self.sink is None:
            self.sink = SinkProc(self.bench.run_dir(self.name), ports=self.size("receivers"))
            self.bench.stack.callback(self.sink.stop)
        return self.sink

    def _round(self, key: str, cls, extra: dict, outage: bool) -> dict:
        bench = self.bench
        sink = self._sink()
        n, duration = self.size("alarms"), self.size("duration_s")
        receivers = self.size("receivers")
        down_from = self.size("outage_start_s")
        down_for = self.size("outage_s")
        d = bench.run_dir(self.name, key.replace("/", "-"), "outage" if outage else "baseline")
        with bench.broker(f"{self.name}-{cls.name}") as broker:
            target = cls(bench, d)
            target.start(broker, extra)
            sender = None
            try:
                prefix = new_prefix("outg")
                # one alarm per batch: they go out in this order, round robin
                batches = [(1, sink.url("outage" if i % receivers == 0 else "ok",
                                        f"{prefix}/r{i % receivers}", i % receivers))
                           for i in range(n)]  # fmt: skip
                sender = target.feed(prefix, batches, rate=n / duration,
                                     warmup_url=sink.url("ok", "warmup", 1))  # fmt: skip
                target.wait_warm(sink)
                start = sender.go()
                window = (start + down_from, start + down_from + down_for)
                if outage:
                    sink.outage(*window)
                casts = sender.wait_done(duration + 120)
                sender.stop()
                sender = None
                sent_end = max(c[2] for c in casts)
                sent_ok = {c[0] for c in casts if not c[3]}
                records, waited = wait_delivered(sink, prefix, sent_ok, self.size("quiet_s"),
                                                 self.size("cap_s"))  # fmt: skip
                sink.reset()
            finally:
                if sender:
                    sender.stop()
                target.stop()
        sent_at = {c[0]: c[1] for c in casts}
        ok_first: dict[str, list] = {}
        per_receiver = [set() for _ in range(receivers)]
        down_all, down_during = [], []
        for rec in sorted(records, key=lambda x: x[0]):
            i = receiver_of(rec[1])
            if i == 0:
                down_all.append(rec)
                if window[0] <= rec[0] < window[1]:
                    down_during.append(rec)
            if rec[5] is not None and 200 <= rec[5] < 300:
                ok_first.setdefault(rec[2], rec)
                per_receiver[i].add(rec[2])
        healthy = [x for x in ok_first.values() if receiver_of(x[1]) != 0]
        _, lat, _ = latencies(healthy)
        healthy_sent = sum(1 for a in sent_ok if receiver_of_alarm(a, receivers) != 0)
        down_ok = [x for x in ok_first.values() if receiver_of(x[1]) == 0]
        down_sent = len(sent_ok) - healthy_sent
        held = [a for a in sent_ok if receiver_of_alarm(a, receivers) == 0 and
                sent_at[a] < window[1]]  # fmt: skip
        held_ok = [ok_first[a][0] for a in held if a in ok_first]
        twoxx = sum(1 for x in records if x[5] is not None and 200 <= x[5] < 300)
        health = health_options(bench)
        return {
            "outage": outage,
            "alarms": n,
            "sent": len(sent_ok),
            "not_sent": n - len(sent_ok),
            "sending_s": r(sent_end - start, 2),
            "receivers": receivers,
            "outage_window_s": [down_from, down_from + down_for] if outage else None,
            "delivered": len(ok_first),
            "missing": len(sent_ok - set(ok_first)),
            "delivered_per_receiver": [len(x) for x in per_receiver],
            "sent_per_receiver": [
                sum(1 for a in sent_ok if receiver_of_alarm(a, receivers) == i)
                for i in range(receivers)
            ],  # fmt: skip
            "duplicated": twoxx - len(ok_first),
            "requests": len(records),
            "down_receiver_requests": len(down_all),
            "down_receiver_requests_during_outage": len(down_during) if outage else None,
            # when they came, seconds after the outage began (the first 50)
            "down_requests_during_outage_at_s": [
                r(x[0] - window[0], 2) for x in down_during[:50]
            ],  # fmt: skip
            "down_receiver_alarms": down_sent,
            "down_receiver_delivered": len(down_ok),
            # alarms to the down receiver sent before it came back, how many were delivered,
            # and the last of them how long after it came back
            "down_receiver_held": len(held),
            "down_receiver_held_delivered": len(held_ok),
            "down_receiver_held_drained_after_s": r(max(held_ok) - window[1], 2)
            if outage and held_ok and len(held_ok) == len(held)
            else None,
            "down_receiver_latency_max_s": r(max(x[0] - sent_at[x[2]] for x in down_ok), 2)
            if down_ok
            else None,  # fmt: skip
            "healthy_alarms": healthy_sent,
            "healthy_delivered": len(healthy),
            **lat_summary(lat, healthy_sent, prefix="healthy"),
            "waited_s": r(waited, 1),
            "endpoint_health_assumed": health,
            "allowed_during_outage": health["failure_threshold"] + probes_within(down_for, health),
            "given": extra,
            "settings": target.settings(),
        }

    def brief(self, res: dict) -> str:
        if not ok(res):
            return super().brief(res)
        base = res.get("baseline") or {}
        return (f"down receiver: {res['down_receiver_requests_during_outage']} requests during "
                f"the outage, {res['down_receiver_requests']} in all; delivered "
                f"{res['delivered']}/{res['sent']}; healthy p99 {res['healthy_p99_s']} s "
                f"(no outage: {base.get('healthy_p99_s')} s)")  # fmt: skip

    # -- reports -----------------------------------------------------------------------

    def rows(self, result: dict) -> list[list]:
        rows = []
        for name, v in result.items():
            if not ok(v):
                rows.append([name, self.name, f"ERROR {str(v.get('error', ''))[:100]}"])
                continue
            w = v["outage_window_s"]
            base = v.get("baseline") or {}
            rows.append([name, f"outage {w[1] - w[0]:g} s: requests to the down receiver during "
                         "it / in all", f"{v['down_receiver_requests_during_outage']} / "
                         f"{v['down_receiver_requests']}"])  # fmt: skip
            rows.append([name, "outage: distinct alarms delivered (2xx) of sent; down receiver's",
                         f"{v['delivered']}/{v['sent']}; {v['down_receiver_delivered']}/"
                         f"{v['down_receiver_alarms']}"])  # fmt: skip
            rows.append(
                [
                    name,
                    "outage: nine healthy receivers p50 / p99 / max s",
                    f"{v['healthy_p50_s']} / {v['healthy_p99_s']} / {v['healthy_max_s']}",
                ]
            )
            if base:
                rows.append([name, "no outage: nine healthy receivers p50 / p99 / max s",
                             f"{base['healthy_p50_s']} / {base['healthy_p99_s']} / "
                             f"{base['healthy_max_s']}"])  # fmt: skip
            rows.append(
                [
                    name,
                    "outage: its alarms sent before it came back: delivered, the "
                    "last one s after it came back",
                    f"{v['down_receiver_held_delivered']}/"
                    f"{v['down_receiver_held']}, {v['down_receiver_held_drained_after_s']}",
                ]
            )
        return rows

    def verdicts(self, result: dict, results: dict) -> list[dict]:
        aodh = result.get("aodh")
        out = []
        for name, v in result.items():
            if name == "aodh" or name.endswith(OFF) or not ok(v):
                continue
            off = result.get(name + OFF)
            w = v["outage_window_s"]
            during = v["down_receiver_requests_during_outage"]
            allowed = v["allowed_during_outage"]
            health = v["endpoint_health_assumed"]
            off_text = (
                f"health off: {off['down_receiver_requests_during_outage']} during, "
                f"{off['down_receiver_requests']} in all"
                if ok(off)
                else ""
            )
            out.append(verdict(
                f"{name}: requests to a receiver down (503) for {w[1] - w[0]:g} s, during the "
                f"outage <= failure_threshold + probes ({allowed})",
                f"{aodh['down_receiver_requests_during_outage']} during, "
                f"{aodh['down_receiver_requests']} in all" if ok(aodh) else "-",
                f"{during} during, {v['down_receiver_requests']} in all; {off_text}",
                during <= allowed, f"{during - allowed} requests",
                f"endpoint health assumed: {health}; requests during the outage came at (s "
                f"into it) {v['down_requests_during_outage_at_s'][:12]}; ceilo-notifier given "
                f"{v['given']}; aodh-notifier {AODH_RETRY} (no retry of a POST answered 503)",
            ))  # fmt: skip
            for key, x in ((name, v), (name + OFF, off)):
                if not ok(x):
                    continue
                out.append(verdict(
                    f"{key}: every alarm delivered (2xx) after the receiver came back",
                    f"{aodh['delivered']}/{aodh['sent']} ({aodh['down_receiver_delivered']}/"
                    f"{aodh['down_receiver_alarms']} of the down receiver's)"
                    if ok(aodh) else "-",
                    f"{x['delivered']}/{x['sent']} ({x['down_receiver_delivered']}/"
                    f"{x['down_receiver_alarms']} of the down receiver's; the last of those "
                    f"sent before it came back delivered "
                    f"{x['down_receiver_held_drained_after_s']} s after)",
                    x["missing"] == 0, f"{x['missing']} alarms",
                    f"waited {x['waited_s']} s after the last alarm went out; duplicated "
                    f"deliveries: {x['duplicated']}",
                ))  # fmt: skip
            base = v.get("baseline") or {}
            aodh_base = (aodh.get("baseline") or {}) if ok(aodh) else {}
            out.append(verdict(
                f"{name}: p99 latency of the nine healthy receivers during the outage, "
                "beside no outage",
                f"{aodh['healthy_p99_s']} s (no outage: {aodh_base.get('healthy_p99_s')} s)"
                if ok(aodh) else "-",
                f"{v['healthy_p99_s']} s (no outage: {base.get('healthy_p99_s')} s); health "
                f"off: {off['healthy_p99_s'] if ok(off) else '-'} s (no outage: "
                f"{(off.get('baseline') or {}).get('healthy_p99_s') if ok(off) else '-'} s)",
                None, "",
                f"{v['alarms']} alarms paced over {v['sending_s']} s, {v['receivers']} "
                "receivers in turn; a p99 of None: not all of them arrived",
            ))  # fmt: skip
        return out
