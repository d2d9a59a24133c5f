"""Prototype comparison: today's urllib3 + threads delivery path against asyncio + aiohttp.

Standalone (it does not import ``ceilo_notifier``). Every measurement runs in a
fresh client process of its own, against a sink that is a separate process on
127.0.0.1 (an aiohttp low-level server, started by this script):

* the ``ok`` port answers every request ``200 {}`` at once (keep-alive);
* the ``hang`` port accepts, reads the request, and never answers.

Cases (each run ``--reps`` times, interleaved, medians reported):

    urllib3-64        PoolManager(maxsize=64), 64 threads (ThreadPoolExecutor), keep-alive,
                      the body read in full, as ceilo_notifier/notifiers/rest.py does today
    urllib3-256       the same with 256 threads
    aiohttp-64        ClientSession, TCPConnector(limit_per_host=256), one loop, 64 concurrent
    aiohttp-256       the same, 256 concurrent
    hook-cache        + a resolver wrapping ThreadedResolver that checks every address
                      against a deny list (ipaddress), use_dns_cache=True, 256 concurrent
    hook-nocache      the same, use_dns_cache=False
    timeout-read1k    aiohttp-256 + ClientTimeout(total=10), at most 1024 bytes read with
                      resp.content.read(1024), then release
    engine            hook-cache + timeout-read1k: the shape SPEC 12 expects
    aiohttp-close     aiohttp-256 with force_close (a new connection per POST)
    nocache-close     aiohttp-close with use_dns_cache=False: ThreadedResolver on every POST
    hook-close        nocache-close with the checking resolver: the hook's cost per connection

    hang-urllib3      1000 requests to the hang port, 1000 threads, PoolManager(maxsize=1000)
    hang-aiohttp      1000 requests to the hang port, one loop, the ``engine`` client

For POST cases: CPU per POST (client process user+system time from getrusage over
the measured POSTs / POSTs), POSTs/s, RSS and threads at the end; the sink's CPU
per POST and the CPU used by the rest of the machine are recorded too. Before the
measured POSTs, one warm-up POST per concurrent slot opens the connections.

For hang cases: RSS growth (VmRSS) and thread growth from before the requests to
while all 1000 hang (the sink confirms it has read every request), the CPU it
took to get there, and the CPU burned while hanging for 5 s.

Each run waits (a little) for a quiet machine, and a run during which other
processes used more than a quarter of a core is run again (at most twice, and
only in the first 3 minutes); the tables count the runs that stayed busy.

All traffic goes to 127.0.0.1 ("localhost" resolved IPv4 only, so that the
resolver runs). Run:

    python bench/prototype_http.py [--reps 3] [--posts 5000] [--case NAME ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid

HOST = "localhost"  # resolved IPv4 only: 127.0.0.1
HANG_CONCURRENCY = 1000
HANG_SECONDS = 5.0

POST_CASES = {
    "urllib3-64": {"client": "urllib3", "concurrency": 64},
    "urllib3-256": {"client": "urllib3", "concurrency": 256},
    "aiohttp-64": {"client": "aiohttp", "concurrency": 64},
    "aiohttp-256": {"client": "aiohttp", "concurrency": 256},
    "hook-cache": {"client": "aiohttp", "concurrency": 256, "hook": True, "dns_cache": True},
    "hook-nocache": {"client": "aiohttp", "concurrency": 256, "hook": True, "dns_cache": False},
    "timeout-read1k": {"client": "aiohttp", "concurrency": 256, "timeout": 10.0, "read": 1024},
    "engine": {
        "client": "aiohttp",
        "concurrency": 256,
        "hook": True,
        "dns_cache": True,
        "timeout": 10.0,
        "read": 1024,
    },
    "aiohttp-close": {"client": "aiohttp", "concurrency": 256, "close": True},
    "nocache-close": {
        "client": "aiohttp",
        "concurrency": 256,
        "dns_cache": False,
        "close": True,
    },
    "hook-close": {
        "client": "aiohttp",
        "concurrency": 256,
        "hook": True,
        "dns_cache": False,
        "close": True,
    },
}
HANG_CASES = {
    "hang-urllib3": {"client": "urllib3", "concurrency": HANG_CONCURRENCY, "hang": True},
    "hang-aiohttp": {
        "client": "aiohttp",
        "concurrency": HANG_CONCURRENCY,
        "hang": True,
        "hook": True,
        "dns_cache": True,
        "timeout": 60.0,
        "read": 1024,
    },
}
CASES = {**POST_CASES, **HANG_CASES}
# force_close opens a connection per POST; fewer of them keep the ephemeral ports free.
CLOSE_POSTS = 2000

# A deny list like SPEC 11's default (loopback is left out: the sink is on it).
DENIED = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
]
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (getrusage: µs resolution)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def status() -> tuple[float, int]:
    """(VmRSS in MiB, threads) of this process."""
    rss = threads = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss / 1024, threads


def machine_busy() -> float:
    """CPU seconds used by the whole machine so far (all CPUs)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit: float = 10.0) -> float:
    """Wait up to ``limit`` s for a 0.5 s stretch with the machine >= 85 % idle; its idle share."""
    deadline = time.monotonic() + limit
    while True:
        busy0, t0 = machine_busy(), time.monotonic()
        time.sleep(0.5)
        idle = 1 - (machine_busy() - busy0) / ((time.monotonic() - t0) * os.cpu_count())
        if idle >= 0.85 or time.monotonic() > deadline:
            return idle


