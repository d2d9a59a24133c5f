"""aiohttp's ThreadedResolver (getaddrinfo in the default executor) against c-ares (aiodns).

For each resolver, in a fresh process: the CPU the client process spends per
lookup (A and AAAA of a unique name under ok.test, 32 at once), then the
latency of lookups under ok.test while 100 lookups under stall.test (a zone
that never answers) are outstanding. The zones are tests/dns.py's, served
on 127.0.0.1:53 by a separate process.

getaddrinfo reads its nameservers from /etc/resolv.conf only, so the script
runs itself again in a mount namespace of its own where /etc/resolv.conf is
``nameserver 127.0.0.1``: it needs root and ``unshare``. Nothing leaves the
machine. Run from the repository root:

    sudo .venv/bin/python bench/dns_resolvers.py [--reps N]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOKUPS = 3000
AT_ONCE = 32
STALLED = 100


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(kind: str) -> None:
    loop = asyncio.get_running_loop()
    # The default executor's size on a 2-core machine, whatever this one has.
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(6))
    if kind == "aiodns":
        import aiodns

        channel = aiodns.DNSResolver(timeout=1.0, tries=2)

        async def resolve(host):
            return await channel.getaddrinfo(
                host, port=80, type=socket.SOCK_STREAM, family=socket.AF_UNSPEC
            )
    else:
        from aiohttp import resolver

        threaded = resolver.ThreadedResolver()

        async def resolve(host):
            return await threaded.resolve(host, 80, socket.AF_UNSPEC)

    async def many(count):
        free = asyncio.Semaphore(AT_ONCE)

        async def one():
            async with free:
                await resolve(f"h{uuid.uuid4().hex[:10]}.ok.test")

        await asyncio.gather(*(one() for _ in range(count)))

    await many(200)  # warm up
    spent, started = cpu(), time.monotonic()
    await many(LOOKUPS)
    spent, took = cpu() - spent, time.monotonic() - started
    stalled = [asyncio.ensure_future(resolve(f"s{i}.stall.test")) for i in range(STALLED)]
    await asyncio.sleep(0.2)
    latencies = []
    for _ in range(20):
        began = time.monotonic()
        try:
            await asyncio.wait_for(resolve(f"k{uuid.uuid4().hex[:8]}.ok.test"), 3)
            latencies.append((time.monotonic() - began) * 1000)
        except asyncio.TimeoutError:
            latencies.append(float("inf"))
    print(
        f"{kind:8}  {spent / LOOKUPS * 1e6:5.0f} us CPU/lookup  {LOOKUPS / took:5.0f} lookups/s  "
        f"with {STALLED} stalled: median {statistics.median(latencies):.1f} ms, "
        f"max {max(latencies):.1f} ms (inf: no answer within 3 s)",
        flush=True,
    )
    for task in stalled:
        task.cancel()
    os._exit(0)  # threads stuck in getaddrinfo would hold the exit


def serve(seconds: float) -> None:
    sys.path.insert(0, str(ROOT))
    from dnslib.server import DNSLogger, DNSServer

    from tests import dns

    zones = dns._Zones()
    quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", logf=dns._drop)
    for tcp in (False, True):
        DNSServer(
            zones, port=53, address="127.0.0.1", tcp=tcp, logger=quiet, handler=dns._Handler
        ).start_thread()
    time.sleep(seconds)


def inside(reps: int) -> None:
    """In the mount namespace: point resolv.conf at loopback, serve, measure."""
    conf = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
    conf.write("nameserver 127.0.0.1\n")
    conf.close()
    subprocess.run(["mount", "--bind", conf.name, "/etc/resolv.conf"], check=True)
    server = subprocess.Popen([sys.executable, __file__, "--serve"])
    try:
        time.sleep(1.5)
        for _ in range(reps):
            for kind in ("aiodns", "threaded"):
                subprocess.run([sys.executable, __file__, "--measure", kind], check=True)
    finally:
        server.kill()
        os.unlink(conf.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--measure", choices=("aiodns", "threaded"))
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--inside", action="store_true")
    args = parser.parse_args()
    if args.measure:
        asyncio.run(measure(args.measure))
    elif args.serve:
        serve(600)
    elif args.inside:
        inside(args.reps)
    else:
        command = [sys.executable, __file__, "--inside", "--reps", str(args.reps)]
        sys.exit(subprocess.run(["unshare", "-m", *command]).returncode)


if __name__ == "__main__":
    main()
