"""narrow: a burst of alarms to one receiver that takes at most 4 requests at once.

The receiver (``/narrow/`` of a sink of the scenario's own, on 127.0.0.1)
counts the requests it has open: each accepted one is answered 200 after
`busy_s` (0.05 s); a request arriving while `limit` (4) are open is answered
429 at once (no Retry-After). N alarms (1000) are sent by the burst sender's
threads as fast as they can. Counted at the receiver: requests per alarm
delivered (2xx), the time from the first alarm sent until the last one was
answered 200 (if all were), and concurrency at the receiver: the requests
tried at once (those that arrived within `busy_s` of each other, turned away
or not: what would have been in flight had each taken `busy_s`), their most
and mean; the mean of the requests open when one arrives (itself included;
`limit` + 1 means it was turned away); and the mean of the accepted ones in
flight from the first request to the last answer (`limit` at best). At
`limit` / `busy_s` (80/s) the receiver needs 12.5 s for 1000.

ceilo-notifier runs with endpoint health (and its adaptive concurrency) on
and off, with the journal and retries of the outage scenario; aodh-notifier
with its only retry option. Then the scenario waits until every alarm sent
was delivered, or no request arrived for `quiet_s`, at most `cap_s`.
"""

from __future__ import annotations

from common import SinkProc, r
from harness import new_prefix

from scenarios import Scenario, ok, verdict
from scenarios.outage import AODH_RETRY, OFF, variants, wait_delivered

REQUESTS_PER_ALARM = 1.5


def offered(arrivals: list[float], busy: float) -> list[int]:
    """For each arrival (sorted), the requests that arrived in the `busy` s up to it, itself
    included: what would be in flight at once if every request took `busy` s, turned
    away or not (the concurrency the notifier tried)."""
    out, lo = [], 0
    for i, t in enumerate(arrivals):
        while arrivals[lo] <= t - busy:
            lo += 1
        out.append(i - lo + 1)
    return out


