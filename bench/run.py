"""Benchmark of ceilo-notifier: one command runs every scenario and writes the results.

    .venv/bin/python bench/run.py [--scenario NAME ...] [--quick] [--set SECTION.OPTION=VALUE ...]

Scenarios (in this order): sink, ceiling, throughput, latency, slow, hung, broker-restart.
See bench/README.md for what each one measures. Results: a table on stdout,
bench/results/<date>.json and bench/RESULTS.md (its hand-written notes section
is kept across runs).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import math
import os
import platform
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import rabbit  # noqa: E402

PY = sys.executable
# Environment of every process the benchmark starts (PYTHONPATH is set by --rev).
CHILD_ENV = dict(os.environ)
SCENARIOS = ("sink", "ceiling", "throughput", "latency", "slow", "hung", "broker-restart")
READY = "ceilo-notifier consuming topic"

# What ceilo-notifier has to beat (aodh-notifier on a 2-core machine) and its targets.
AODH = {
    "deliveries_per_s": 290,
    "p99_s": 5.6,
    "cpu_ms_per_alarm": 2.9,
    "slow_total_s": 4.1,
    "restart_lost": "1-2 of 1000",
}
TARGETS = {
    "throughput_vs_ceiling": 0.90,
    "p99_s": 0.3,
    "cpu_ms_per_alarm": 1.0,
    "slow_total_s": 1.5,
    "hung_healthy_max_s": 1.0,
}
# The broker-restart variants: oslo.messaging's defaults, and the recommended settings.
RESTART_VARIANTS = {
    "default": {},
    "quorum": {"rabbit_quorum_queue": "true", "rabbit_transient_quorum_queue": "true"},
    "durable": {"amqp_durable_queues": "true"},
}
DEFAULT_RESTART_VARIANTS = ("default", "quorum")

SIZES = {
    # name: (full run, --quick)
    "sink_requests": (40000, 10000),
    "ceiling_alarms": (3000, 1000),
    "throughput_alarms": (3000, 1000),
    "slow_alarms": (200, 200),
    "hung_hung": (80, 80),
    "hung_healthy": (20, 20),
    "hung_same_host_cap_s": (15.0, 6.0),
    "latency_alarms": (2000, 600),
    "latency_rate": (200.0, 200.0),
    "restart_alarms": (1000, 400),
    "restart_rate": (100.0, 100.0),
    "restart_backlog": (200, 100),
}


# -- small helpers -----------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[k]


def r(value, digits=3):
    return None if value is None else round(value, digits)


def write_config(path: Path, sections: dict[str, dict[str, object]]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {v}" for k, v in values.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def merge(*dicts: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for d in dicts:
        for section, values in d.items():
            out.setdefault(section, {}).update(values)
    return out


def proc_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total / _TICK


def machine_idle_pct(seconds: float = 1.0) -> float:
    """Share of all CPUs' time that was idle during the next `seconds`, from /proc/stat."""

    def sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return 100.0 * (idle1 - idle0) / max(1, total1 - total0)


def wait_for_quiet(limit: float, threshold: float = 85.0) -> float:
    """Wait (at most limit seconds) until the machine is idle; return the last idle %."""
    deadline = time.monotonic() + limit
    idle = machine_idle_pct()
    while idle < threshold and time.monotonic() < deadline:
        idle = machine_idle_pct(2.0)
    return idle


def peak_rss_mb(pids: list[int]) -> dict[int, float]:
    out = {}
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
            if m:
                out[p] = int(m.group(1)) / 1024
        except OSError:
            pass
    return out


# -- processes ------------------------------------------------------------------------


