"""kill-burst: a burst of alarms to a slow webhook, the target's whole process tree killed
with SIGKILL 1 s after the first alarm went out, then started again with the same config.

The webhook is a sink of the scenario's own whose /delay/ answers after 0.5 s,
so at the kill many requests are in flight (they reached the webhook, their
answer did not reach the target) and many alarms are still queued or accepted
and not yet attempted. The target is started again with the same config file:
for ceilo-notifier the same ``[DEFAULT] host`` and state_path, hence the same
journal, from which it resumes what was unfinished; aodh-notifier keeps no
journal. Then the scenario waits until the webhook has been quiet for 5 s
(90 s at most) and counts per alarm at the webhook: lost (sent without
error, never delivered), duplicated (alarms delivered twice or more) and all
deliveries. `rounds` rounds, the targets in alternation; each round and the
median of each count are reported.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import time

import rabbit
from common import SinkProc, proc_tree, r
from harness import new_prefix

from scenarios import Scenario, ok, verdict

# what an earlier version of ceilo-notifier did in this scenario (issue), for the reports
EARLIER = "3-29 lost, 129-206 duplicated of 500"


def kill_tree(target) -> int:
    """SIGKILL the target's whole process tree at once: every process is stopped first
    (SIGSTOP), so that none reacts to another's death (a master forking a new worker,
    a worker finishing its work once its master is gone), then killed. Returns how many
    processes there were."""
    root = target.proc.p.pid
    tree = proc_tree(root)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        if sig == signal.SIGKILL:
            tree = proc_tree(root)  # a child forked before the stop
        for pid in tree:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
    target.proc.p.wait(10)
    deadline = time.monotonic() + 10
    for pid in tree[1:]:
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                break
            if state in ("Z", "X"):
                break
            time.sleep(0.02)
    target.proc.stop()  # only closes its log: the process is gone
    return len(tree)


def wait_unconsumed(target, timeout: float = 30.0) -> None:
    """Until the broker has noticed the death: no consumer left on the target's queues
    (else the restarted target would look ready before it consumes)."""
    b = target.broker
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = rabbit.queue_consumers(b.host, b.port, b.vhost, target.ready_queues(), b.user,
                                      b.password)  # fmt: skip
        if not any(seen.values()):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{target.name}: the broker still lists a consumer after the kill")


def wait_quiet(target, sink, quiet: float, cap: float) -> tuple[int, float]:
    """Until the webhook has had no new request for `quiet` s, at most `cap` s; the
    count and the seconds waited."""
    t0 = time.monotonic()
    last, changed = target.count(sink), t0
    while time.monotonic() - t0 < cap:
        time.sleep(0.2)
        count = target.count(sink)
        if count != last:
            last, changed = count, time.monotonic()
        elif time.monotonic() - changed >= quiet:
            break
    return last, time.monotonic() - t0


def median(values: list):
    """The median; of an even count, the lower of the middle two (a count stays whole)."""
    return statistics.median_low(values) if values else None


class KillBurst(Scenario):
    name = "kill-burst"
    title = "kill -9 during a burst to a slow webhook, then a restart"
    order = 65
    default_targets = ("ceilo-rpc", "ceilo-listener", "aodh")
    sizes = {
        "alarms": (500, 500),
        "rounds": (3, 1),
        "kill_after_s": (1.0, 1.0),
        "webhook_delay_s": (0.5, 0.5),
        "quiet_s": (5.0, 5.0),
        "cap_s": (90.0, 90.0),
    }

    def run(self, target_classes: list) -> dict:
        self.sink = None
        runs: dict[str, list[dict]] = {cls.name: [] for cls in target_classes}
        for i in range(max(1, self.size("rounds"))):
            for cls in target_classes:
                res = self.guarded(cls, lambda cls=cls, i=i: self._once(cls, i + 1))
                res["round"] = i + 1
                runs[cls.name].append(res)
        return {name: self._summary(rs) for name, rs in runs.items()}

    def _sink(self) -> SinkProc:
        """A sink of the scenario's own: its /delay/ answers after webhook_delay_s."""
        if self.sink is None:
            self.sink = SinkProc(self.bench.run_dir(self.name), ports=1,
                                 delay=self.size("webhook_delay_s"))  # fmt: skip
            self.bench.stack.callback(self.sink.stop)
        return self.sink

    def _once(self, cls, round_no: int) -> dict:
        bench = self.bench
        n, kill_after = self.size("alarms"), self.size("kill_after_s")
        sink = self._sink()
        d = bench.run_dir(self.name, cls.name, str(round_no))
        with bench.broker(f"{self.name}-{cls.name}") as broker:
            target = cls(bench, d)
            target.start(broker)
            sender = None
            try:
                prefix = new_prefix("kill")
                sender = target.feed(prefix, [(n, sink.url("delay", prefix))],
                                     threads=bench.args.sender_threads,
                                     warmup_url=sink.url("ok", "warmup"))  # fmt: skip
                target.wait_warm(sink)
                start = sender.go()
                time.sleep(max(0.0, start + kill_after - time.time()))
                killed_at = time.time()
                processes = kill_tree(target)
                wait_unconsumed(target)
                t_restart = time.monotonic()
                target.restart()
                restart_s = time.monotonic() - t_restart
                casts = sender.wait_done(120)
                sender.stop()
                sender = None
                _, waited = wait_quiet(target, sink, self.size("quiet_s"), self.size("cap_s"))
                records = target.records(sink, prefix)
                target.reset(sink)
                log_text = target.log_text()
            finally:
                if sender:
                    sender.stop()
                target.stop()
        sent_ok = {c[0] for c in casts if not c[3]}
        times: dict[str, int] = {}
        request_ids: dict[str, set] = {}
        for rec in records:
            times[rec[2]] = times.get(rec[2], 0) + 1
            request_ids.setdefault(rec[2], set()).add(rec[4] if len(rec) > 4 else None)
        lost = sorted(sent_ok - set(times))
        resumed = re.search(r"Resumed (\d+) unfinished deliveries", log_text)
        return {
            "alarms": n,
            "sent": len(sent_ok),
            "not_sent": n - len(sent_ok),
            "sent_before_kill": sum(1 for c in casts if c[2] <= killed_at),
            "sending_s": r(max(c[2] for c in casts) - start, 2),
            "killed_after_s": r(killed_at - start, 2),
            "processes_killed": processes,
            "restart_s": r(restart_s, 1),  # kill noticed by the broker -> consuming again
            "requests_before_kill": sum(1 for x in records if x[0] < killed_at),
            "requests_after_kill": sum(1 for x in records if x[0] >= killed_at),
            "lost": len(lost),
            "lost_ids": lost[:20],
            "duplicated": sum(1 for v in times.values() if v > 1),
            # what a receiver that de-duplicates by X-OpenStack-Request-Id still sees twice
            "duplicated_under_new_ids": sum(1 for v in request_ids.values() if len(v) > 1),
            "deliveries": len(records),
            "most_deliveries_of_one_alarm": max(times.values(), default=0),
            "resumed_from_journal": int(resumed.group(1)) if resumed else None,
            "waited_after_restart_s": r(waited, 1),
            "webhook_delay_s": sink.delay,
            "settings": target.settings(),
        }

    def _summary(self, rounds: list[dict]) -> dict:
        good = [x for x in rounds if ok(x)]
        out: dict = {"rounds": rounds}
        if not good:
            out["error"] = rounds[-1].get("error", "no round ran") if rounds else "no round ran"
            return out
        out["alarms"] = good[0]["alarms"]
        out["webhook_delay_s"] = good[0]["webhook_delay_s"]
        for key in ("lost", "duplicated", "deliveries", "requests_before_kill",
                    "sent_before_kill", "duplicated_under_new_ids"):  # fmt: skip
            out[f"{key}_median"] = median([x.get(key, 0) for x in good])
        out["rounds_ok"] = len(good)
        if len(good) < len(rounds):
            out["errors"] = [x["error"] for x in rounds if not ok(x)]
        out["machine_idle_before_pct"] = min(x["machine_idle_before_pct"] for x in rounds)
        return out

    def brief(self, res: dict) -> str:
        if not ok(res):
            return super().brief(res)
        return (f"{res['lost']} lost, {res['duplicated']} duplicated of {res['alarms']} "
                f"({res['duplicated_under_new_ids']} under a new request id), "
                f"{res['deliveries']} deliveries ({res['requests_before_kill']} before the "
                f"kill), resumed {res['resumed_from_journal']}")  # fmt: skip

    # -- reports -----------------------------------------------------------------------

    @staticmethod
    def each(v: dict) -> str:
        return "; ".join(f"{x['lost']} / {x['duplicated']} / {x['deliveries']}" if ok(x)
                         else "error" for x in v["rounds"])  # fmt: skip

    def rows(self, result: dict) -> list[list]:
        rows = []
        for name, v in result.items():
            if not ok(v):
                rows.append([name, self.name, f"ERROR {str(v.get('error', ''))[:100]}"])
                continue
            k = len(v["rounds"])
            rows.append([name, f"kill -9 burst: lost / duplicated of {v['alarms']} "
                         f"(median of {k} rounds)",
                         f"{v['lost_median']} / {v['duplicated_median']}"])  # fmt: skip
            rows.append([name, "kill -9 burst: lost / duplicated / deliveries, each round",
                         self.each(v)])  # fmt: skip
            rows.append([name, "kill -9 burst: duplicated under a new request id (median)",
                         v["duplicated_under_new_ids_median"]])  # fmt: skip
        return rows

    def verdicts(self, result: dict, results: dict) -> list[dict]:
        aodh = result.get("aodh")
        out = []
        for name in ("ceilo-rpc", "ceilo-listener"):
            v = result.get(name)
            if not ok(v):
                continue
            good = [x for x in v["rounds"] if ok(x)]
            resumed = [x["resumed_from_journal"] for x in good]
            out.append(verdict(
                f"{name}: kill -9 burst: lost / duplicated of {v['alarms']}",
                f"{aodh['lost_median']} / {aodh['duplicated_median']} (rounds: "
                f"{self.each(aodh)})" if ok(aodh) else "-",
                f"{v['lost_median']} / {v['duplicated_median']} (median; lost / duplicated / "
                f"deliveries each round: {self.each(v)})",
                None, "",
                f"whole process tree killed {good[0]['killed_after_s']} s after the first "
                f"alarm, {v['webhook_delay_s']:g} s webhook; requests that had reached the "
                f"webhook before the kill: {[x['requests_before_kill'] for x in good]}; "
                f"resumed from the journal after the restart: {resumed}; duplicated under a "
                f"new request id (what a receiver de-duplicating by X-OpenStack-Request-Id "
                f"still sees twice): {v['duplicated_under_new_ids_median']}"
                + (f" (aodh: {aodh['duplicated_under_new_ids_median']})" if ok(aodh) else "")
                + f"; an earlier version of ceilo-notifier: {EARLIER}",
            ))  # fmt: skip
        return out
