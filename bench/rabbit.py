"""RabbitMQ for the benchmark: a vhost on the shared broker, or a node of its own.

The shared broker is never stopped or restarted: the benchmark only adds a
vhost to it and deletes that vhost at the end. A scenario that restarts the
broker starts a node of its own (own name, ports, data and log directories,
Erlang cookie) and stops it again, even when the scenario fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_version(host: str, port: int, user: str = "guest", password: str = "guest") -> str:
    """The version the broker announces in its AMQP server properties."""
    import amqp

    conn = amqp.Connection(f"{host}:{port}", userid=user, password=password, connect_timeout=5)
    try:
        conn.connect()
        version = conn.server_properties.get("version", "?")
        return version.decode() if isinstance(version, bytes) else str(version)
    finally:
        conn.close()


def queue_consumers(
    host: str, port: int, vhost: str, queues: list[str], user: str = "guest",
    password: str = "guest",
) -> dict[str, int | None]:
    """Consumers of each queue (None: no such queue), by a passive declare over AMQP."""
    import amqp

    conn = amqp.Connection(
        f"{host}:{port}", userid=user, password=password, virtual_host=vhost, connect_timeout=5
    )
    out: dict[str, int | None] = {}
    try:
        conn.connect()
        for name in queues:
            channel = conn.channel()
            try:
                out[name] = channel.queue_declare(name, passive=True).consumer_count
            except amqp.exceptions.NotFound:
                out[name] = None  # the broker closed the channel
                continue
            channel.close()
    finally:
        conn.close()
    return out


def wait_consumed(
    host: str, port: int, vhost: str, queues: list[str], alive, timeout: float = 90.0
) -> None:
    """Wait until every queue has a consumer; alive() false means the consumer died."""
    deadline = time.monotonic() + timeout
    seen: dict = {}
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("exited before it consumed")
        try:
            seen = queue_consumers(host, port, vhost, queues)
        except OSError as exc:
            seen = {"error": str(exc)}
        if all(seen.get(q) for q in queues):
            return
        time.sleep(0.2)
    raise TimeoutError(f"no consumer on {queues} after {timeout:.0f} s: {seen}")


class SharedVhost:
    """A vhost of this run on an already running broker, managed with rabbitmqctl."""

    def __init__(self, host: str, port: int, user: str = "guest", password: str = "guest",
                 label: str = ""):  # fmt: skip
        self.host, self.port, self.user, self.password = host, port, user, password
        self.name = f"ceilo-bench-{label + '-' if label else ''}{uuid.uuid4().hex[:10]}"
        self.created = False

    def _ctl(self, *args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)

    def __enter__(self) -> SharedVhost:
        if shutil.which("rabbitmqctl") is None:
            raise RuntimeError("rabbitmqctl not found: the benchmark needs a RabbitMQ server")
        self._ctl("add_vhost", self.name)
        self.created = True
        self._ctl("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")
        return self

    def __exit__(self, *exc) -> None:
        if self.created:
            try:
                self._ctl("delete_vhost", self.name)
            except Exception as e:  # noqa: BLE001 - cleanup goes on
                print(f"warning: could not delete vhost {self.name}: {e}")

    @property
    def url(self) -> str:
        return f"rabbit://{self.user}:{self.password}@{self.host}:{self.port}/{self.name}"


def _rabbit_scripts() -> Path:
    """Directory of the real rabbitmq-server / rabbitmqctl scripts.

    Debian's /usr/sbin wrappers switch to the rabbitmq user and write the
    system broker's startup log; the scripts behind them do neither.
    """
    env = os.environ.get("RABBITMQ_SCRIPTS_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path("/usr/lib/rabbitmq/bin"))
    found = shutil.which("rabbitmq-server")
    if found:
        candidates.append(Path(found).resolve().parent)
    for directory in candidates:
        if (directory / "rabbitmq-server").exists() and (directory / "rabbitmqctl").exists():
            return directory
    raise RuntimeError("rabbitmq-server not found (set RABBITMQ_SCRIPTS_DIR)")


class OwnNode:
    """A RabbitMQ node of the benchmark's own, to be restarted at will.

    Its data (mnesia), logs, pid file, config and Erlang cookie live in a
    temporary directory; a restart stops and starts the same node on the same
    data, as an operator's restart does.
    """

    def __init__(self, workdir: Path | None = None):
        self.scripts = _rabbit_scripts()
        self.dir = Path(tempfile.mkdtemp(prefix="ceilo-bench-rmq-", dir=workdir))
        self.name = f"bench-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        while self.dist_port == self.port:
            self.dist_port = free_port()
        (self.dir / "home").mkdir()
        cookie = self.dir / "home" / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex.upper())
        cookie.chmod(0o400)
        (self.dir / "rabbitmq-env.conf").write_text("")
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users = none\n"
            "log.file.level = warning\n"
        )
        self.env = {
            **os.environ,
            "HOME": str(self.dir / "home"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
        }
        for name in ("RABBITMQ_CONFIG_FILES", "RABBITMQ_ADVANCED_CONFIG_FILE", "ERL_FLAGS"):
            self.env.pop(name, None)
        self.running = False

    def ctl(self, *args: str, timeout: float = 60, check: bool = True):
        return subprocess.run(
            [str(self.scripts / "rabbitmqctl"), "-n", self.name, *args],
            env=self.env,
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def start(self, timeout: float = 60.0) -> float:
        """Start the node and wait until it serves AMQP; returns the seconds it took."""
        began = time.monotonic()
        subprocess.run(
            [str(self.scripts / "rabbitmq-server"), "-detached"],
            env=self.env,
            cwd=self.dir,
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.running = True
        deadline = began + timeout
        while True:
            result = self.ctl("-q", "await_startup", "--timeout", "30", check=False, timeout=40)
            if result.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"RabbitMQ node {self.name} did not start: {result.stderr[-2000:]}"
                    f"\n(logs in {self.dir / 'log'})"
                )
            time.sleep(0.2)
        return time.monotonic() - began

    def stop(self) -> None:
        if not self.running:
            return
        result = self.ctl("stop", check=False, timeout=60)
        if result.returncode != 0:
            self._kill_by_pid()
        self.running = False

    def _kill_by_pid(self) -> None:
        try:
            pid = int((self.dir / "rabbitmq.pid").read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass

    def restart(self) -> tuple[float, float]:
        """Stop and start the same node; returns (seconds down, seconds to stop)."""
        began = time.monotonic()
        self.stop()
        stopped = time.monotonic() - began
        self.start()
        return time.monotonic() - began, stopped

    def add_vhost(self, name: str) -> str:
        self.ctl("-q", "add_vhost", name)
        self.ctl("-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return f"rabbit://guest:guest@127.0.0.1:{self.port}/{name}"

    def list_queues(self, vhost: str) -> str:
        result = self.ctl(
            "-q", "list_queues", "-p", vhost, "name", "type", "durable", "messages", check=False
        )
        return result.stdout

    def __enter__(self) -> OwnNode:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
