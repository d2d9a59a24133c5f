"""Helpers shared by the benchmark's targets and scenarios.

Percentiles, config files, the CPU time and RSS of a process tree, the idle
share of the machine, and the child processes every run starts: the webhook
sink (``sink.py``) and the alarm sender (``sender.py``).
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# The Python of the project's virtualenv: it runs the sink, the sender, the bare
# consumer, the stub consumer and ceilo-notifier itself.
PY = sys.executable
# Environment of every process the benchmark starts (PYTHONPATH is set by --rev).
CHILD_ENV = dict(os.environ)

# How the benchmark feeds alarms, the way aodh's evaluator does.
NOTIFICATION_EXCHANGE = "aodh"
NOTIFICATION_TOPIC = "alarming"
NOTIFICATION_PUBLISHER = "alarming.evaluator"
NOTIFICATION_EVENT_TYPE = "alarm.update"
# The RPC topic the benchmark's ceilo-notifier and bare consumer listen on.
RPC_TOPIC = "bench_alarm_notifier"


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


def median_by(runs: list[dict], key: str) -> dict:
    """The run with the median `key` (the lower one of an even count), with every run's
    value of `key` beside it."""
    usable = [x for x in runs if x.get(key) is not None]
    if not usable:
        return dict(runs[-1]) if runs else {}
    out = dict(sorted(usable, key=lambda x: x[key])[(len(usable) - 1) // 2])
    if len(runs) > 1:
        out["runs"] = len(runs)
        out[f"{key}_of_each_run"] = [x.get(key) for x in runs]
    return out


# -- config files --------------------------------------------------------------------


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
        for section, values in (d or {}).items():
            out.setdefault(section, {}).update(values)
    return out


def parse_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, option = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set wants SECTION.OPTION=VALUE, got {item!r}")
        out.setdefault(section, {})[option] = value
    return out


def expand_dir(sections: dict[str, dict[str, object]], d: Path) -> dict:
    """{dir} in a string value is the run's directory."""
    for values in sections.values():
        for k, v in values.items():
            if isinstance(v, str):
                values[k] = v.replace("{dir}", str(d))
    return sections


# -- process trees ---------------------------------------------------------------------


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
    """utime + stime of these processes."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / _TICK


def _status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            m = re.search(rf"{field}:\s+(\d+) kB", f.read())
        return int(m.group(1)) if m else None
    except OSError:
        return None


def rss_mb(pids: list[int]) -> float:
    """Resident memory of these processes added up (VmRSS), MB."""
    return sum(_status_kb(p, "VmRSS") or 0 for p in pids) / 1024


def peak_rss_mb(pids: list[int]) -> dict[int, float]:
    """Peak resident memory (VmHWM) of each process, MB."""
    out = {}
    for p in pids:
        kb = _status_kb(p, "VmHWM")
        if kb is not None:
            out[p] = kb / 1024
    return out


class RssSampler:
    """Samples the RSS sum of a process tree (re-read each time, as workers may come and
    go) every `interval` seconds in a thread; `peak` is the largest sum seen."""

    def __init__(self, pids_of, interval: float = 0.2):
        self.pids_of = pids_of
        self.interval = interval
        self.peak = 0.0
        self.last = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> float:
        self.last = rss_mb(self.pids_of())
        self.peak = max(self.peak, self.last)
        return self.last

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()


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


# -- child processes -------------------------------------------------------------------


class Proc:
    """A child process whose output goes to a file; stopped by its own pid, and those of
    its descendants, only."""

    def __init__(self, args: list[str], log_path: Path, stdin=False, stdout_pipe=False,
                 env: dict | None = None):  # fmt: skip
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
            env=env or CHILD_ENV,
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
                self.events.put(None)
                raise RuntimeError(f"{self.log_path.name} exited early:\n{self.tail()}")
            if ev.get("event") == name:
                return ev

    def send(self, line: str) -> None:
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def alive(self) -> bool:
        return self.p.poll() is None

    def tail(self, n: int = 30) -> str:
        if not self._log.closed:
            self._log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the process; after `timeout` s kill it and what is left of its tree."""
        if self.p.poll() is None:
            tree = proc_tree(self.p.pid)
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                for pid in reversed(tree):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                self.p.wait()
            # workers that outlived their parent
            deadline = time.monotonic() + 5
            for pid in tree[1:]:
                while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                    time.sleep(0.05)
                if os.path.exists(f"/proc/{pid}"):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
        if not self._log.closed:
            self._log.close()
        return self.p.returncode