class Proc:
    """A child process whose output goes to a file; stopped by its own pid only."""

    def __init__(self, args: list[str], log_path: Path, stdin=None, stdout_pipe=False):
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.p = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
            # not the repository: "python -m" puts the working directory first on
            # sys.path, which would shadow the tree exported by --rev
            cwd=str(log_path.parent),
            env=CHILD_ENV,
            text=bool(stdout_pipe or stdin),
        )
        self.events: queue.Queue = queue.Queue()
        if stdout_pipe:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.p.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                self.events.put(json.loads(line))
            except ValueError:
                self._log.write((line + "\n").encode())
        self.events.put(None)

    def event(self, name: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {name!r} event from {self.log_path.name}")
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if ev is None:
                raise RuntimeError(f"{self.log_path.name} exited early:\n{self.tail()}")
            if ev.get("event") == name:
                return ev

    def send(self, line: str) -> None:
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def tail(self, n: int = 30) -> str:
        self._log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self._log.close()
        return self.p.returncode


class SinkProc:
    def __init__(self, workdir: Path, delay: float = 1.0):
        self.proc = Proc(
            [PY, str(BENCH / "sink.py"), "--ports", "2", "--delay", str(delay)],
            workdir / "sink.log",
            stdout_pipe=True,
        )
        self.delay = delay
        ev = self.proc.events.get(timeout=15)
        if not ev or "ports" not in ev:
            raise RuntimeError(f"sink did not start:\n{self.proc.tail()}")
        self.ports = ev["ports"]

    def _call(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"http://127.0.0.1:{self.ports[0]}{path}", method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def count(self) -> int:
        return self._call("/_stats")["count"]

    def records(self) -> list[list]:
        return self._call("/_records")["records"]

    def reset(self) -> None:
        self._call("/_reset", "POST")

    def release(self) -> None:
        self._call("/_release", "POST")

    def url(self, mode: str, tag: str, port: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[port]}/{mode}/{tag}"

    def wait_count(self, n: int, timeout: float, settle: float = 0.0) -> int:
        """Wait until n requests arrived (or timeout); then settle seconds more."""
        deadline = time.monotonic() + timeout
        count = self.count()
        while count < n and time.monotonic() < deadline:
            time.sleep(0.02)
            count = self.count()
        if settle:
            time.sleep(settle)
            count = self.count()
        return count

    def wait_quiet(self, n: int, timeout: float, quiet: float) -> int:
        """Wait until n requests arrived and then quiet s without a new one, or no new one
        for 2*quiet s, or timeout."""
        deadline = time.monotonic() + timeout
        last, changed = self.count(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            count = self.count()
            if count != last:
                last, changed = count, time.monotonic()
            idle = time.monotonic() - changed
            if (count >= n and idle >= quiet) or idle >= 2 * quiet:
                break
        return last

    def stop(self) -> None:
        self.proc.stop()


class Service:
    """ceilo-notifier as operators run it: a process, a config file, SIGTERM."""

    def __init__(self, config: Path, log_path: Path):
        self.config = config
        self.proc = Proc(
            [PY, "-m", "ceilo_notifier.cmd.notifier", "--config-file", str(config)], log_path
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY in self.proc.log_path.read_text(errors="replace"):
                return
            if self.proc.p.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"ceilo-notifier did not start:\n{self.proc.tail()}")

    def pids(self) -> list[int]:
        return proc_tree(self.proc.p.pid)

    def log_text(self) -> str:
        return self.proc.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.stop()


class Sender:
    def __init__(
        self,
        workdir: Path,
        config: Path,
        prefix: str,
        batches: list[tuple[int, str]],
        rate: float = 0.0,
        threads: int = 1,
        warmup_url: str | None = None,
    ):
        self.out = workdir / f"casts-{prefix}.json"
        args = [PY, str(BENCH / "sender.py"), "--config-file", str(config), "--prefix", prefix]
        for count, url in batches:
            args += ["--batch", str(count), url]
        args += ["--rate", str(rate), "--threads", str(threads), "--out", str(self.out)]
        if warmup_url:
            args += ["--warmup-url", warmup_url]
        self.proc = Proc(args, workdir / f"sender-{prefix}.log", stdin=True, stdout_pipe=True)
        self.proc.event("ready", 60)

    def go(self) -> float:
        self.proc.send("go")
        return self.proc.event("started", 30)["t"]

    def wait_done(self, timeout: float) -> list[list]:
        self.proc.event("done", timeout)
        self.proc.p.wait(30)
        return json.loads(self.out.read_text())["casts"]

    def stop(self) -> None:
        self.proc.stop()


# -- the run ----------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, stack: contextlib.ExitStack):
        self.args = args
        self.quick = args.quick
        self.workdir = workdir
        self.stack = stack
        self.overrides = parse_overrides(args.set or [])
        self.sink: SinkProc | None = None
        self.vhost: rabbit.SharedVhost | None = None
        self.results: dict[str, dict] = {}

    def size(self, name: str):
        full, quick = SIZES[name]
        return quick if self.quick else full

    # shared resources, started on first use

    def get_sink(self) -> SinkProc:
        if self.sink is None:
            self.sink = SinkProc(self.workdir)
            self.stack.callback(self.sink.stop)
        return self.sink

    def get_vhost(self) -> rabbit.SharedVhost:
        if self.vhost is None:
            vhost = rabbit.SharedVhost(self.args.rabbit_host, self.args.rabbit_port)
            self.stack.enter_context(vhost)
            self.vhost = vhost
        return self.vhost

    def scenario_dir(self, name: str) -> Path:
        d = self.workdir / name
        d.mkdir(exist_ok=True)
        return d

    def config(
        self, d: Path, name: str, transport_url: str, extra: dict | None = None
    ) -> tuple[Path, dict]:
        tag = uuid.uuid4().hex[:8]
        sections = merge(
            {
                "DEFAULT": {
                    "transport_url": transport_url,
                    "host": f"bench-{tag}",
                    # the service's own files (its journal) go to the scenario's
                    # temporary directory; ignored by versions without the option
                    "state_path": str(d),
                },
                "alarm": {"notifier_rpc_topic": f"bench_{name.replace('-', '_')}_{tag}"},
            },
            extra or {},
            self.overrides,
        )
        for values in sections.values():
            for k, v in values.items():
                if isinstance(v, str):
                    values[k] = v.replace("{dir}", str(d))
        return write_config(d / f"{name}.conf", sections), sections

    def start_service(self, d: Path, config: Path, label: str) -> Service:
        service = Service(config, d / f"service-{label}.log")
        try:
            service.wait_ready()
        except Exception:
            service.stop()
            raise
        return service

    # -- scenarios --------------------------------------------------------------------

    def sc_sink(self) -> dict:
        sink = self.get_sink()
        out = {}
        n = self.size("sink_requests")
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

    def _cast_burst_run(self, d: Path, config: Path, prefix: str, n: int, url: str, warmup: str):
        sender = Sender(
            d, config, prefix, [(n, url)], threads=self.args.sender_threads, warmup_url=warmup
        )
        self.stack.callback(sender.stop)
        return sender

    def _repeated(self, name: str, once, key: str) -> dict:
        """Run once() --repeat times; the run with the median `key` stands for all."""
        runs = []
        for i in range(max(1, self.args.repeat)):
            d = self.scenario_dir(name) / str(i + 1)
            d.mkdir()
            runs.append(once(d))
        ordered = sorted(runs, key=lambda x: x[key])
        out = dict(ordered[(len(ordered) - 1) // 2])
        if len(runs) > 1:
            out["runs"] = len(runs)
            out[f"{key}_of_each_run"] = [x[key] for x in runs]
        return out

    def sc_ceiling(self) -> dict:
        return self._repeated("ceiling", self._ceiling_once, "casts_per_s")

    def ceiling_and_throughput(self) -> tuple[dict, dict]:
        """Both scenarios in alternation (ceiling, throughput, ceiling, ...), so that
        whatever else runs on the machine weighs on both alike; the ratio of each pair
        is kept, and the median run of each scenario reported."""
        cruns, truns = [], []
        for i in range(max(1, self.args.repeat)):
            for name, runs, once in (
                ("ceiling", cruns, self._ceiling_once),
                ("throughput", truns, lambda d: self._throughput(d, False)),
            ):
                idle = wait_for_quiet(self.args.wait_quiet)
                d = self.scenario_dir(name) / str(i + 1)
                d.mkdir()
                run = once(d)
                run["machine_idle_before_pct"] = round(idle)
                runs.append(run)
                rate = run.get("casts_per_s") or run.get("deliveries_per_s")
                log(f"{name} run {i + 1}: {rate}/s")

        def median(runs, key):
            out = dict(sorted(runs, key=lambda x: x[key])[(len(runs) - 1) // 2])
            if len(runs) > 1:
                out["runs"] = len(runs)
                out[f"{key}_of_each_run"] = [x[key] for x in runs]
            return out

        ceiling = median(cruns, "casts_per_s")
        throughput = median(truns, "deliveries_per_s")
        throughput.pop("profile")
        pairs = list(zip(cruns, truns, strict=True))
        ratios = sorted(t["deliveries_per_s"] / c["casts_per_s"] for c, t in pairs)
        throughput["ratio_to_ceiling_of_each_pair"] = [
            round(t["deliveries_per_s"] / c["casts_per_s"], 3) for c, t in pairs
        ]
        throughput["ratio_to_ceiling_median"] = round(ratios[(len(ratios) - 1) // 2], 3)
        if self.args.profile:
            throughput["profiled_run"] = self._profiled_run()
        return ceiling, throughput

    def _ceiling_once(self, d: Path) -> dict:
        n = self.size("ceiling_alarms")
        config, _ = self.config(d, "ceiling", self.get_vhost().url)
        prefix = f"ceil{uuid.uuid4().hex[:6]}"
        server = Proc(
            [PY, str(BENCH / "bare_server.py"), "--config-file", str(config), "--prefix", prefix,
             "--expect", str(n), "--out", str(d / "handled.json"), "--timeout", "120"],
            d / "bare-server.log", stdout_pipe=True,
        )  # fmt: skip
        self.stack.callback(server.stop)
        server.event("ready", 60)
        sender = self._cast_burst_run(d, config, prefix, n, "http://127.0.0.1:9/unused", "x")
        time.sleep(0.3)
        pids = proc_tree(server.p.pid)
        cpu0 = cpu_seconds(pids)
        start = sender.go()
        casts = sender.wait_done(120)
        server.event("handled", 150)
        cpu1 = cpu_seconds(pids)
        rss = peak_rss_mb(pids)
        server.p.wait(30)
        handled = json.loads((d / "handled.json").read_text())["handled"]
        ids = {h[0] for h in handled}
        last = max(h[1] for h in handled)
        sent_end = max(c[2] for c in casts)
        lat = [h[1] - h[2] for h in handled if h[2] is not None]
        return {
            "alarms": n,
            "handled": len(ids),
            "sender_threads": self.args.sender_threads,
            "sender_casts_per_s": round(n / (sent_end - start)),
            "casts_per_s": round(len(ids) / (last - start)),
            "seconds": r(last - start, 2),
            "latency_p50_s": r(pct(lat, 50)),
            "latency_p99_s": r(pct(lat, 99)),
            "failed_casts": sum(1 for c in casts if c[3]),
            "cpu_ms_per_cast": r((cpu1 - cpu0) * 1000 / n, 3),
            "peak_rss_mb": r(max(rss.values()) if rss else None, 1),
        }

    def sc_throughput(self) -> dict:
        out = self._repeated(
            "throughput", lambda d: self._throughput(d, False), "deliveries_per_s"
        )
        out.pop("profile")
        if self.args.profile:
            out["profiled_run"] = self._profiled_run()
        return out

    def _profiled_run(self) -> dict:
        log("throughput: once more under py-spy")
        profiled = self._throughput(self.scenario_dir("throughput-profiled"), True)
        return {
            "note": "numbers of one more run sampled by py-spy (slower than unprofiled)",
            "deliveries_per_s": profiled["deliveries_per_s"],
            "cpu_ms_per_alarm": profiled["cpu_ms_per_alarm"],
            "profile": profiled["profile"],
        }

    def _start_profiler(self, d: Path, service: Service):
        spy = Path(PY).with_name("py-spy")
        if not spy.exists():
            raise RuntimeError("--profile needs py-spy in the virtualenv (pip install py-spy)")
        out = d / "profile.txt"
        proc = Proc(
            [str(spy), "record", "--pid", str(service.proc.p.pid), "--subprocesses",
             "--rate", "100", "--gil", "--nonblocking", "--format", "raw", "--output", str(out)],
            d / "py-spy.log",
        )  # fmt: skip
        time.sleep(1.0)
        return proc, out

    def _stop_profiler(self, spy) -> dict:
        proc, out = spy
        proc.stop(signal.SIGINT, timeout=30)
        return summarize_profile(out)

    def sc_latency(self) -> dict:
        out = self._throughput(
            self.scenario_dir("latency"), False, rate=self.size("latency_rate"),
            n=self.size("latency_alarms"),
        )  # fmt: skip
        out.pop("profile")
        return out

    def _throughput(self, d: Path, profile: bool, rate: float = 0.0, n: int = 0) -> dict:
        """Burst (rate 0: --sender-threads casting as fast as they can) or paced."""
        n = n or self.size("throughput_alarms")
        sink = self.get_sink()
        config, _ = self.config(d, "throughput", self.get_vhost().url)
        service = self.start_service(d, config, "throughput")
        self.stack.callback(service.stop)
        prefix = f"thr{uuid.uuid4().hex[:6]}"
        if rate:
            sender = Sender(
                d, config, prefix, [(n, sink.url("ok", prefix))], rate=rate,
                warmup_url=sink.url("ok", "warmup"),
            )  # fmt: skip
            self.stack.callback(sender.stop)
        else:
            sender = self._cast_burst_run(
                d, config, prefix, n, sink.url("ok", prefix), sink.url("ok", "warmup")
            )
        sink.wait_count(1, 30)
        time.sleep(0.3)
        sink.reset()
        pids = service.pids()
        idle_cores = None
        if rate:
            # what the service burns doing nothing, included in the CPU per alarm below
            c0, t0 = cpu_seconds(pids), time.monotonic()
            time.sleep(2.0)
            idle_cores = (cpu_seconds(pids) - c0) / (time.monotonic() - t0)
        cpu0 = cpu_seconds(pids)
        spy = self._start_profiler(d, service) if profile else None
        start = sender.go()
        casts = sender.wait_done(180)
        got = sink.wait_count(n, 180)
        cpu1 = cpu_seconds(pids)
        rss = peak_rss_mb(pids)
        summary = self._stop_profiler(spy) if spy else None
        time.sleep(0.5)
        records = [x for x in sink.records() if (x[2] or "").startswith(prefix)]
        sink.reset()
        service.stop()
        first: dict[str, list] = {}
        for rec in records:
            first.setdefault(rec[2], rec)
        last = max(rec[0] for rec in records) if records else start
        lat = [rec[0] - rec[3] for rec in first.values()]
        sent_end = max(c[2] for c in casts)
        errors = len(re.findall(r" (ERROR|WARNING) ceilo_notifier", service.log_text()))
        return {
            "alarms": n,
            "delivered": len(first),
            "duplicates": len(records) - len(first),
            "sender": (
                f"paced at {rate:g}/s" if rate else f"burst, {self.args.sender_threads} threads"
            ),
            "rate_per_s": rate or None,
            "sender_casts_per_s": round(n / (sent_end - start)),
            "deliveries_per_s": round(len(first) / (last - start)) if records else 0,
            "seconds": r(last - start, 2),
            "latency_p50_s": r(pct(lat, 50)),
            "latency_p99_s": r(pct(lat, 99)),
            "latency_max_s": r(max(lat) if lat else None),
            "cpu_ms_per_alarm": r((cpu1 - cpu0) * 1000 / n, 3),
            "cpu_s_total": r(cpu1 - cpu0, 2),
            "cpu_cores_busy": r((cpu1 - cpu0) / (last - start), 2) if records else None,
            "cpu_cores_when_idle": r(idle_cores, 3),
            "processes": len(pids),
            "peak_rss_mb_per_process": [round(v, 1) for v in rss.values()],
            "peak_rss_mb_max": r(max(rss.values()) if rss else None, 1),
            "service_warnings_or_errors": errors,
            "arrived_at_sink": got,
            "profile": summary,
        }

    def _slow_once(self, d: Path, label: str, extra: dict) -> dict:
        n = self.size("slow_alarms")
        sink = self.get_sink()
        config, _ = self.config(d, f"slow-{label}", self.get_vhost().url, extra)
        service = self.start_service(d, config, f"slow-{label}")
        try:
            prefix = f"slow{uuid.uuid4().hex[:6]}"
            sender = Sender(
                d, config, prefix, [(n, sink.url("delay", prefix))],
                threads=1, warmup_url=sink.url("ok", "warmup"),
            )  # fmt: skip
            try:
                sink.wait_count(1, 30)
                time.sleep(0.3)
                sink.reset()
                start = sender.go()
                casts = sender.wait_done(120)
                sink.wait_count(n, 90)
            finally:
                sender.stop()
            records = [x for x in sink.records() if (x[2] or "").startswith(prefix)]
            sink.reset()
        finally:
            service.stop()
        ids = {x[2] for x in records}
        arrivals = sorted(x[0] - start for x in records)
        last = arrivals[-1] + sink.delay if records else None
        return {
            "alarms": n,
            "delivered": len(ids),
            "webhook_delay_s": sink.delay,
            "total_s": r(last, 2) if last else None,
            "casting_s": r(max(c[2] for c in casts) - start, 2),
            "first_request_at_s": r(arrivals[0], 2) if arrivals else None,
            "last_request_at_s": r(arrivals[-1], 2) if arrivals else None,
            "settings": extra.get("alarm", {}) or "defaults",
        }

    def sc_slow(self) -> dict:
        return self._slow_once(self.scenario_dir("slow"), "defaults", {})

    def _hung_once(self, d: Path, label: str, same_host: bool, extra: dict, cap: float) -> dict:
        n_hung, n_ok = self.size("hung_hung"), self.size("hung_healthy")
        sink = self.get_sink()
        config, _ = self.config(d, f"hung-{label}", self.get_vhost().url, extra)
        service = self.start_service(d, config, f"hung-{label}")
        try:
            prefix = f"hung{uuid.uuid4().hex[:6]}"
            hung_url = sink.url("hang", prefix, port=0 if same_host else 1)
            ok_url = sink.url("ok", prefix, port=0)
            sender = Sender(
                d, config, prefix, [(n_hung, hung_url), (n_ok, ok_url)],
                threads=1, warmup_url=sink.url("ok", "warmup"),
            )  # fmt: skip
            try:
                sink.wait_count(1, 30)
                time.sleep(0.3)
                sink.reset()
                sender.go()
                casts = sender.wait_done(60)
                deadline = time.monotonic() + cap
                healthy = []
                while time.monotonic() < deadline:
                    records = sink.records()
                    healthy = [x for x in records if x[1].startswith("/ok/")]
                    if len({x[2] for x in healthy}) >= n_ok:
                        break
                    time.sleep(0.1)
                hung_arrived = sum(1 for x in sink.records() if x[1].startswith("/hang/"))
            finally:
                sender.stop()
        finally:
            # hung requests fail at once from now on, so the service stops without
            # waiting shutdown_grace_period for them
            sink.release()
            service.stop()
            sink.reset()
        ok_ids = {c[0] for c in casts[n_hung:]}
        first: dict[str, list] = {}
        for rec in healthy:
            if rec[2] in ok_ids:
                first.setdefault(rec[2], rec)
        lat = [x[0] - x[3] for x in first.values()]
        return {
            "hung_alarms": n_hung,
            "healthy_alarms": n_ok,
            "hung_webhook": "same host:port as the healthy one" if same_host else "another port",
            "hung_requests_arrived": hung_arrived,
            "healthy_delivered": len(first),
            "waited_at_most_s": cap,
            "healthy_p50_s": r(pct(lat, 50)),
            "healthy_max_s": r(max(lat)) if len(first) == n_ok else None,
            "settings": extra.get("alarm", {}) or "defaults",
        }

    def sc_hung(self) -> dict:
        d = self.scenario_dir("hung")
        out = self._hung_once(d, "other-host", False, {}, 30.0)
        cap = self.size("hung_same_host_cap_s")
        out["same_host"] = self._hung_once(d, "same-host", True, {}, cap)
        return out

    def sc_broker_restart(self) -> dict:
        d = self.scenario_dir("broker-restart")
        node = rabbit.OwnNode(self.workdir)
        self.stack.enter_context(node)
        log(f"starting own RabbitMQ node {node.name} on port {node.port}")
        out: dict = {"node_start_s": round(node.start(), 1)}
        variants = self.args.restart_variants or list(DEFAULT_RESTART_VARIANTS)
        for name in variants:
            log(f"broker-restart: variant {name}")
            try:
                out[name] = self._restart_once(d, node, name, RESTART_VARIANTS[name])
            except Exception as exc:  # noqa: BLE001 - next variant still runs
                traceback.print_exc()
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
                if not node.running:
                    node.start()
        return out

    def _restart_once(self, d: Path, node: rabbit.OwnNode, name: str, rabbit_opts: dict) -> dict:
        n = self.size("restart_alarms")
        rate = self.size("restart_rate")
        sink = self.get_sink()
        vhost = f"restart-{name}-{uuid.uuid4().hex[:6]}"
        url = node.add_vhost(vhost)
        extra = {"oslo_messaging_rabbit": dict(rabbit_opts)} if rabbit_opts else {}
        config, _ = self.config(d, f"restart-{name}", url, extra)
        service = self.start_service(d, config, f"restart-{name}")
        try:
            prefix = f"rst{name[:3]}{uuid.uuid4().hex[:6]}"
            sender = Sender(
                d, config, prefix, [(n, sink.url("ok", prefix))],
                rate=rate, warmup_url=sink.url("ok", "warmup"),
            )  # fmt: skip
            try:
                sink.wait_count(1, 30)
                time.sleep(0.3)
                sink.reset()
                queues_before = node.list_queues(vhost)
                sender.go()
                # restart once 40 % of the alarms are cast
                target = max(100, int(n * 0.4) // 100 * 100)
                while True:
                    ev = sender.proc.event("progress", 120)
                    if ev["n"] >= target:
                        break
                restarted_at = ev["n"]
                down_s, stop_s = node.restart()
                casts = sender.wait_done(300)
            finally:
                sender.stop()
            sent_ok = {c[0] for c in casts if not c[3]}
            sink.wait_quiet(len(sent_ok), 120, 4.0)
            records = [x for x in sink.records() if (x[2] or "").startswith(prefix)]
            sink.reset()
            queues_after = node.list_queues(vhost)
            service_log = service.log_text()
        finally:
            service.stop()
        not_sent = {c[0] for c in casts if c[3]}
        arrived: dict[str, int] = {}
        for rec in records:
            arrived[rec[2]] = arrived.get(rec[2], 0) + 1
        lost = sorted(sent_ok - set(arrived))
        backlog = self._restart_backlog(d, node, config, name)
        return {
            "alarms": n,
            "rate_per_s": rate,
            "settings": rabbit_opts or "oslo.messaging defaults",
            "restart_after_casts": restarted_at,
            "broker_down_s": r(down_s, 1),
            "sent": len(sent_ok),
            "not_sent": len(not_sent),
            "not_sent_errors": sorted({c[3] for c in casts if c[3]})[:3],
            "delivered": len(set(arrived) & sent_ok),
            "lost": len(lost),
            "lost_ids": lost[:20],
            "duplicated": sum(v - 1 for v in arrived.values()),
            "delivered_although_not_sent": len(set(arrived) & not_sent),
            "queues_before": _queue_summary(queues_before),
            "queues_after": _queue_summary(queues_after),
            "service_reconnects": service_log.count("Reconnected to AMQP server"),
            "service_errors": len(re.findall(r" ERROR ", service_log)),
            "backlog": backlog,
        }

    def _restart_backlog(self, d: Path, node: rabbit.OwnNode, config: Path, name: str) -> dict:
        """Casts queued while the service is stopped, then a broker restart, then the
        service again: what survives in the queue."""
        n = self.size("restart_backlog")
        sink = self.get_sink()
        prefix = f"bkl{name[:3]}{uuid.uuid4().hex[:6]}"
        sender = Sender(d, config, prefix, [(n, sink.url("ok", prefix))])
        try:
            sender.go()
            casts = sender.wait_done(120)
        finally:
            sender.stop()
        sent_ok = {c[0] for c in casts if not c[3]}
        down_s, _ = node.restart()
        service = self.start_service(d, config, f"restart-{name}-backlog")
        try:
            sink.wait_quiet(len(sent_ok), 60, 3.0)
            records = [x for x in sink.records() if (x[2] or "").startswith(prefix)]
            sink.reset()
        finally:
            service.stop()
        ids = [x[2] for x in records]
        return {
            "queued_while_service_stopped": len(sent_ok),
            "not_sent": n - len(sent_ok),
            "delivered_after_restart": len(set(ids) & sent_ok),
            "lost": len(sent_ok - set(ids)),
            "duplicated": len(ids) - len(set(ids)),
            "broker_down_s": r(down_s, 1),
        }


def _short_frame(frame: str) -> str:
    """'func (path/to/module.py:12)' without this machine's directories."""
    m = re.match(r"(.*) \((.*):(\d+)\)$", frame)
    if not m:
        return frame
    func, path, _line = m.groups()
    for marker in ("site-packages/", "/lib/python3", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3":
                path = "stdlib/" + path.split("/", 1)[-1]
            break
    else:
        if "/ceilo_notifier/" in path:
            path = "ceilo_notifier/" + path.split("/ceilo_notifier/", 1)[1]
    return f"{func} ({path})"


def summarize_profile(path: Path, top: int = 25) -> dict:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    self_n: dict[str, int] = {}
    incl_n: dict[str, int] = {}
    total = 0
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {"error": "py-spy wrote no profile"}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short_frame(f) for f in stack.split(";")]
        # py-spy puts "process ..." and "thread ..." frames first
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        self_n[frames[-1]] = self_n.get(frames[-1], 0) + n
        for f in set(frames):
            incl_n[f] = incl_n.get(f, 0) + n

    def rank(d):
        return [
            [round(100 * v / total, 1), k]
            for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]
        ]

    return {"samples": total, "self_pct": rank(self_n), "inclusive_pct": rank(incl_n)}


def _queue_summary(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and not parts[0].startswith("reply_") and parts[0] != "name":
            name = re.sub(r"bench_[a-z_]+_[0-9a-f]{8}", "<topic>", parts[0])
            name = re.sub(r"bench-[0-9a-f]{8}", "<host>", name)
            name = re.sub(r"_fanout_[0-9a-f]{32}", "_fanout_<uuid>", name)
            out.append(" ".join([name, *parts[1:3]]))
    return sorted(out)


def export_rev(rev: str, dest: Path) -> None:
    """Put ceilo_notifier as of rev first on the children's PYTHONPATH."""
    import io
    import tarfile

    dest.mkdir()
    tar = subprocess.run(
        ["git", "archive", "--format=tar", rev, "ceilo_notifier"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(dest, filter="data")
    CHILD_ENV["PYTHONPATH"] = os.pathsep.join(
        x for x in (str(dest), os.environ.get("PYTHONPATH")) if x
    )


def parse_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, option = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set wants SECTION.OPTION=VALUE, got {item!r}")
        out.setdefault(section, {})[option] = value
    return out


# -- machine, targets, reports ----------------------------------------------------------


def machine_info(args) -> dict:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    try:
        rmq = rabbit.server_version(args.rabbit_host, args.rabbit_port)
    except Exception as exc:  # noqa: BLE001
        rmq = f"? ({exc})"
    commit = "?"
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", args.rev or "HEAD"],
            cwd=ROOT, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        if args.rev:
            commit += f" (--rev {args.rev})"
        else:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--", "ceilo_notifier", "setup.cfg"],
                cwd=ROOT, capture_output=True, text=True,
            ).stdout.strip()  # fmt: skip
            if dirty:
                commit += " + work tree changes"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "oslo.messaging": version("oslo.messaging"),
        "kombu": version("kombu"),
        "oslo.service": version("oslo.service"),
        "rabbitmq": rmq,
        "commit": commit,
    }


def service_settings(overrides: dict[str, dict[str, str]]) -> dict:
    """The options of the ceilo-notifier under test that shape the scenarios: its defaults
    (asked from the code that runs, so --rev is honoured) with --set applied."""
    code = (
        "import json\n"
        "from ceilo_notifier import cmd\n"
        "from oslo_config import cfg\n"
        "from ceilo_notifier import opts\n"
        "conf = cfg.ConfigOpts(); opts.register_opts(conf); conf([], default_config_files=[])\n"
        "out = {}\n"
        "for name in ('workers', 'shutdown_grace_period'):\n"
        "    out[name] = getattr(conf, name, None)\n"
        "for name in ('dispatch_pool_size', 'per_host_concurrency', 'rest_notifier_timeout',\n"
        "             'rest_notifier_max_retries'):\n"
        "    out[name] = getattr(conf.alarm, name, None)\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run(
        [PY, "-c", code], env=CHILD_ENV, cwd=tempfile.gettempdir(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    try:
        out = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": res.stderr[-500:]}
    for values in overrides.values():
        for k, v in values.items():
            if k in out:
                out[k] = f"{v} (--set)"
    return out


def evaluate(res: dict, settings: dict | None = None) -> list[dict]:
    """One row per target: measured, aodh, verdict, explanation."""
    rows = []
    ceil = res.get("ceiling", {})
    thr = res.get("throughput", {})

    def row(target, aodh, measured, met, by, why):
        verdict = "n/a" if met is None else ("met" if met else f"missed by {by}")
        rows.append(
            {"target": target, "aodh": aodh, "measured": measured, "verdict": verdict, "why": why}
        )

    if "deliveries_per_s" in thr and "casts_per_s" in ceil:
        ratio = thr.get("ratio_to_ceiling_median") or thr["deliveries_per_s"] / ceil["casts_per_s"]
        need = TARGETS["throughput_vs_ceiling"] * ceil["casts_per_s"]
        cores = thr.get("cpu_cores_busy") or thr["cpu_ms_per_alarm"] * thr["deliveries_per_s"] / 1e3
        row(
            "throughput >= 90% of the bare oslo.messaging ceiling",
            f"{AODH['deliveries_per_s']}/s",
            f"{thr['deliveries_per_s']}/s vs {ceil['casts_per_s']}/s (median runs); "
            f"median ratio of the {thr.get('runs', 1)} ceiling/throughput pairs: {ratio:.0%}",
            ratio >= TARGETS["throughput_vs_ceiling"],
            f"{(TARGETS['throughput_vs_ceiling'] - ratio) * 100:.0f} points ({ratio:.0%} of "
            f"the ceiling; at the median ceiling that is ~{need - thr['deliveries_per_s']:.0f}/s "
            "short)",
            f"the service used {cores:.2f} cores while delivering"
            + (
                " - about all one Python process gets under the GIL"
                if cores >= 0.8 and str((settings or {}).get("workers")) == "1"
                else ""
            )
            + f" (2 cores shared with RabbitMQ, the sender and the sink); at "
            f"{thr['cpu_ms_per_alarm']} ms CPU per alarm one core delivers at most "
            f"~{1000 / thr['cpu_ms_per_alarm']:.0f}/s, while 90% of the ceiling needs "
            f"{need:.0f}/s",
        )
    elif thr or ceil:
        row("throughput >= 90% of the ceiling", "290/s", "needs ceiling and throughput", None,
            "", "run both scenarios")  # fmt: skip
    if "latency_p99_s" in thr:
        p99 = thr["latency_p99_s"]
        burst = thr["alarms"] / thr["sender_casts_per_s"]
        drain = thr["alarms"] / max(1, thr["deliveries_per_s"])
        bare = ceil.get("latency_p99_s")
        row(
            f"p99 latency <= {TARGETS['p99_s']} s",
            f"{AODH['p99_s']} s",
            f"p50 {thr['latency_p50_s']} s, p99 {p99} s",
            p99 <= TARGETS["p99_s"],
            f"{p99 - TARGETS['p99_s']:.2f} s",
            f"queueing: the sender casts {thr['alarms']} alarms in {burst:.1f} s "
            f"({thr['sender_casts_per_s']}/s), the service needs {drain:.1f} s to deliver them, "
            f"so the last ones wait ~{max(0, drain - burst):.1f} s"
            + (f"; the bare server's p99 under the same burst: {bare} s" if bare else ""),
        )
    lat = res.get("latency", {})
    if "latency_p99_s" in lat:
        p99 = lat["latency_p99_s"]
        row(
            f"(extra) p99 latency <= {TARGETS['p99_s']} s when casts come {lat['sender']}",
            "-",
            f"p50 {lat['latency_p50_s']} s, p99 {p99} s, max {lat['latency_max_s']} s",
            p99 <= TARGETS["p99_s"],
            f"{p99 - TARGETS['p99_s']:.2f} s",
            "not one of the given targets: latency without a backlog, i.e. what one alarm "
            "waits when the service keeps up"
            + (
                f" - it does not at this rate: it delivered {lat['deliveries_per_s']}/s"
                if lat.get("rate_per_s") and lat["deliveries_per_s"] < 0.95 * lat["rate_per_s"]
                else ""
            ),
        )
    if "cpu_ms_per_alarm" in thr:
        cpu = thr["cpu_ms_per_alarm"]
        row(
            f"CPU <= {TARGETS['cpu_ms_per_alarm']} ms per alarm",
            f"{AODH['cpu_ms_per_alarm']} ms",
            f"{cpu} ms (peak RSS {thr['peak_rss_mb_max']} MB)",
            cpu <= TARGETS["cpu_ms_per_alarm"],
            f"{cpu - TARGETS['cpu_ms_per_alarm']:.2f} ms",
            "utime+stime of the service's processes (launcher + worker) during the run"
            + (
                f"; the bare oslo.messaging server needs {ceil['cpu_ms_per_cast']} ms per cast, "
                f"so ~{cpu - ceil['cpu_ms_per_cast']:.2f} ms per alarm is ceilo-notifier's own "
                "work (validation, dispatch hand-off, the HTTP POST, logging, events)"
                if ceil.get("cpu_ms_per_cast") is not None
                else ""
            ),
        )
    slow = res.get("slow", {})
    settings = settings or {}
    per_host = settings.get("per_host_concurrency")
    pool = settings.get("dispatch_pool_size")
    if "total_s" in slow:
        total = slow["total_s"]
        n = slow["alarms"]
        why = f"every action is on one host:port; per_host_concurrency={per_host}, "
        why += f"dispatch_pool_size={pool}"
        if per_host and pool:
            slots = min(per_host, pool)
            why += (
                f": {slots} deliveries at once there, so ceil({n}/{slots}) x 1 s = "
                f"{math.ceil(n / slots)} s at best; on top of it: casting took "
                f"{slow.get('casting_s')} s and the last request reached the webhook "
                f"{slow.get('last_request_at_s')} s after the first cast"
            )
        row(
            f"slow webhook (1 s): {n} alarms delivered in <= {TARGETS['slow_total_s']} s",
            f"{AODH['slow_total_s']} s",
            f"{total} s",
            total is not None and total <= TARGETS["slow_total_s"],
            f"{(total or 0) - TARGETS['slow_total_s']:.2f} s",
            why,
        )
    hung = res.get("hung", {})
    if "healthy_delivered" in hung:
        same = hung.get("same_host", {})
        mx = hung["healthy_max_s"]
        why = (
            "a hung host only holds its own per-host slots "
            f"(per_host_concurrency={per_host}, each for up to rest_notifier_timeout="
            f"{settings.get('rest_notifier_timeout')} s per attempt)"
        )
        if per_host and hung["hung_alarms"] < per_host:
            why += (
                f"; {hung['hung_alarms']} hung deliveries fit in one host's slots, so even "
                "on the same host:port the healthy ones are not queued behind them - with "
                f">= {per_host} hung ones on that host they would be"
            )
        row(
            f"hung webhook: healthy alarms delivered within {TARGETS['hung_healthy_max_s']} s",
            "-",
            f"hung host on another port: p50 {hung['healthy_p50_s']} s, max {mx} s; "
            f"same host:port: {same.get('healthy_delivered')}/{same.get('healthy_alarms')} "
            f"delivered, max {same.get('healthy_max_s')} s",
            mx is not None and mx <= TARGETS["hung_healthy_max_s"],
            f"{(mx or 99) - TARGETS['hung_healthy_max_s']:.2f} s",
            why,
        )
    rst = res.get("broker-restart", {})
    for name, v in rst.items():
        if not isinstance(v, dict) or "lost" not in v:
            continue
        recommended = name != "default"
        b = v.get("backlog") or {}
        lost = v["lost"] + b.get("lost", 0)
        dup = v["duplicated"] + b.get("duplicated", 0)
        measured = (
            f"{v['lost']} lost, {v['duplicated']} duplicated of {v['sent']} sent "
            f"({v['not_sent']} not sent)"
        )
        if "lost" in b:
            measured += (
                f"; backlog of {b['queued_while_service_stopped']} queued while the service "
                f"was stopped: {b['lost']} lost, {b['duplicated']} duplicated"
            )
        row(
            f"broker restart, {name} queues: 0 lost / 0 duplicated",
            AODH["restart_lost"],
            measured,
            (lost == 0 and dup == 0) if recommended else None,
            f"{lost} lost, {dup} duplicated",
            _restart_why(name, v),
        )
    return rows


def _restart_why(name: str, v: dict) -> str:
    b = v.get("backlog") or {}
    if name == "default":
        why = (
            "default queues are transient (classic, non-durable): the restart deletes them, "
            "with what they hold, and the exchange. While the service consumes as fast as "
            "casts come, little is in the queue at the moment of the restart, so the loss "
            "during the paced run is a matter of luck"
            + (f" ({v['lost']} this time)" if v["lost"] else " (none this time)")
        )
        if b.get("lost"):
            why += (
                f"; a backlog is lost whole ({b['lost']} of "
                f"{b['queued_while_service_stopped']} queued while the service was stopped)"
            )
        return why
    settings = ", ".join(f"{k} = {x}" for k, x in v["settings"].items())
    why = f"{settings}; queues after the restart: {', '.join(v['queues_after'])}"
    if v["duplicated"] or b.get("duplicated"):
        why += (
            "; duplicates come from a publish whose confirm was lost (re-published) or an ack "
            "the broker never processed (redelivered); oslo.messaging only de-duplicates the "
            "last 16 ids"
        )
    return why


def fmt_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def summary_rows(res: dict) -> list[list[str]]:
    rows = []
    s = res.get("sink", {})
    if "req_per_s" in s:
        rows.append(["sink", "req/s (no pipelining, 16 conns)", s["one_at_a_time"]["req_per_s"]])
        rows.append(["sink", "req/s (pipelined, 8 conns)", s["pipelined"]["req_per_s"]])
    c = res.get("ceiling", {})
    if "casts_per_s" in c:
        rows.append(["ceiling", "casts handled/s (bare RPC server)", c["casts_per_s"]])
        rows.append(["ceiling", "sender casts/s", c["sender_casts_per_s"]])
        rows.append(["ceiling", "handling latency p50 / p99 s",
                     f"{c['latency_p50_s']} / {c['latency_p99_s']}"])  # fmt: skip
    t = res.get("throughput", {})
    if "deliveries_per_s" in t:
        rows.append(["throughput", "deliveries/s", t["deliveries_per_s"]])
        lat = f"{t['latency_p50_s']} / {t['latency_p99_s']} / {t['latency_max_s']}"
        rows.append(["throughput", "latency p50 / p99 / max s", lat])
        rows.append(["throughput", "CPU ms per alarm", t["cpu_ms_per_alarm"]])
        rows.append(["throughput", "peak RSS MB (per process)", t["peak_rss_mb_per_process"]])
        dup = f"{t['delivered']} / {t['duplicates']}"
        rows.append(["throughput", "delivered / duplicates", dup])
    la = res.get("latency", {})
    if "latency_p99_s" in la:
        lat = f"{la['latency_p50_s']} / {la['latency_p99_s']} / {la['latency_max_s']}"
        rows.append(["latency", f"{la['sender']}: p50 / p99 / max s", lat])
        rows.append(["latency", "CPU ms per alarm (service's CPU when idle, cores)",
                     f"{la['cpu_ms_per_alarm']} ({la.get('cpu_cores_when_idle')})"])  # fmt: skip
    sl = res.get("slow", {})
    if "total_s" in sl:
        rows.append(["slow", f"{sl['alarms']} x 1 s webhook: total s", sl["total_s"]])
    h = res.get("hung", {})
    if "healthy_delivered" in h:
        rows.append(["hung", "hung on another port: healthy p50 / max s",
                     f"{h['healthy_p50_s']} / {h['healthy_max_s']}"])  # fmt: skip
        for key, label in (("same_host", "hung on the same host:port"),):
            v = h.get(key, {})
            if v:
                rows.append(["hung", f"{label}: healthy delivered, p50 / max s",
                             f"{v['healthy_delivered']}/{v['healthy_alarms']}, "
                             f"{v['healthy_p50_s']} / {v['healthy_max_s']}"])  # fmt: skip
    for name, v in res.get("broker-restart", {}).items():
        if isinstance(v, dict) and "lost" in v:
            counts = f"{v['sent']} / {v['not_sent']} / {v['lost']} / {v['duplicated']}"
            rows.append(["broker-restart", f"{name}: sent / not sent / lost / duplicated", counts])
            b = v.get("backlog") or {}
            if "lost" in b:
                rows.append([
                    "broker-restart",
                    f"{name}: backlog queued while service stopped / lost / duplicated",
                    f"{b['queued_while_service_stopped']} / {b['lost']} / {b['duplicated']}",
                ])  # fmt: skip
        elif isinstance(v, dict) and "error" in v:
            rows.append(["broker-restart", name, f"ERROR {v['error']}"])
    for name, v in res.items():
        if isinstance(v, dict) and "error" in v:
            rows.append([name, "ERROR", v["error"][:100]])
    return rows


NOTES_BEGIN = "<!-- notes: hand-written, kept when run.py refreshes this file -->"
NOTES_END = "<!-- /notes -->"


def write_results_md(path: Path, doc: dict, json_name: str) -> None:
    old_notes = ""
    if path.exists():
        text = path.read_text()
        if NOTES_BEGIN in text and NOTES_END in text:
            old_notes = text.split(NOTES_BEGIN, 1)[1].split(NOTES_END, 1)[0].strip("\n")
    m = doc["machine"]
    res = doc["scenarios"]
    out = [
        "# ceilo-notifier benchmark results",
        "",
        f"Run {doc['date']} with `{doc['command']}`"
        + (" (**--quick**: smaller counts, not comparable)" if doc["quick"] else "")
        + f"; raw numbers in `bench/results/{json_name}`. Regenerate with "
        "`.venv/bin/python bench/run.py`.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    for k in ("cpu", "cores", "ram", "kernel", "python", "oslo.messaging", "kombu",
              "oslo.service", "rabbitmq", "commit"):  # fmt: skip
        out.append(f"| {k} | {m.get(k)} |")
    busy = {
        name: v["machine_idle_before_pct"]
        for name, v in res.items()
        if isinstance(v, dict) and v.get("machine_idle_before_pct", 100) < 85
    }
    if busy:
        out += ["", "**Warning:** other work was running on the machine before these "
                f"scenarios (idle % before each): {busy}; their numbers are worse than "
                "on a quiet machine."]  # fmt: skip
    out += ["", "ceilo-notifier settings in effect (its defaults unless given with --set): "
            + ", ".join(f"`{k}={v}`" for k, v in doc.get("service_settings", {}).items())]
    out += ["", "## Targets", "",
            "| target | aodh-notifier | measured | verdict | first explanation |",
            "|---|---|---|---|---|"]  # fmt: skip
    for t in doc["targets"]:
        out.append(
            f"| {t['target']} | {t['aodh']} | {t['measured']} | **{t['verdict']}** | {t['why']} |"
        )
    out += ["", "## Numbers", "", "| scenario | measure | value |", "|---|---|---|"]
    for row in summary_rows(res):
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    out += ["", "## Scenario details", ""]
    for name, v in res.items():
        out += [f"### {name}", "", "```json", json.dumps(v, indent=1), "```", ""]
    out += history(path.parent / "results")
    out += ["## Notes", "", NOTES_BEGIN, old_notes or "(none yet)", NOTES_END, ""]
    path.write_text("\n".join(out))


def history(results_dir: Path) -> list[str]:
    """Key numbers of every full run kept in results/, oldest first."""
    rows = []
    for f in sorted(results_dir.glob("*.json")):
        if f.stem.endswith(("-quick", "-partial")):
            continue
        try:
            doc = json.loads(f.read_text())
        except ValueError:
            continue
        sc = doc.get("scenarios", {})
        c, t = sc.get("ceiling", {}), sc.get("throughput", {})
        rst = sc.get("broker-restart", {})

        def lostdup(name, rst=rst):
            v = rst.get(name, {})
            if "lost" not in v:
                return "-"
            b = v.get("backlog") or {}
            out = f"{v['lost']}/{v['duplicated']}"
            if "lost" in b:
                out += f"; backlog {b['lost']}/{b['duplicated']}"
            return out

        rows.append(
            "| " + " | ".join(str(x) for x in (
                doc.get("date", f.stem)[:16], doc.get("machine", {}).get("commit", "?"),
                c.get("casts_per_s", "-"), t.get("deliveries_per_s", "-"),
                t.get("ratio_to_ceiling_median", "-"),
                t.get("latency_p99_s", "-"), t.get("cpu_ms_per_alarm", "-"),
                sc.get("slow", {}).get("total_s", "-"),
                sc.get("hung", {}).get("healthy_max_s", "-"),
                lostdup("default"), lostdup("quorum"),
            )) + " |"
        )  # fmt: skip
    if not rows:
        return []
    return [
        "## History (full runs in bench/results/)",
        "",
        "| date | commit | ceiling /s | deliveries /s | ratio | p99 s | CPU ms/alarm | slow s "
        "| hung max s | restart default lost/dup | restart quorum lost/dup |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                        help="run only these (repeatable); default: all")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smaller counts, for trying things")
    parser.add_argument("--set", action="append", metavar="SECTION.OPTION=VALUE",
                        help="extra ceilo-notifier option for every scenario; {dir} in the "
                        "value is the scenario's temporary directory")  # fmt: skip
    parser.add_argument("--sender-threads", type=int, default=4,
                        help="casting threads of the burst sender")  # fmt: skip
    parser.add_argument("--restart-variants", nargs="+", choices=sorted(RESTART_VARIANTS),
                        help="broker-restart variants; default: "
                        + " ".join(DEFAULT_RESTART_VARIANTS))  # fmt: skip
    parser.add_argument("--rabbit-host",
                        default=os.environ.get("CEILO_BENCH_RABBIT_HOST", "127.0.0.1"))  # fmt: skip
    parser.add_argument("--rabbit-port", type=int,
                        default=int(os.environ.get("CEILO_BENCH_RABBIT_PORT", "5672")))  # fmt: skip
    parser.add_argument("--no-write", action="store_true",
                        help="print only; write neither results/*.json nor RESULTS.md")  # fmt: skip
    parser.add_argument("--repeat", type=int,
                        help="runs of ceiling and of throughput, the median one reported "
                        "(default 3, 1 with --quick)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--report", metavar="RESULTS_JSON",
                        help="run nothing: rewrite RESULTS.md from this results file")  # fmt: skip
    parser.add_argument("--wait-quiet", type=float, default=30.0, metavar="SECONDS",
                        help="before each scenario, wait up to this long for the machine "
                        "to be >= 85%% idle (default 30)")  # fmt: skip
    parser.add_argument("--profile", action="store_true",
                        help="also profile throughput with py-spy")  # fmt: skip
    parser.add_argument("--rev", help="benchmark ceilo_notifier as of this git revision "
                        "(exported to a temporary directory) instead of the work tree")  # fmt: skip
    args = parser.parse_args(argv)
    if args.report:
        doc = json.loads(Path(args.report).read_text())
        doc["targets"] = evaluate(doc["scenarios"], doc.get("service_settings"))
        write_results_md(BENCH / "RESULTS.md", doc, Path(args.report).name)
        print("refreshed bench/RESULTS.md")
        return 0
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    selected = [s for s in SCENARIOS if not args.scenario or s in args.scenario]
    if "throughput" in selected and "ceiling" not in selected:
        selected.insert(selected.index("throughput"), "ceiling")  # the target compares the two

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    began = time.monotonic()
    date = datetime.datetime.now(datetime.timezone.utc)
    workdir = Path(tempfile.mkdtemp(prefix="ceilo-bench-"))
    failed = False
    results: dict[str, dict] = {}
    try:
        if args.rev:
            export_rev(args.rev, workdir / "src")
        machine = machine_info(args)
        settings = service_settings(parse_overrides(args.set or []))
        log(f"ceilo-notifier settings: {settings}")
        log(f"machine: {machine['cpu']}, {machine['cores']} cores, RabbitMQ {machine['rabbitmq']}")
        paired = "ceiling" in selected and "throughput" in selected
        for name in selected:
            if paired and name == "throughput":
                continue  # ran with ceiling
            idle = wait_for_quiet(args.wait_quiet)
            log(f"scenario {name} (machine {idle:.0f}% idle before it) ...")
            if idle < 85:
                log(f"warning: other work keeps this machine {100 - idle:.0f}% busy; this "
                    "scenario's numbers will be worse than on a quiet machine")  # fmt: skip
            t0 = time.monotonic()
            with contextlib.ExitStack() as stack:
                bench = Bench(args, workdir, stack)
                bench.results = results
                try:
                    if paired and name == "ceiling":
                        results["ceiling"], results["throughput"] = bench.ceiling_and_throughput()
                    else:
                        results[name] = getattr(bench, "sc_" + name.replace("-", "_"))()
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 - the other scenarios still run
                    failed = True
                    traceback.print_exc()
                    results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            results.setdefault(name, {})["wall_s"] = round(time.monotonic() - t0, 1)
            results[name]["machine_idle_before_pct"] = round(idle)
            log(f"scenario {name} done in {results[name]['wall_s']} s")
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    finally:
        if args.keep:
            log(f"temporary files kept in {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    given = argv if argv is not None else sys.argv[1:]
    cmdline = " ".join([".venv/bin/python bench/run.py", *given])
    doc = {
        "date": date.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": cmdline,
        "quick": args.quick,
        "wall_s": round(time.monotonic() - began, 1),
        "machine": machine,
        "overrides": parse_overrides(args.set or []),
        "service_settings": settings,
        "aodh_reference": AODH,
        "targets_config": TARGETS,
        "scenarios": results,
    }
    doc["targets"] = evaluate(results, settings)
    print()
    print(fmt_table(summary_rows(results), ["scenario", "measure", "value"]))
    print()
    print(fmt_table([[t["target"], t["measured"], t["verdict"]] for t in doc["targets"]],
                    ["target", "measured", "verdict"]))  # fmt: skip
    print(f"\nwall time {doc['wall_s']} s")
    if not args.no_write:
        full = not args.quick and selected == list(SCENARIOS)
        suffix = "" if full else ("-quick" if args.quick else "-partial")
        out_dir = BENCH / "results"
        out_dir.mkdir(exist_ok=True)
        json_name = date.strftime("%Y-%m-%dT%H%M%SZ") + suffix + ".json"
        (out_dir / json_name).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote bench/results/{json_name}")
        if full:
            write_results_md(BENCH / "RESULTS.md", doc, json_name)
            print("refreshed bench/RESULTS.md")
        else:
            print("bench/RESULTS.md not refreshed (only a full run without --quick does that)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