def body() -> bytes:
    """A ~400-byte alarm notification, encoded once."""
    doc = {
        "alarm_id": str(uuid.uuid4()),
        "alarm_name": "cpu_high-instance-0042",
        "severity": "moderate",
        "previous": "ok",
        "current": "alarm",
        "reason": "Transition to alarm due to 5 samples outside threshold, most recent: 97.1",
        "reason_data": {
            "type": "threshold",
            "disposition": "outside",
            "count": 5,
            "most_recent": 97.1,
        },
    }
    data = json.dumps(doc).encode()
    pad = max(0, 400 - len(data) - len(', "pad": ""'))
    doc["pad"] = "x" * pad
    return json.dumps(doc).encode()


HEADERS = {
    "Content-Type": "application/json",
    "X-OpenStack-Request-Id": "req-" + str(uuid.uuid4()),
    "User-Agent": "prototype/0",
}


# --------------------------------------------------------------------------- sink


def run_sink() -> None:
    from aiohttp import web

    raise_nofile()
    counts = {"ok": 0, "hang_total": 0, "hung": 0}

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/stats":
            return web.Response(
                body=json.dumps({**counts, "cpu": cpu_seconds()}).encode(),
                content_type="application/json",
            )
        await request.read()
        counts["ok"] += 1
        return web.Response(body=b"{}", content_type="application/json")

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counted = False
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                data += chunk
            counts["hang_total"] += 1
            counts["hung"] += 1
            counted = True
            while await reader.read(65536):
                pass
        except OSError:
            pass
        finally:
            if counted:
                counts["hung"] -= 1
            writer.close()

    async def main() -> None:
        server = web.Server(handler, access_log=None)
        runner = web.ServerRunner(server, access_log=None)
        await runner.setup()
        site = web.SockSite(runner, listening_socket(), backlog=4096)
        await site.start()
        hang_server = await asyncio.start_server(hang, sock=listening_socket(), backlog=4096)
        ok_port = site._sock.getsockname()[1]
        hang_port = hang_server.sockets[0].getsockname()[1]
        print(json.dumps({"ok": ok_port, "hang": hang_port}), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    return sock


def sink_stats(port: int) -> dict:
    """GET /stats from the sink, blocking (a millisecond; no thread, no loop)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /stats HTTP/1.1\r\nHost: sink\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return json.loads(data.partition(b"\r\n\r\n")[2])


# --------------------------------------------------------------------------- clients


def check_address(address: str) -> bool:
    """True if an address may be connected to (embedded IPv4 judged as IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip.teredo is not None:
            ip = ip.teredo[1]
        elif ip in NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return not any(ip in net for net in DENIED if net.version == ip.version)


def make_hook_resolver():
    from aiohttp.abc import AbstractResolver
    from aiohttp.resolver import ThreadedResolver

    class CheckingResolver(AbstractResolver):
        """ThreadedResolver, failing closed unless every address is permitted."""

        calls = 0

        def __init__(self) -> None:
            self._inner = ThreadedResolver()

        async def resolve(self, host, port=0, family=socket.AF_INET):
            CheckingResolver.calls += 1
            results = await self._inner.resolve(host, port, family)
            for result in results:
                if not check_address(result["host"]):
                    raise OSError(f"{host}: address {result['host']} is denied")
            return results

        async def close(self) -> None:
            await self._inner.close()

    return CheckingResolver


def client_urllib3(spec: dict, ports: dict, posts: int) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    import urllib3

    urllib3.util.connection.HAS_IPV6 = False  # resolve "localhost" IPv4 only
    conc = spec["concurrency"]
    manager = urllib3.PoolManager(num_pools=16, maxsize=conc, block=False)
    data = body()
    hang = spec.get("hang", False)
    url = f"http://{HOST}:{ports['hang' if hang else 'ok']}/alarm"
    timeout = urllib3.Timeout(connect=10, read=60 if hang else 10)
    errors = 0

    def post() -> None:
        nonlocal errors
        try:
            response = manager.request(
                "POST",
                url,
                body=data,
                headers=HEADERS,
                timeout=timeout,
                retries=False,
                redirect=False,
            )
            if response.status != 200:
                errors += 1
        except Exception:
            errors += 1

    if hang:
        before = sink_stats(ports["ok"])["hang_total"]
        rss0, threads0 = status()
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        for _ in range(conc):
            threading.Thread(target=post, daemon=True).start()
        return hang_measure(ports, before, rss0, threads0, cpu0, t0, time.sleep, lambda: errors)

    with ThreadPoolExecutor(max_workers=conc) as pool:
        list(pool.map(lambda _: post(), range(conc)))  # warm-up: open the connections
        errors = 0
        window = Window(ports)
        for f in [pool.submit(post) for _ in range(posts)]:
            f.result()
        result = window.close(posts)
    result["errors"] = errors
    return result


def client_aiohttp(spec: dict, ports: dict, posts: int) -> dict:
    import aiohttp

    conc = spec["concurrency"]
    hang = spec.get("hang", False)
    data = body()
    url = f"http://{HOST}:{ports['hang' if hang else 'ok']}/alarm"
    read = spec.get("read")
    total = spec.get("timeout")
    timeout = aiohttp.ClientTimeout(total=total) if total else aiohttp.ClientTimeout()
    errors = 0
    resolver_cls = make_hook_resolver() if spec.get("hook") else None

    async def post(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        try:
            async with session.post(url, data=data, headers=HEADERS) as resp:
                if read:
                    await resp.content.read(read)
                else:
                    await resp.read()
                if resp.status != 200:
                    errors += 1
        except Exception:
            errors += 1

    async def main() -> dict:
        nonlocal errors
        kwargs = {
            "limit": max(conc, 256),
            "limit_per_host": max(conc, 256),
            "family": socket.AF_INET,
            "use_dns_cache": spec.get("dns_cache", True),
            "force_close": spec.get("close", False),
        }
        if resolver_cls is not None:
            kwargs["resolver"] = resolver_cls()
        connector = aiohttp.TCPConnector(**kwargs)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            if hang:
                before = sink_stats(ports["ok"])["hang_total"]
                rss0, threads0 = status()
                cpu0, t0 = cpu_seconds(), time.perf_counter()
                tasks = [asyncio.ensure_future(post(session)) for _ in range(conc)]
                result = await hang_measure_async(
                    ports, before, rss0, threads0, cpu0, t0, lambda: errors
                )
                del tasks
                return result
            await asyncio.gather(*(post(session) for _ in range(conc)))  # warm-up
            errors = 0
            remaining = posts

            async def worker() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    await post(session)

            window = Window(ports)
            await asyncio.gather(*(worker() for _ in range(conc)))
            result = window.close(posts)
            result["errors"] = errors
            if resolver_cls is not None:
                result["resolver_calls"] = resolver_cls.calls
            return result

    return asyncio.run(main())


class Window:
    """The measured part of a POST run."""

    def __init__(self, ports: dict) -> None:
        self.ports = ports
        self.sink0 = sink_stats(ports["ok"])
        self.busy0 = machine_busy()
        self.cpu0 = cpu_seconds()
        self.t0 = time.perf_counter()

    def close(self, posts: int) -> dict:
        wall = time.perf_counter() - self.t0
        cpu = cpu_seconds() - self.cpu0
        busy = machine_busy() - self.busy0
        sink = sink_stats(self.ports["ok"])
        sink_cpu = sink["cpu"] - self.sink0["cpu"]
        rss, threads = status()
        return {
            "posts": posts,
            "sink_posts": sink["ok"] - self.sink0["ok"],
            "cpu_us_per_post": cpu / posts * 1e6,
            "posts_per_s": posts / wall,
            "sink_cpu_us_per_post": sink_cpu / posts * 1e6,
            "other_cpu_cores": max(0.0, busy - cpu - sink_cpu) / wall,
            "rss_mb": rss,
            "threads": threads,
        }


def _hang_wait_done(ports: dict, before: int) -> bool:
    return sink_stats(ports["ok"])["hang_total"] - before >= HANG_CONCURRENCY


def _hang_result(rss0, threads0, cpu0, t0, rss1, threads1, cpu1, t1, errors) -> dict:
    cpu2 = cpu_seconds()
    rss2, threads2 = status()
    return {
        "in_flight": HANG_CONCURRENCY,
        "setup_s": t1 - t0,
        "setup_cpu_ms": (cpu1 - cpu0) * 1e3,
        "rss_growth_mb": max(rss1, rss2) - rss0,
        "rss_kb_per_request": (max(rss1, rss2) - rss0) * 1024 / HANG_CONCURRENCY,
        "thread_growth": max(threads1, threads2) - threads0,
        "threads": max(threads1, threads2),
        "hang_cpu_ms": (cpu2 - cpu1) * 1e3,
        "errors": errors,
    }


def hang_measure(ports, before, rss0, threads0, cpu0, t0, sleep, errors) -> dict:
    deadline = t0 + 60
    while not _hang_wait_done(ports, before):
        if time.perf_counter() > deadline:
            raise SystemExit("the hang sink did not see every request")
        sleep(0.05)
    t1 = time.perf_counter()
    cpu1 = cpu_seconds()
    rss1, threads1 = status()
    sleep(HANG_SECONDS)
    return _hang_result(rss0, threads0, cpu0, t0, rss1, threads1, cpu1, t1, errors())


async def hang_measure_async(ports, before, rss0, threads0, cpu0, t0, errors) -> dict:
    deadline = t0 + 60
    while not _hang_wait_done(ports, before):
        if time.perf_counter() > deadline:
            raise SystemExit("the hang sink did not see every request")
        await asyncio.sleep(0.05)
    t1 = time.perf_counter()
    cpu1 = cpu_seconds()
    rss1, threads1 = status()
    await asyncio.sleep(HANG_SECONDS)
    return _hang_result(rss0, threads0, cpu0, t0, rss1, threads1, cpu1, t1, errors())


def run_client(case: str, ports: dict, posts: int) -> None:
    raise_nofile()
    spec = CASES[case]
    if spec.get("close"):
        posts = min(posts, CLOSE_POSTS)
    run = client_urllib3 if spec["client"] == "urllib3" else client_aiohttp
    result = run(spec, ports, posts)
    print(json.dumps(result), flush=True)
    os._exit(0)  # hung requests and threads: do not wait for them


# --------------------------------------------------------------------------- driver


def versions() -> dict:
    import aiohttp
    import urllib3

    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "aiohttp": aiohttp.__version__,
        "urllib3": urllib3.__version__,
        "body_bytes": len(body()),
        "check_address_us": check_cost(),
    }


def check_cost() -> float:
    """µs per check_address call (the deny-list check alone, no resolution)."""
    import timeit

    n = 20000
    return timeit.timeit(lambda: check_address("127.0.0.1"), number=n) / n * 1e6


def wait_unhung(ports: dict) -> None:
    deadline = time.monotonic() + 30
    while sink_stats(ports["ok"])["hung"] and time.monotonic() < deadline:
        time.sleep(0.1)


COLUMNS = {
    "post": [
        ("cpu_us_per_post", "CPU µs/POST", "{:.0f}"),
        ("posts_per_s", "POSTs/s", "{:.0f}"),
        ("sink_cpu_us_per_post", "sink µs/POST", "{:.0f}"),
        ("rss_mb", "RSS MiB", "{:.1f}"),
        ("threads", "threads", "{:.0f}"),
        ("other_cpu_cores", "other load", "{:.2f}"),
    ],
    "hang": [
        ("rss_growth_mb", "RSS growth MiB", "{:.1f}"),
        ("rss_kb_per_request", "KiB/request", "{:.1f}"),
        ("thread_growth", "thread growth", "{:.0f}"),
        ("setup_cpu_ms", "CPU to start ms", "{:.0f}"),
        ("setup_s", "start s", "{:.2f}"),
        ("hang_cpu_ms", f"CPU in {HANG_SECONDS:.0f} s hang ms", "{:.1f}"),
    ],
}


RANGED = {"cpu_us_per_post", "posts_per_s", "rss_kb_per_request"}


def report(results: dict[str, list[dict]]) -> dict[str, dict]:
    medians = {}
    for case, runs in results.items():
        keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
        medians[case] = {k: statistics.median(r[k] for r in runs) for k in keys}
        medians[case]["errors"] = sum(r.get("errors", 0) for r in runs)
        medians[case]["noisy"] = sum(r.get("noisy", False) for r in runs)
    for kind, cases in (("post", POST_CASES), ("hang", HANG_CASES)):
        rows = [c for c in cases if c in medians]
        if not rows:
            continue
        cols = COLUMNS[kind]
        header = ["case"] + [title for _, title, _ in cols] + ["errors", "busy runs"]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for case in rows:
            cells = []
            for key, _, fmt in cols:
                cell = fmt.format(medians[case][key])
                if key in RANGED:
                    values = [r[key] for r in results[case]]
                    cell += f" ({fmt.format(min(values))}–{fmt.format(max(values))})"
                cells.append(cell)
            cells += [f"{medians[case]['errors']:.0f}", f"{medians[case]['noisy']:.0f}"]
            print(f"| {case} | " + " | ".join(cells) + " |")
        print()
    return medians


# A run during which the rest of the machine used more than this many cores (other
# processes, not client or sink) is run again, at most RETRIES times.
NOISY = 0.25
RETRIES = 2
# Waiting for a quiet machine and running again stop after this long, so that
# a whole run stays under 5 minutes.
PATIENCE_S = 180


def run_one(case: str, ports: dict, posts: int, patient: bool) -> dict:
    wait_unhung(ports)
    idle = wait_quiet(10.0 if patient else 1.0)
    command = [sys.executable, __file__, "--client", case, "--ports", json.dumps(ports)]
    out = subprocess.run(
        [*command, "--posts", str(posts)], capture_output=True, text=True, timeout=120
    )
    if out.returncode:
        sys.exit(f"{case}: {out.stderr.strip()}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["idle_before"] = idle
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--posts", type=int, default=5000)
    parser.add_argument("--case", action="append", choices=sorted(CASES))
    parser.add_argument("--json", help="also write every run and the medians here")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        return run_sink()
    if args.client:
        return run_client(args.client, json.loads(args.ports), args.posts)

    started = time.monotonic()
    machine = versions()
    print(json.dumps(machine))
    cases = args.case or list(CASES)
    sink = subprocess.Popen([sys.executable, __file__, "--sink"], stdout=subprocess.PIPE, text=True)
    try:
        ports = json.loads(sink.stdout.readline())
        results: dict[str, list[dict]] = {c: [] for c in cases}
        order = [c for c in cases if c in POST_CASES] + [c for c in cases if c in HANG_CASES]
        for rep in range(args.reps):
            for case in order:
                for _ in range(1 + RETRIES):
                    patient = time.monotonic() - started < PATIENCE_S
                    result = run_one(case, ports, args.posts, patient)
                    other = result.get("other_cpu_cores", 0.0)
                    busy = other > NOISY or result["idle_before"] < 0.85
                    result["noisy"] = busy
                    if not busy or not patient:
                        break
                    print(f"rep {rep + 1} {case}: machine busy, again", flush=True)
                results[case].append(result)
                print(f"rep {rep + 1} {case}: {json.dumps(result)}", flush=True)
        print()
        medians = report(results)
        print(f"total {time.monotonic() - started:.0f} s")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": machine, "runs": results, "medians": medians}, f, indent=1)
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    main()
