"""Real peers for the tests: webhook servers and a notifier process."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib import parse

ROOT = Path(__file__).resolve().parent.parent


def alarm(actions: list, **fields) -> dict:
    """notify_alarm data in the exact shape ceilometer's 2014 RPCAlarmNotifier cast
    (no alarm_name, no severity); ``fields`` add or replace keys."""
    data = {
        "actions": actions,
        "alarm_id": fields.pop("alarm_id", str(uuid.uuid4())),
        "previous": "ok",
        "current": "alarm",
        "reason": "Transition to alarm due to 3 samples outside threshold",
        "reason_data": {"type": "threshold", "disposition": "outside", "count": 3},
    }
    data.update(fields)
    return data


def complete_lines(path: Path) -> list[str]:
    """The lines another process has finished writing to ``path`` (none if it is absent)."""
    if not path.exists():
        return []
    text = path.read_text()
    return text[: text.rfind("\n") + 1].splitlines()


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(interval)


def time_healthy_alarms(client, webhook, count: int, prefix: str, timeout: float = 10.0):
    """Cast ``count`` alarms to healthy webhook URLs of their own; for each URL, the
    seconds from its cast to its request (None if it did not come within ``timeout``)."""
    sent = {}
    for i in range(count):
        url = webhook.url("ok")
        sent[url] = time.monotonic()
        client.cast(alarm([url], alarm_id=f"{prefix}-{i}"))
    wait_until(lambda: all(webhook.requests_for(u) for u in sent), timeout)
    return {
        url: (got[0].received - at if (got := webhook.requests_for(url)) else None)
        for url, at in sent.items()
    }


@dataclasses.dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    received: float
    client_cert: dict | None = None

    def json(self):
        return json.loads(self.body)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Behaviour is chosen by the path, so one server serves every case.

    /ok/...                 200
    /status/<code>/...      that status, always
    /flaky/<n>/<code>/...   <code> for the first n requests of that path, then 200
    /retry-after/<s>/...    503 with Retry-After: <s> once, then 200
    /busy/<s>/...           503 with Retry-After: <s>, always
    /slow/<seconds>/...     200 after that many seconds
    /hang/...               reads the request, never answers
    /redirect/...           302 to /ok/redirected
    """

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        url = parse.urlsplit(self.path)
        cert = None
        if isinstance(self.connection, ssl.SSLSocket):
            cert = self.connection.getpeercert() or None
        request = Request(
            "POST",
            url.path,
            parse.parse_qs(url.query),
            {k.lower(): v for k, v in self.headers.items()},
            body,
            time.monotonic(),
            cert,
        )
        seen = self.server.record(request)
        parts = url.path.strip("/").split("/")
        kind = parts[0]
        headers = {}
        status = 200
        if kind == "status":
            status = int(parts[1])
        elif kind == "flaky":
            status = int(parts[2]) if seen <= int(parts[1]) else 200
        elif kind == "retry-after":
            if seen == 1:
                status, headers = 503, {"Retry-After": parts[1]}
        elif kind == "busy":
            status, headers = 503, {"Retry-After": parts[1]}
        elif kind == "slow":
            time.sleep(float(parts[1]))
        elif kind == "hang":
            self.server.hung.wait()
            self.close_connection = True
            return
        elif kind == "redirect":
            status, headers = 302, {"Location": "/ok/redirected"}
        payload = b"{}"
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address, context: ssl.SSLContext | None = None):
        super().__init__(address, _Handler)
        self.context = context
        self.requests: list[Request] = []
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.hung = threading.Event()
        self.connections = 0  # TCP connections accepted

    def get_request(self):
        sock, addr = super().get_request()
        with self.lock:
            self.connections += 1
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            sock.settimeout(5)
        return sock, addr

    def handle_error(self, request, client_address):
        pass  # failed TLS handshakes are expected in the TLS tests

    def record(self, request: Request) -> int:
        with self.lock:
            self.requests.append(request)
            self.counts[request.path] = self.counts.get(request.path, 0) + 1
            return self.counts[request.path]


class Webhook:
    """A webhook receiver on 127.0.0.1 (HTTP, or HTTPS when given a context)."""

    def __init__(self, context: ssl.SSLContext | None = None, host: str = "127.0.0.1"):
        self.server = _Server((host, 0), context)
        self.scheme = "https" if context else "http"
        self.host = host
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "ok", userinfo: str = "", query: str = "") -> str:
        path = f"{path.strip('/')}/{uuid.uuid4().hex[:8]}"
        at = f"{userinfo}@" if userinfo else ""
        return f"{self.scheme}://{at}{self.host}:{self.port}/{path}" + (
            f"?{query}" if query else ""
        )

    def requests_for(self, url: str) -> list[Request]:
        path = parse.urlsplit(url).path
        with self.server.lock:
            return [r for r in self.server.requests if r.path == path]

    def wait_for(self, url: str, count: int = 1, timeout: float = 10.0) -> list[Request]:
        wait_until(lambda: len(self.requests_for(url)) >= count, timeout)
        return self.requests_for(url)

    def close(self):
        self.server.hung.set()
        self.server.shutdown()
        self.server.server_close()