class SinkProc:
    """The webhook (sink.py): `ports` webhook hosts, on 127.0.0.1, 127.0.0.2…"""

    def __init__(self, workdir: Path, ports: int = 3, delay: float = 1.0,
                 narrow_limit: int = 4, narrow_delay: float = 0.05):  # fmt: skip
        self.proc = Proc(
            [PY, str(BENCH / "sink.py"), "--ports", str(ports), "--delay", str(delay),
             "--narrow-limit", str(narrow_limit), "--narrow-delay", str(narrow_delay)],
            workdir / "sink.log",
            stdout_pipe=True,
        )  # fmt: skip
        self.delay = delay
        self.narrow_limit = narrow_limit
        self.narrow_delay = narrow_delay
        ev = self.proc.events.get(timeout=15)
        if not ev or "ports" not in ev:
            raise RuntimeError(f"sink did not start:\n{self.proc.tail()}")
        self.ports = ev["ports"]
        self.hosts = ev.get("hosts") or ["127.0.0.1"] * len(self.ports)

    def _call(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"http://127.0.0.1:{self.ports[0]}{path}", method=method)
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict:
        return self._call("/_stats")

    def count(self) -> int:
        return self.stats()["count"]

    def records(self, mode: str = "") -> list[list]:
        """[[arrival, path, alarm_id, sent, request_id, status, in_flight], ...], of
        /<mode>/ only if given"""
        return self._call(f"/_records?mode={mode}" if mode else "/_records")["records"]

    def outage(self, start: float, until: float) -> None:
        """/outage/ answers 503 to requests arriving (time.time()) in [start, until)."""
        self._call(f"/_outage?from={start!r}&until={until!r}", "POST")

    def reset(self) -> None:
        self._call("/_reset", "POST")

    def release(self) -> None:
        self._call("/_release", "POST")

    def url(self, mode: str, tag: str, port: int = 0) -> str:
        return f"http://{self.hosts[port]}:{self.ports[port]}/{mode}/{tag}"

    def stop(self) -> None:
        self.proc.stop()


class Sender:
    """sender.py: feeds alarms to a target the way its callers do, from its own process.

    mode "rpc": notify_alarm casts on `topic`; mode "notification": alarm.update
    notifications (messagingv2, publisher alarming.evaluator, priority sample) on
    `topic` of exchange `exchange`.
    """

    def __init__(
        self,
        d: Path,
        transport_url: str,
        mode: str,
        topic: str,
        prefix: str,
        batches: list[tuple[int, str]],
        rate: float = 0.0,
        threads: int = 1,
        warmup_url: str | None = None,
        rabbit_opts: dict | None = None,
        exchange: str = NOTIFICATION_EXCHANGE,
    ):
        self.out = d / f"casts-{prefix}.json"
        config = write_config(
            d / f"sender-{prefix}.conf",
            merge(
                {"DEFAULT": {"transport_url": transport_url}},
                # casts go to oslo.messaging's default exchange, as the callers' do
                {"DEFAULT": {"control_exchange": exchange}} if mode == "notification" else {},
                {"oslo_messaging_rabbit": dict(rabbit_opts)} if rabbit_opts else {},
            ),
        )
        args = [PY, str(BENCH / "sender.py"), "--config-file", str(config), "--mode", mode,
                "--topic", topic, "--prefix", prefix]  # fmt: skip
        for count, url in batches:
            args += ["--batch", str(count), url]
        args += ["--rate", str(rate), "--threads", str(threads), "--out", str(self.out)]
        if warmup_url:
            args += ["--warmup-url", warmup_url]
        self.proc = Proc(args, d / f"sender-{prefix}.log", stdin=True, stdout_pipe=True)
        try:
            self.proc.event("ready", 60)
        except Exception:
            self.proc.stop()
            raise

    def go(self) -> float:
        self.proc.send("go")
        return self.proc.event("started", 30)["t"]

    def wait_done(self, timeout: float) -> list[list]:
        """[[alarm_id, sent, returned, error-or-null], ...]"""
        self.proc.event("done", timeout)
        self.proc.p.wait(30)
        return json.loads(self.out.read_text())["casts"]

    def stop(self) -> None:
        self.proc.stop()