class Narrow(Scenario):
    name = "narrow"
    title = "a receiver taking 4 requests at once, 429 beyond; endpoint health on, off"
    order = 75
    default_targets = ("ceilo-rpc", "aodh")
    sizes = {
        "alarms": (1000, 300),
        "limit": (4, 4),
        "busy_s": (0.05, 0.05),
        "quiet_s": (15.0, 15.0),
        "cap_s": (180.0, 90.0),
    }

    def run(self, target_classes: list) -> dict:
        self.sink = None
        out = {}
        for key, cls, extra in variants(target_classes):
            out[key] = self.guarded(cls, lambda key=key, cls=cls, extra=extra: self._once(
                key, cls, extra))  # fmt: skip
        return out

    def _sink(self) -> SinkProc:
        if self.sink is None:
            self.sink = SinkProc(self.bench.run_dir(self.name), ports=1,
                                 narrow_limit=self.size("limit"),
                                 narrow_delay=self.size("busy_s"))  # fmt: skip
            self.bench.stack.callback(self.sink.stop)
        return self.sink

    def _once(self, key: str, cls, extra: dict) -> dict:
        bench = self.bench
        sink = self._sink()
        n = self.size("alarms")
        d = bench.run_dir(self.name, key.replace("/", "-"))
        with bench.broker(f"{self.name}-{cls.name}") as broker:
            target = cls(bench, d)
            target.start(broker, extra)
            sender = None
            try:
                prefix = new_prefix("narr")
                sender = target.feed(prefix, [(n, sink.url("narrow", prefix))],
                                     threads=bench.args.sender_threads,
                                     warmup_url=sink.url("ok", "warmup"))  # fmt: skip
                target.wait_warm(sink)
                start = sender.go()
                casts = sender.wait_done(120)
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
        records.sort(key=lambda x: x[0])
        accepted = [x for x in records if x[5] == 200]
        delivered = {x[2] for x in accepted}
        busy = sink.narrow_delay
        statuses: dict[str, int] = {}
        for x in records:
            statuses[str(x[5])] = statuses.get(str(x[5]), 0) + 1
        in_flight = [x[6] for x in records if x[6] is not None]
        tried = offered([x[0] for x in records], busy)
        span = (accepted[-1][0] + busy - records[0][0]) if accepted else None
        all_in = len(delivered) >= len(sent_ok) and bool(accepted)
        return {
            "alarms": n,
            "sent": len(sent_ok),
            "not_sent": n - len(sent_ok),
            "sending_s": r(sent_end - start, 2),
            "limit": sink.narrow_limit,
            "busy_s": busy,
            "requests": len(records),
            "statuses": statuses,
            "delivered": len(delivered),
            "missing": len(sent_ok - delivered),
            "duplicated": len(accepted) - len(delivered),
            "requests_per_delivered": r(len(records) / len(delivered), 2) if delivered else None,
            # first alarm sent -> the last one answered 200, if every alarm was
            "all_delivered_s": r(accepted[-1][0] + busy - start, 2) if all_in else None,
            "last_delivered_s": r(accepted[-1][0] + busy - start, 2) if accepted else None,
            # requests open at the receiver when one arrived, itself included (limit + 1:
            # it was turned away)
            "max_in_flight": max(in_flight, default=None),
            "mean_in_flight_at_arrival": r(sum(in_flight) / len(in_flight), 2)
            if in_flight
            else None,
            # requests that arrived within busy_s, turned away or not (see offered())
            "max_tried_at_once": max(tried, default=None),
            "mean_tried_at_once": r(sum(tried) / len(tried), 2) if tried else None,
            # accepted requests open on average, first request -> last answer
            "mean_accepted_in_flight": r(len(accepted) * busy / span, 2) if span else None,
            "waited_s": r(waited, 1),
            "given": extra,
            "settings": target.settings(),
        }

    def brief(self, res: dict) -> str:
        if not ok(res):
            return super().brief(res)
        return (f"{res['requests']} requests for {res['delivered']}/{res['sent']} delivered "
                f"({res['requests_per_delivered']} per alarm), all in {res['all_delivered_s']} "
                f"s; tried at once max {res['max_tried_at_once']}, mean "
                f"{res['mean_tried_at_once']}; accepted in flight mean "
                f"{res['mean_accepted_in_flight']}")  # fmt: skip

    # -- reports -----------------------------------------------------------------------

    @staticmethod
    def concurrency(x: dict) -> str:
        return (
            f"{x['max_tried_at_once']} / {x['mean_tried_at_once']} / "
            f"{x['mean_in_flight_at_arrival']} / {x['mean_accepted_in_flight']}"
        )

    def rows(self, result: dict) -> list[list]:
        rows = []
        for name, v in result.items():
            if not ok(v):
                rows.append([name, self.name, f"ERROR {str(v.get('error', ''))[:100]}"])
                continue
            lim = f"{v['limit']} at once"
            rows.append([name, f"narrow ({lim}): requests / delivered of sent (per alarm)",
                         f"{v['requests']} / {v['delivered']} of {v['sent']} "
                         f"({v['requests_per_delivered']})"])  # fmt: skip
            rows.append([name, "narrow: all delivered after s (the last delivered after s)",
                         f"{v['all_delivered_s']} ({v['last_delivered_s']})"])  # fmt: skip
            rows.append([name, f"narrow: tried at once (arrivals within {v['busy_s']:g} s) max "
                         "/ mean; open at arrival mean; accepted in flight mean",
                         self.concurrency(v)])  # fmt: skip
        return rows

    def verdicts(self, result: dict, results: dict) -> list[dict]:
        aodh = result.get("aodh")
        out = []

        def brief(x) -> str:
            return (f"{x['requests_per_delivered']} ({x['requests']} requests, "
                    f"{x['delivered']}/{x['sent']} delivered)")  # fmt: skip

        def other(x, key):
            return x[key] if ok(x) else "-"

        for name, v in result.items():
            if name == "aodh" or name.endswith(OFF) or not ok(v):
                continue
            off = result.get(name + OFF)
            per = v["requests_per_delivered"]
            out.append(verdict(
                f"{name}: requests per delivered alarm to a receiver taking {v['limit']} at "
                f"once (429 beyond) <= {REQUESTS_PER_ALARM:g}, all delivered",
                brief(aodh) if ok(aodh) else "-",
                brief(v) + (f"; health off: {brief(off)}" if ok(off) else ""),
                per is not None and per <= REQUESTS_PER_ALARM and v["missing"] == 0,
                f"{per - REQUESTS_PER_ALARM:.2f} requests per alarm"
                if per is not None and per > REQUESTS_PER_ALARM
                else f"{v['missing']} alarms not delivered",
                f"all {v['sent']} delivered after {v['all_delivered_s']} s (health off: "
                f"{other(off, 'all_delivered_s')} s; aodh: {other(aodh, 'all_delivered_s')} s; "
                f"{v['limit']} at once x {v['busy_s']:g} s takes "
                f"{v['sent'] * v['busy_s'] / v['limit']:.1f} s); tried at once max / mean, "
                f"open at arrival mean, accepted in flight mean: {self.concurrency(v)} (health "
                f"off: {self.concurrency(off) if ok(off) else '-'}; aodh: "
                f"{self.concurrency(aodh) if ok(aodh) else '-'}); ceilo-notifier given "
                f"{v['given']}; aodh-notifier {AODH_RETRY} (no retry of a POST answered 429)",
            ))  # fmt: skip
        return out