def install_package(source: Path, tmp_path: Path) -> dict[str, str]:
    """pip-install a package of its own (a plugin); the environment that sees it."""
    site = tmp_path / f"site-{source.name}"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site)]
        + [str(source)],
        check=True,
        capture_output=True,
    )
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, sections: dict[str, dict[str, object]]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, (list, tuple)):
                lines.extend(f"{key} = {v}" for v in value)
            else:
                lines.append(f"{key} = {value}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class NotifierProcess:
    """``ceilo-notifier`` run as operators run it: a process, a config file, signals."""

    READY = "ceilo-notifier consuming topic"

    def __init__(
        self,
        config: Path,
        log_path: Path,
        debug: bool = False,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        preexec_fn: Callable[[], None] | None = None,
    ):
        self.log_path = log_path
        self._terminated = False
        cmd = [
            sys.executable,
            "-m",
            "ceilo_notifier.cmd.notifier",
            "--config-file",
            str(config),
            *args,
        ]
        if debug:
            cmd.append("--debug")
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=str(ROOT),
            preexec_fn=preexec_fn,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 15.0, count: int = 1) -> bool:
        regex = re.compile(pattern)
        return bool(wait_until(lambda: len(regex.findall(self.log())) >= count, timeout, 0.05))

    def wait_ready(self, timeout: float = 30.0, workers: int = 1) -> None:
        if not self.wait_for_log(re.escape(self.READY), timeout, workers):
            self.stop(timeout=5)
            raise AssertionError(f"ceilo-notifier did not start:\n{self.log()}")

    def wait_journaled(
        self, alarm_id: str, state: str | None = None, timeout: float = 10.0
    ) -> bool:
        """Wait until the journal has committed a delivery of the alarm (in ``state``):
        the log line comes first, the journal's writer commits after it."""
        from ceilo_notifier import journal

        reader = journal.Journal(self.journal_url, "tests/reader/0")
        states = [state] if state else None
        try:
            found = wait_until(lambda: reader.find(alarm_id=alarm_id, states=states), timeout, 0.05)
        finally:
            reader.engine.dispose()
        return bool(found)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        """Ask the service to stop (SIGTERM), without waiting: ``stop`` waits."""
        if self.proc.poll() is None and not self._terminated:
            self.proc.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc.poll() is None and not (sig == signal.SIGTERM and self._terminated):
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def children(pid: int) -> list[int]:
    """The pids of a process's children, read from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except OSError:
                pass
    return out


def wait_serving(
    proc: subprocess.Popen, url: str, statuses: tuple[int, ...] = (200,), timeout: float = 90.0
) -> bool:
    """Wait until a server process answers ``url`` with one of ``statuses``; False
    if it exits or the time runs out."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if requests.get(url, timeout=2).status_code in statuses:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.2)
    return False


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def assert_one_line_each(log: str, needles) -> None:
    """Each needle is in exactly one line of a service's log, and no traceback is there."""
    lines = log.splitlines()
    for needle in needles:
        assert len([line for line in lines if needle in line]) == 1, needle
    assert "Traceback" not in log


def queues_drained(rabbit_url: str, prefix: str, timeout: float = 10.0) -> bool:
    """Wait until the queues whose name starts with prefix hold no message, ready or not."""
    return bool(
        wait_until(lambda: set(queue_counts(rabbit_url, prefix).values()) == {(0, 0)}, timeout)
    )


def publish_raw(rabbit_url: str, exchange: str, routing_key: str, messages: list[object]) -> None:
    """Publish oslo.messaging envelopes of any content, as a broken or hostile sender could."""
    import kombu

    with kombu.Connection(rabbit_url.replace("rabbit://", "amqp://", 1)) as conn:
        producer = conn.Producer()
        for message in messages:
            envelope = {"oslo.version": "2.0", "oslo.message": json.dumps(message)}
            producer.publish(envelope, exchange=exchange, routing_key=routing_key, declare=[])


def queue_counts(rabbit_url: str, prefix: str) -> dict[str, tuple[int, int]]:
    """Messages ready and unacknowledged in the broker's queues whose name starts with prefix."""
    vhost = parse.unquote(parse.urlsplit(rabbit_url).path.lstrip("/")) or "/"
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "--no-table-headers"]
        + ["name", "messages_ready", "messages_unacknowledged"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    counts = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0].startswith(prefix):
            counts[fields[0]] = (int(fields[1]), int(fields[2]))
    return counts
