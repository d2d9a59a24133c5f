"""Zaqar for the zaqar:// and trust+zaqar:// notifier tests: the real service.

``RealZaqar`` is OpenStack's messaging service itself (the ``zaqar`` package
from PyPI), installed once into a virtualenv of its own under the tests' cache
directory (``tests.keystone.cache_dir()``; never into the project's, nor into
Keystone's) and served on a free port of 127.0.0.1 with its v2 API. It keeps
queues, messages and subscriptions in a Redis server of its own: a private
``redis-server`` started on a free port (no disk writes), or, where that
program is missing, a database of the shared one on 127.0.0.1:6379 picked at
random among the empty ones and flushed at the end.

Zaqar authenticates every request with keystonemiddleware's auth_token
against the real Keystone of the tests (``tests.keystone.RealKeystone``),
validating tokens as a service user ``zaqar`` of its own (role ``service`` in
project ``service``), so project-scoped and trust-scoped tokens are taken
exactly as in a cloud. Pre-signed URLs work too (``[signed_url] secret_key``),
and so do subscriptions: Zaqar's notifier stage POSTs every message posted to
a queue to each of its http(s) subscribers, as a deployed Zaqar does.

The tests use ``start_zaqar(keystone, workdir)`` and the interface of
``RealZaqar``: ``url`` (for the catalog, service type ``messaging``),
``create_queue()``, ``messages()``, ``subscriptions()``, ``presign()``,
``session()`` and ``close()``. ``Unavailable`` (that of ``tests.keystone``)
says why Zaqar cannot be installed or started here.

Installing Zaqar the first time takes about half a minute to a few minutes
(it is kept for later runs); starting it takes a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from urllib import parse

import requests
from keystoneauth1 import session as ka_session
from keystoneauth1.identity import v3

from tests import helpers
from tests.keystone import (
    SERVICE_PASSWORD,
    SERVICE_PROJECT,
    SERVICE_USER,
    RealKeystone,
    Unavailable,
    cached_venv,
    free_port,
)

__all__ = ["RealZaqar", "Unavailable", "Zaqar", "start_zaqar", "zaqar_venv"]

ZAQAR_REQUIREMENT = "zaqar==23.0.1"
# Zaqar's Redis drivers need the client, which Zaqar does not declare.
EXTRA_REQUIREMENTS = ("redis==8.1.0",)

# Zaqar's own service user: keystonemiddleware validates tokens as this user.
AUTH_USER = "zaqar"
AUTH_PASSWORD = "zaqar-secret"
# What Zaqar answers of a queue name longer than 64 characters, or with a
# character outside [a-zA-Z0-9_.-]: 400.
QUEUE_NAME_MAX_LEN = 64

HERE = Path(__file__).resolve().parent
PAGE = 20  # the most messages Zaqar lists at once by default


def zaqar_venv() -> Path:
    """A virtualenv with Zaqar installed."""
    version = ZAQAR_REQUIREMENT.split("==")[-1]
    return cached_venv(f"zaqar-{version}", (ZAQAR_REQUIREMENT, *EXTRA_REQUIREMENTS))


# -- Redis ----------------------------------------------------------------------


def _redis_command(port: int, db: int, *args: str) -> bytes:
    """One Redis command in the RESP protocol; its reply's first line."""
    parts = ["SELECT", str(db)]
    payload = b""
    for command in (parts, list(args)):
        payload += f"*{len(command)}\r\n".encode()
        for arg in command:
            data = arg.encode()
            payload += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(payload)
        received = b""
        while received.count(b"\r\n") < 2:
            chunk = conn.recv(4096)
            if not chunk:
                break
            received += chunk
    lines = received.split(b"\r\n")
    if len(lines) < 2 or not lines[0].startswith(b"+"):
        raise OSError(f"Redis on port {port} answered {received[:200]!r}")
    if lines[1].startswith(b"-"):
        raise OSError(f"Redis on port {port} answered {lines[1].decode(errors='replace')}")
    return lines[1]


