"""Hostile peers for the tests: real servers on 127.0.0.1 that misbehave on purpose.

Each server records what it received and stops with ``close()``:

* ``DripServer``: answers ``200 OK`` and then one byte of the body every
  ``interval`` seconds, or sends even its headers one byte at a time;
* ``EndlessBody``: answers ``200 OK`` with a 2 GB body (declared, or chunked)
  and streams zeros as fast as the client reads, counting what it sent;
* ``Blackhole``: accepts TCP connections and never reads nor answers;
* ``Proxy``: a forward HTTP proxy (absolute-form requests and ``CONNECT``
  tunnels) that records request lines and ``Proxy-Authorization``.

``Names`` makes chosen host names resolve to chosen addresses inside the
test process (the system resolver is not what the tests are about; the
connections made to those addresses are real).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import select
import socket
import threading
import time
import uuid
from urllib import parse

GB = 1024**3
MB = 1024**2


@dataclasses.dataclass
class Received:
    """One request as a server read it."""

    line: str
    headers: dict[str, str]
    body: bytes
    received: float

    @property
    def method(self) -> str:
        return self.line.split(" ", 1)[0]

    @property
    def target(self) -> str:
        parts = self.line.split(" ")
        return parts[1] if len(parts) > 1 else ""


def read_request(sock: socket.socket, timeout: float = 10.0) -> tuple[Received | None, bytes]:
    """Read one request head (and its Content-Length body); what came after it."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None, b""
            data += chunk
            if len(data) > 1 * MB:
                return None, b""
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return Received(lines[0], headers, rest[:length], time.monotonic()), rest[length:]
    except (OSError, ValueError):
        return None, b""


class _Server:
    """A listening socket on 127.0.0.1 with a thread per connection."""

    def __init__(self, host: str = "127.0.0.1", backlog: int = 128) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(backlog)
        self.port = self.listener.getsockname()[1]
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.accepted = 0  # TCP connections
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def url(self, path: str = "ok", scheme: str = "http") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/{path.strip('/')}/{uuid.uuid4().hex[:8]}"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.stopped.is_set():
                    conn.close()
                    return
                self._conns.add(conn)
                self.accepted += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handle(conn)
        except OSError:
            pass
        finally:
            with self.lock:
                self._conns.discard(conn)
            conn.close()

    @property
    def open(self) -> int:
        """Connections still being served."""
        with self.lock:
            return len(self._conns)

    def record(self, request: Received) -> None:
        with self.lock:
            self.requests.append(request)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stopped.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(5)


class DripServer(_Server):
    """``mode="body"``: ``200 OK`` headers at once, then one body byte every ``interval`` s
    of a 100,000-byte body. ``mode="headers"``: the status line and an endless header,
    one byte every ``interval`` s."""

    def __init__(self, mode: str = "body", interval: float = 0.5, host: str = "127.0.0.1"):
        if mode not in ("body", "headers"):
            raise ValueError(mode)
        self.mode = mode
        self.interval = interval
        self.bytes_sent = 0
        super().__init__(host)

    def handle(self, conn: socket.socket) -> None:
        request, _ = read_request(conn)
        if request is None:
            return
        self.record(request)
        if self.mode == "body":
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n"
            )
            drip = b" "
        else:
            drip = b"HTTP/1.1 200 OK\r\nX-Drip: "
        while True:
            for i in range(len(drip)):
                conn.sendall(drip[i : i + 1])
                with self.lock:
                    self.bytes_sent += 1
                if self.stopped.wait(self.interval):
                    return
            drip = b"a" if self.mode == "headers" else b" "


class EndlessBody(_Server):
    """``200 OK`` with a 2 GB body: ``Content-Length`` (``mode="length"``) or chunked.

    Zeros are sent as fast as the client takes them; ``bytes_sent`` counts the body
    bytes handed to the kernel. ``limit`` stops a client that reads it all from
    taking the machine's memory: past it the connection is closed.
    """

    CHUNK = 64 * 1024

    def __init__(self, mode: str = "length", limit: int = 256 * MB, host: str = "127.0.0.1"):
        if mode not in ("length", "chunked"):
            raise ValueError(mode)
        self.mode = mode
        self.limit = limit
        self.bytes_sent = 0
        super().__init__(host)

    def handle(self, conn: socket.socket) -> None:
        request, _ = read_request(conn)
        if request is None:
            return
        self.record(request)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
        conn.settimeout(60)
        if self.mode == "length":
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                + f"Content-Length: {2 * GB}\r\n\r\n".encode()
            )
            block = bytes(self.CHUNK)
        else:
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            block = f"{self.CHUNK:x}\r\n".encode() + bytes(self.CHUNK) + b"\r\n"
        sent = 0
        while sent < min(self.limit, 2 * GB) and not self.stopped.is_set():
            conn.sendall(block)
            sent += self.CHUNK
            with self.lock:
                self.bytes_sent += self.CHUNK


