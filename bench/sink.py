"""HTTP sink for the benchmark: records when each webhook POST arrives.

One asyncio process, raw protocol, HTTP/1.1 keep-alive, on 127.0.0.1 (and
127.0.0.2, 127.0.0.3… for the second and third webhook hosts). It does
the least possible per request (the body is kept as bytes and only parsed when
the records are read), so it is not what limits a run.

What a request gets depends on its path:

    /ok/...      200 at once
    /delay/...   200 after --delay seconds (1 s by default)
    /hang/...    the request is read and recorded, and never answered; the
                 connection stays open until POST /_release or the sink stops
    /outage/...  503 while the outage window set by POST /_outage is on, else
                 200 at once (a receiver that goes down and comes back)
    /narrow/...  a receiver of limited capacity: at most --narrow-limit (4)
                 requests of its port in flight at once, each answered 200
                 after --narrow-delay seconds (0.05); one more is answered 429
                 at once (no Retry-After)

Control paths (never recorded):

    GET  /_stats     {"count": N, "hung": open hung requests,
                      "modes": {"ok": N, "delay": N, "hang": N}}
    GET  /_records   {"records": [[arrival, path, alarm_id, sent, request_id,
                                  status, in_flight], ...]}
                     arrival is time.time() when the request was fully read;
                     sent is reason_data["sent"] of the body (the cast time);
                     status is the answer's (null for /hang/); in_flight is how
                     many requests of /narrow/ on that port were open when it
                     arrived, itself included (null for other paths);
                     /_records?mode=ok: only those of /ok/ (or delay, hang, ...)
    POST /_reset     forget every record, /hang/ hangs again, no outage window
    POST /_outage?from=T1&until=T2
                     /outage/ answers 503 to requests arriving at time.time()
                     in [T1, T2)
    POST /_release   close every hung connection, and from now on close the
                     connection of every /hang/ request at once (so that a
                     notifier retrying them can stop without waiting)

Run: ``python bench/sink.py [--ports 2] [--delay 1.0] [--narrow-limit 4]
[--narrow-delay 0.05]``; it prints one JSON
line ``{"ports": [...]}`` once it listens, and stops on SIGTERM or SIGINT.
Each port serves every path; a second port is a second webhook *host* for the
notifier (its per-host limits count host and port).

``python bench/sink.py --load PORT [--requests N]`` is a load generator that
measures the sink on its own (several keep-alive connections, pipelined).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import signal
import sys
import time

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
_HANG = object()
# The id sender.py gives an alarm (<prefix>-<6 digits>, <prefix>-warmup), wherever a
# body that is not the alarm payload itself (a payload template's, an Apprise
# service's) puts it.
_ALARM_ID = re.compile(rb"\b[A-Za-z0-9]+-(?:\d{6}|warmup)\b")


def _response(status: str, payload: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


_NARROW_FULL = _response("429 Too Many Requests", b"{}")
_DOWN = _response("503 Service Unavailable", b"{}")


class Sink:
    def __init__(self, delay: float, narrow_limit: int = 4, narrow_delay: float = 0.05) -> None:
        self.delay = delay
        self.narrow_limit = narrow_limit
        self.narrow_delay = narrow_delay
        # /narrow/ requests open per port (index of the listening socket)
        self.narrow_open: dict[int, int] = {}
        # [from, until) of /outage/'s 503s
        self.outage = (0.0, 0.0)
        # (arrival, path, headers, body, status, in_flight); decoded only by records().
        self.records: list[tuple] = []
        self.hung: set[_Conn] = set()
        self.hung_requests = 0
        self.released = False
        self.modes: dict[bytes, int] = {}

    def records_json(self, mode: bytes = b"") -> bytes:
        out = []
        want = b"/" + mode + b"/" if mode else b""
        for arrival, path, headers, body, status, in_flight in self.records:
            if want and not path.startswith(want):
                continue
            alarm_id = sent = None
            try:
                doc = json.loads(body)
                alarm_id = doc.get("alarm_id")
                sent = (doc.get("reason_data") or {}).get("sent")
            except (ValueError, AttributeError):
                pass
            if alarm_id is None:
                # not the alarm payload: no send time in it, the id where it is
                found = _ALARM_ID.search(body)
                alarm_id = found.group().decode() if found else None
            request_id = None
            for line in headers.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"x-openstack-request-id":
                    request_id = value.strip().decode("latin-1")
                    break
            out.append(
                [arrival, path.decode("latin-1"), alarm_id, sent, request_id, status, in_flight]
            )
        return json.dumps({"records": out}).encode()

    def control(self, method: bytes, path: bytes) -> bytes:
        if path == b"/_stats":
            modes = {k.decode("latin-1"): v for k, v in self.modes.items()}
            payload = json.dumps(
                {"count": len(self.records), "hung": self.hung_requests, "modes": modes}
            )
            return _response("200 OK", payload.encode())
        if path == b"/_records" or path.startswith(b"/_records?mode="):
            return _response("200 OK", self.records_json(path.partition(b"=")[2]))
        if path == b"/_reset" and method == b"POST":
            self.records.clear()
            self.modes.clear()
            self.released = False
            self.outage = (0.0, 0.0)
            return _response("200 OK", b"{}")
        if path.startswith(b"/_outage?") and method == b"POST":
            query = dict(x.split(b"=", 1) for x in path.partition(b"?")[2].split(b"&") if b"=" in x)
            self.outage = (float(query[b"from"]), float(query[b"until"]))
            return _response("200 OK", b"{}")
        if path == b"/_release" and method == b"POST":
            for conn in list(self.hung):
                conn.transport.close()
            self.hung.clear()
            self.hung_requests = 0
            self.released = True
            return _response("200 OK", b"{}")
        return _response("404 Not Found", b"{}")


class _Conn(asyncio.Protocol):
    """One client connection; answers go out in request order (HTTP/1.1)."""

    __slots__ = ("sink", "port", "transport", "buf", "slots", "closed")

    def __init__(self, sink: Sink, port: int = 0) -> None:
        self.sink = sink
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        # Answers not yet written: bytes when ready, None while delayed, _HANG.
        self.slots: collections.deque = collections.deque()
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self in self.sink.hung:
            self.sink.hung.discard(self)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            length = 0
            lower = head.lower()
            i = lower.find(b"\r\ncontent-length:")
            if i >= 0:
                j = lower.find(b"\r\n", i + 2)
                length = int(lower[i + 17 : j if j >= 0 else len(lower)])
            total = end + 4 + length
            if len(buf) < total:
                break
            body = buf[end + 4 : total]
            buf = buf[total:]
            line_end = head.find(b"\r\n")
            request_line = head[:line_end] if line_end >= 0 else head
            method, _, rest = request_line.partition(b" ")
            path = rest.partition(b" ")[0]
            self._handle(method, path, head, body)
        self.buf = buf

    def _handle(self, method: bytes, path: bytes, head: bytes, body: bytes) -> None:
        sink = self.sink
        if path.startswith(b"/_"):
            self._answer(sink.control(method, path))
            return
        now = time.time()
        mode = path[1 : path.find(b"/", 1)]
        sink.modes[mode] = sink.modes.get(mode, 0) + 1
        if path.startswith(b"/delay/"):
            sink.records.append((now, path, head, body, 200, None))
            slot = [None]
            self.slots.append(slot)
            asyncio.get_running_loop().call_later(sink.delay, self._fill, slot)
        elif path.startswith(b"/hang/"):
            sink.records.append((now, path, head, body, None, None))
            if sink.released:
                self.transport.close()
                return
            self.slots.append([_HANG])
            sink.hung.add(self)
            sink.hung_requests += 1
        elif path.startswith(b"/narrow/"):
            in_flight = sink.narrow_open.get(self.port, 0) + 1
            if in_flight > sink.narrow_limit:
                sink.records.append((now, path, head, body, 429, in_flight))
                self._answer(_NARROW_FULL)
                return
            sink.records.append((now, path, head, body, 200, in_flight))
            sink.narrow_open[self.port] = in_flight
            slot = [None]
            self.slots.append(slot)
            asyncio.get_running_loop().call_later(sink.narrow_delay, self._fill_narrow, slot)
        elif path.startswith(b"/outage/") and sink.outage[0] <= now < sink.outage[1]:
            sink.records.append((now, path, head, body, 503, None))
            self._answer(_DOWN)
        else:
            sink.records.append((now, path, head, body, 200, None))
            self._answer(_OK)

    def _answer(self, data: bytes) -> None:
        if self.slots:
            self.slots.append([data])
            self._flush()
        else:
            self.transport.write(data)

    def _fill(self, slot: list) -> None:
        slot[0] = _OK
        self._flush()

    def _fill_narrow(self, slot: list) -> None:
        # no longer in flight once answered, also when the client has gone
        self.sink.narrow_open[self.port] -= 1
        self._fill(slot)

    def _flush(self) -> None:
        if self.closed:
            return
        out = []
        while self.slots and self.slots[0][0] is not None and self.slots[0][0] is not _HANG:
            out.append(self.slots.popleft()[0])
        if out:
            self.transport.write(b"".join(out))


async def serve(ports: int, delay: float, host: str, narrow_limit: int = 4,
                narrow_delay: float = 0.05) -> None:  # fmt: skip
    sink = Sink(delay, narrow_limit, narrow_delay)
    loop = asyncio.get_running_loop()
    servers, hosts = [], []
    for i in range(ports):
        # Each webhook host on an address of its own, as distinct receivers are:
        # the notifier shares its slots by address, whatever the port.
        address = f"127.0.0.{i + 1}" if host == "127.0.0.1" else host
        server = await loop.create_server(lambda i=i: _Conn(sink, i), address, 0, backlog=1024)
        servers.append(server)
        hosts.append(address)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    numbers = [s.sockets[0].getsockname()[1] for s in servers]
    sys.stdout.write(json.dumps({"ports": numbers, "hosts": hosts}) + "\n")
    sys.stdout.flush()
    await stop.wait()
    for server in servers:
        server.close()
    for conn in list(sink.hung):
        conn.transport.close()


# -- load generator ------------------------------------------------------------


async def _load_conn(host: str, port: int, count: int, depth: int, body: bytes) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    request = (
        b"POST /ok/load HTTP/1.1\r\nHost: sink\r\nContent-Type: application/json\r\n"
        b"X-OpenStack-Request-Id: req-load\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    sent = received = 0
    pending = b""
    while received < count:
        burst = min(depth - (sent - received), count - sent)
        if burst > 0:
            writer.write(request * burst)
            sent += burst
        data = await reader.read(65536)
        if not data:
            break
        pending += data
        n = len(pending) // len(_OK)
        received += n
        pending = pending[n * len(_OK) :]
    writer.close()
    return received


async def load(host: str, port: int, requests: int, conns: int, depth: int) -> dict:
    body = json.dumps(
        {
            "alarm_id": "load-0000000",
            "alarm_name": "load",
            "severity": "low",
            "previous": "ok",
            "current": "alarm",
            "reason": "load test of the sink",
            "reason_data": {"sent": time.time(), "type": "threshold"},
        }
    ).encode()
    per = requests // conns
    start = time.perf_counter()
    done = await asyncio.gather(*(_load_conn(host, port, per, depth, body) for _ in range(conns)))
    took = time.perf_counter() - start
    total = sum(done)
    return {"requests": total, "seconds": took, "req_per_s": total / took}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ports", type=int, default=1, help="how many ports to listen on")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds /delay/ waits")
    parser.add_argument(
        "--narrow-limit",
        type=int,
        default=4,
        help="/narrow/ requests of a port in flight at once; more get 429",
    )
    parser.add_argument(
        "--narrow-delay",
        type=float,
        default=0.05,
        help="seconds /narrow/ takes to answer an accepted request",
    )
    parser.add_argument("--load", type=int, metavar="PORT", help="load a running sink instead")
    parser.add_argument("--requests", type=int, default=30000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--depth", type=int, default=16, help="pipelined requests per connection")
    args = parser.parse_args(argv)
    if args.load:
        result = asyncio.run(
            load(args.host, args.load, args.requests, args.connections, args.depth)
        )
        print(json.dumps(result))
        return 0
    asyncio.run(serve(args.ports, args.delay, args.host, args.narrow_limit, args.narrow_delay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