class Redis:
    """The Redis database of one Zaqar: a private server, or a shared one's spare database."""

    SHARED_PORT = 6379

    def __init__(self, workdir: Path, startup_timeout: float = 20.0) -> None:
        self.proc: subprocess.Popen | None = None
        self._out = None
        program = shutil.which("redis-server")
        if program is not None:
            self._start_private(program, workdir, startup_timeout)
        else:
            self._pick_shared()

    @property
    def uri(self) -> str:
        return f"redis://127.0.0.1:{self.port}?dbid={self.db}"

    def _start_private(self, program: str, workdir: Path, timeout: float) -> None:
        self.port = free_port()
        self.db = 0
        self._out = open(workdir / "redis.out", "ab")
        self.proc = subprocess.Popen(
            [
                program,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=str(workdir),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                _redis_command(self.port, 0, "PING")
                return
            time.sleep(0.1)
        output = (workdir / "redis.out").read_text(errors="replace")[-1000:]
        self.close()
        raise Unavailable(f"redis-server did not start on 127.0.0.1:{self.port}: {output}")

    def _pick_shared(self) -> None:
        self.port = self.SHARED_PORT
        candidates = list(range(1, 16))
        secrets.SystemRandom().shuffle(candidates)
        for db in candidates:
            try:
                size = _redis_command(self.port, db, "DBSIZE")
            except OSError as exc:
                raise Unavailable(
                    f"no redis-server on PATH and no Redis on 127.0.0.1:{self.port}: {exc}"
                ) from None
            if size == b":0":
                self.db = db
                return
        raise Unavailable(f"Redis on 127.0.0.1:{self.port} has no empty database 1-15")

    def close(self) -> None:
        if self.proc is None:
            if getattr(self, "db", None) is not None:
                with contextlib.suppress(OSError):
                    _redis_command(self.port, self.db, "FLUSHDB")
        else:
            helpers.stop_process(self.proc)
        if self._out is not None:
            self._out.close()
            self._out = None


# -- Zaqar ----------------------------------------------------------------------


class RealZaqar:
    """Zaqar itself, with Redis storage and Keystone auth, served on 127.0.0.1."""

    name = "zaqar"

    def __init__(
        self, keystone: RealKeystone, workdir: Path, startup_timeout: float = 60.0
    ) -> None:
        self.venv = zaqar_venv()
        self.keystone = keystone
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = str(uuid.uuid4())
        self.secret_key = secrets.token_hex(16)
        self.log_path = workdir / "zaqar.log"
        self.proc: subprocess.Popen | None = None
        self._out = None
        self._sessions: dict[str, ka_session.Session] = {}
        self._create_user()
        self.redis = Redis(workdir)
        try:
            self.config = self._config()
            self._start(startup_timeout)
        except BaseException:
            self.close()
            raise

    # -- set-up --------------------------------------------------------------

    def _create_user(self) -> None:
        """Zaqar's service user, which keystonemiddleware validates tokens as."""
        ks, a = self.keystone, self.keystone.auth_url

        def one(kind: str, name: str) -> dict | None:
            found = ks.admin.get(f"{a}/{kind}s", params={"name": name}).json()[f"{kind}s"]
            return found[0] if found else None

        project = one("project", SERVICE_PROJECT)
        if project is None:
            raise Unavailable(f"Keystone has no project {SERVICE_PROJECT!r}")
        self.service_project_id = project["id"]
        user = one("user", AUTH_USER)
        if user is None:
            body = {"name": AUTH_USER, "password": AUTH_PASSWORD, "domain_id": "default"}
            user = ks.admin.post(f"{a}/users", json={"user": body}).json()["user"]
        self.auth_user_id = user["id"]
        role = one("role", "service")
        ks.admin.put(
            f"{a}/projects/{self.service_project_id}/users/{self.auth_user_id}/roles/{role['id']}"
        )

    def _config(self) -> Path:
        w, ks = self.workdir, self.keystone
        config = w / "zaqar.conf"
        config.write_text(
            "\n".join(
                [
                    "[DEFAULT]",
                    "auth_strategy = keystone",
                    "debug = true",
                    f"log_file = {self.log_path}",
                    "[drivers]",
                    "transport = wsgi",
                    "message_store = redis",
                    "management_store = redis",
                    "[drivers:message_store:redis]",
                    f"uri = {self.redis.uri}",
                    "[drivers:management_store:redis]",
                    f"uri = {self.redis.uri}",
                    "[storage]",
                    # Zaqar's notifier: POSTs posted messages to the subscribers.
                    "message_pipeline = zaqar.notification.notifier",
                    "[signed_url]",
                    f"secret_key = {self.secret_key}",
                    "[keystone_authtoken]",
                    f"www_authenticate_uri = {ks.auth_url}",
                    f"auth_url = {ks.auth_url}",
                    "auth_type = password",
                    f"username = {AUTH_USER}",
                    f"password = {AUTH_PASSWORD}",
                    "user_domain_id = default",
                    f"project_name = {SERVICE_PROJECT}",
                    "project_domain_id = default",
                    # Keystone's catalog has only a public identity endpoint.
                    "interface = public",
                    # Validate every token with Keystone, none from a cache: a
                    # revoked trust's token is refused at once.
                    "token_cache_time = -1",
                    "",
                ]
            )
        )
        return config

    def _start(self, timeout: float) -> None:
        # Zaqar reaches only Keystone and the subscribers, all on 127.0.0.1.
        env = {
            key: value
            for key, value in os.environ.items()
            if key != "PYTHONPATH" and not key.lower().endswith("_proxy")
        }
        self._out = open(self.workdir / "zaqar.out", "ab")
        self.proc = subprocess.Popen(
            [
                str(self.venv / "bin" / "python"),
                str(HERE / "serve.py"),
                str(self.port),
                str(self.config),
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(self.workdir),
        )
        # The versions document: unauthenticated, 300 Multiple Choices.
        if helpers.wait_serving(self.proc, f"{self.url}/", (200, 300), timeout):
            return
        output = (self.workdir / "zaqar.out").read_text(errors="replace")[-2000:]
        raise Unavailable(f"Zaqar did not start on {self.url}: {output}")

    # -- what the tests use ----------------------------------------------------

    def session(self, project_id: str) -> ka_session.Session:
        """A keystoneauth session scoped to ``project_id``: the notifier's service
        user for project ``service``, alarm-owner for the trustor's project, Zaqar's
        own user (made a member there) for any other."""
        if project_id not in self._sessions:
            ks = self.keystone
            if project_id == ks.project_id:
                self._sessions[project_id] = ks.trustor
            else:
                user, password = SERVICE_USER, SERVICE_PASSWORD
                if project_id != self.service_project_id:
                    user, password = AUTH_USER, AUTH_PASSWORD
                    a = ks.auth_url
                    roles = ks.admin.get(f"{a}/roles", params={"name": "member"}).json()
                    ks.admin.put(
                        f"{a}/projects/{project_id}/users/{self.auth_user_id}"
                        f"/roles/{roles['roles'][0]['id']}"
                    )
                auth = v3.Password(
                    auth_url=ks.auth_url,
                    username=user,
                    password=password,
                    user_domain_id="default",
                    project_id=project_id,
                )
                self._sessions[project_id] = ka_session.Session(auth=auth)
        return self._sessions[project_id]

    def _request(self, method: str, project_id: str, path: str, **kwargs) -> requests.Response:
        headers = {"Client-ID": self.client_id, "Accept": "application/json"}
        return self.session(project_id).request(
            f"{self.url}{path}", method, headers=headers, **kwargs
        )

    def _listing(self, project_id: str, path: str, key: str, params: dict) -> list[dict]:
        """All pages of a listing. A short page is the last: Zaqar's Redis driver
        answers a marker at rank 0 with the first page again."""
        items: list[dict] = []
        seen: set[str] = set()
        while True:
            response = self._request("GET", project_id, path, params=params)
            if response.status_code == 204:
                return items
            document = response.json()
            page = [item for item in document.get(key) or () if item.get("id") not in seen]
            items.extend(page)
            seen.update(item.get("id") for item in page)
            following = [
                link["href"] for link in document.get("links", ()) if link["rel"] == "next"
            ]
            if len(page) < int(params.get("limit", PAGE)) or not following:
                return items
            params = dict(parse.parse_qsl(parse.urlsplit(following[0]).query))

    def _queue_path(self, queue: str) -> str:
        return f"/v2/queues/{parse.quote(queue, safe='')}"

    def create_queue(self, project_id: str, queue: str) -> None:
        self._request("PUT", project_id, self._queue_path(queue), json={})

    def messages(self, project_id: str, queue: str) -> list[dict]:
        """The bodies of the messages in the queue, oldest first.

        Unclaimed ones only: Zaqar's Redis driver fails (503) on
        ``include_claimed=true`` without a marker, and nothing here claims."""
        params = {"echo": "true", "limit": str(PAGE)}
        found = self._listing(project_id, f"{self._queue_path(queue)}/messages", "messages", params)
        return [message["body"] for message in found]

    def subscriptions(self, project_id: str, queue: str) -> list[dict]:
        """The queue's subscriptions as Zaqar lists them: ``subscriber``, ``ttl``,
        ``options``, and Zaqar's ``id``, ``source``, ``age``, ``confirmed``."""
        path = f"{self._queue_path(queue)}/subscriptions"
        return self._listing(project_id, path, "subscriptions", {"limit": str(PAGE)})

    def presign(
        self,
        project_id: str,
        queue: str,
        methods: tuple[str, ...] | list[str] = ("POST",),
        paths: tuple[str, ...] | list[str] = ("messages",),
    ) -> dict:
        """What ``POST /v2/queues/{queue}/share`` answers: ``project``, ``paths``
        (full paths, e.g. ``/v2/queues/q/messages``), ``methods``, ``expires``
        (a day from now) and ``signature``."""
        body = {"methods": list(methods), "paths": list(paths)}
        response = self._request("POST", project_id, f"{self._queue_path(queue)}/share", json=body)
        return response.json()

    def close(self) -> None:
        helpers.stop_process(self.proc)
        if self._out is not None:
            self._out.close()
            self._out = None
        redis = getattr(self, "redis", None)
        if redis is not None:
            redis.close()


Zaqar = RealZaqar


def start_zaqar(keystone: RealKeystone, workdir: Path) -> RealZaqar:
    """Install (the first time) and start Zaqar against ``keystone``; raises
    ``Unavailable`` with the reason when that is impossible here."""
    workdir.mkdir(parents=True, exist_ok=True)
    return RealZaqar(keystone, workdir)