class Blackhole:
    """Accepts TCP connections on 127.0.0.1 and never reads from them nor answers."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(4096)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, path: str = "dead") -> str:
        return f"http://{self.host}:{self.port}/{path.strip('/')}/{uuid.uuid4().hex[:8]}"

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
                self.accepted += 1

    def close(self) -> None:
        self._stopped.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self._thread.join(5)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()


class Proxy(_Server):
    """A forward proxy: ``POST http://host:port/path`` (absolute form) is forwarded to the
    target in origin form; ``CONNECT host:port`` opens a tunnel. The target's host is
    resolved as a real proxy resolves it (getaddrinfo: names, and numeric forms such
    as ``0x7f.1``), and only targets on this machine are served (anything else gets
    403). ``requests`` holds every request line and header as received,
    ``Proxy-Authorization`` included."""

    def handle(self, conn: socket.socket) -> None:
        request, rest = read_request(conn)
        if request is None:
            return
        self.record(request)
        if request.method == "CONNECT":
            host, _, port = request.target.rpartition(":")
            self._tunnel(conn, host.strip("[]"), int(port), rest)
        else:
            self._forward(conn, request)

    def _connect(self, host: str, port: int) -> socket.socket | None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return None
        addresses = [str(info[4][0]) for info in infos]
        if not all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses):
            return None  # the tests' traffic stays on this machine
        try:
            return socket.create_connection((addresses[0], port), timeout=10)
        except OSError:
            return None

    def _tunnel(self, conn: socket.socket, host: str, port: int, rest: bytes) -> None:
        upstream = self._connect(host, port)
        if upstream is None:
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        with upstream:
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            self._pump(conn, upstream)

    def _forward(self, conn: socket.socket, request: Received) -> None:
        url = parse.urlsplit(request.target)
        if url.scheme != "http" or not url.hostname:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        upstream = self._connect(url.hostname, url.port or 80)
        if upstream is None:
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        with upstream:
            path = url.path or "/"
            if url.query:
                path += "?" + url.query
            version = request.line.rsplit(" ", 1)[-1]
            lines = [f"{request.method} {path} {version}"]
            for key, value in request.headers.items():
                if key in ("proxy-authorization", "proxy-connection", "connection"):
                    continue
                lines.append(f"{key}: {value}")
            lines.append("connection: close")
            upstream.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + request.body)
            # The response, told to close: this proxy serves one request per connection.
            upstream.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = upstream.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            kept = [
                line
                for line in head.split(b"\r\n")
                if not line.lower().startswith((b"connection:", b"keep-alive:"))
            ]
            conn.sendall(b"\r\n".join([*kept, b"Connection: close"]) + sep + body)
            while True:
                chunk = upstream.recv(65536)
                if not chunk:
                    break
                conn.sendall(chunk)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        a.settimeout(None)
        b.settimeout(None)
        peers = {a: b, b: a}
        while not self.stopped.is_set():
            readable, _, _ = select.select(list(peers), [], [], 0.5)
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                peers[sock].sendall(data)

    @property
    def request_lines(self) -> list[str]:
        with self.lock:
            return [r.line for r in self.requests]

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Names:
    """Make chosen host names resolve to chosen addresses in this process.

    ``set(name, *answers)``: each lookup of name takes the next answer (the last
    one repeats); an answer is a list of addresses, in order, or None for "no such
    name". Every other name goes to the real resolver. Install it with
    ``monkeypatch.setattr(socket, "getaddrinfo", names.getaddrinfo)``.
    """

    def __init__(self) -> None:
        self._real = socket.getaddrinfo
        self._answers: dict[str, list[list[str] | None]] = {}
        self.lookups: dict[str, int] = {}
        self._lock = threading.Lock()

    def set(self, name: str, *answers: list[str] | None) -> None:
        self._answers[name.lower()] = list(answers)
        self.lookups[name.lower()] = 0

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002
        name = host.decode() if isinstance(host, bytes) else host
        key = (name or "").lower().rstrip(".")
        if key not in self._answers:
            return self._real(host, port, family, type, proto, flags)
        with self._lock:
            answers = self._answers[key]
            index = min(self.lookups[key], len(answers) - 1)
            self.lookups[key] += 1
            answer = answers[index]
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        port = int(port or 0) if not isinstance(port, str) or port.isdigit() else 0
        result = []
        for address in answer:
            ip = ipaddress.ip_address(address)
            fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            if family not in (0, socket.AF_UNSPEC, fam):
                continue
            sockaddr = (address, port, 0, 0) if fam == socket.AF_INET6 else (address, port)
            result.append((fam, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        if not result:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return result


def refuses(host: str, port: int) -> bool:
    """True if nothing accepts a TCP connection at host:port (the precondition of a test)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect((host, port))
        except OSError:
            return True
        return False


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        tree.extend(frontier)
    return tree


def tree_rss(pid: int) -> int:
    """Resident memory of a process and its descendants, in bytes (VmRSS)."""
    return sum(_status_kb(p, "VmRSS") for p in process_tree(pid)) * 1024


def tree_peak_rss(pid: int) -> int:
    """Sum of the peak resident memory (VmHWM) of a process and its descendants, in bytes."""
    return sum(_status_kb(p, "VmHWM") for p in process_tree(pid)) * 1024


class RssSampler:
    """Samples the resident memory of a process tree in a thread; ``peak`` is the highest."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = tree_rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, tree_rss(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak
