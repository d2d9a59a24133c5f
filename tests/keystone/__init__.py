"""Keystone for the trust tests: a real one, or a faithful fake of its token API.

``RealKeystone`` is the Keystone service itself (the ``keystone`` package from
PyPI), installed once into a virtualenv of its own under the user's cache
directory (never into the project's), bootstrapped on SQLite with Fernet
tokens and served on 127.0.0.1. ``FakeKeystone`` (``tests.keystone.fake``)
speaks the same Identity v3 token API from inside the test process, so the
trust tests also run where Keystone cannot be installed.

Both offer the same small interface to the tests: ``auth_url``,
``service_credentials()``, ``create_trust()``, ``delete_trust()``,
``validate(token)``, ``trust_auths(trust_id)`` and ``close()``.

Environment:

``CEILO_TEST_KEYSTONE``
    ``auto`` (default): install and run the real Keystone, skip its tests
    with the reason if that is impossible; ``fake``: do not try.
``CEILO_TEST_CACHE``
    where the Keystone virtualenv is kept (default
    ``$XDG_CACHE_HOME/ceilo-notifier-tests`` or ``~/.cache/ceilo-notifier-tests``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import requests
from keystoneauth1 import session as ka_session
from keystoneauth1.identity import generic

from tests import helpers

KEYSTONE_REQUIREMENT = "keystone==30.0.0"
# keystoneauth renews a token 120 s before it expires: with this lifetime a
# token is reused for about 5 s, then renewed, which a test can wait for.
TOKEN_LIFETIME = 125

ADMIN_PASSWORD = "admin-secret"
SERVICE_USER = "ceilo-notifier"
SERVICE_PASSWORD = "service-secret"
SERVICE_PROJECT = "service"
TRUSTOR_USER = "alarm-owner"
TRUSTOR_PASSWORD = "owner-secret"
TRUSTOR_PROJECT = "alarms"
TRUST_ROLE = "member"

HERE = Path(__file__).resolve().parent


class Unavailable(Exception):
    """The real Keystone cannot be installed or started here."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cache_dir() -> Path:
    explicit = os.environ.get("CEILO_TEST_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ceilo-notifier-tests"


def cached_venv(name: str, requirements: tuple[str, ...], timeout: float = 780.0) -> Path:
    """A virtualenv ``<name>-py<X.Y>`` with ``requirements``, made once under
    ``cache_dir()`` and reused by later runs (and by test runs in parallel).

    :raises Unavailable: it cannot be made here, with the reason.
    """
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    venv = base / f"{name}-py{py}"
    ready = venv / ".ceilo-installed"
    wanted = "\n".join(requirements) + "\n"
    if ready.exists() and ready.read_text() == wanted:
        return venv
    with open(base / f".{name}-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be installing it
        if ready.exists() and ready.read_text() == wanted:
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        steps = (
            [sys.executable, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *requirements],
        )
        for cmd in steps:
            try:
                result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            except (OSError, subprocess.TimeoutExpired) as exc:
                shutil.rmtree(venv, ignore_errors=True)
                raise Unavailable(f"{' '.join(cmd[-3:])}: {exc}") from None
            if result.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
                raise Unavailable(f"{' '.join(cmd[-3:])} failed: {' | '.join(tail)}")
        ready.write_text(wanted)
    return venv


def keystone_venv() -> Path:
    """A virtualenv with Keystone installed."""
    return cached_venv(f"keystone-{KEYSTONE_REQUIREMENT.split('==')[-1]}", (KEYSTONE_REQUIREMENT,))


class Identity:
    """What the tests use of a Keystone; subclasses fill in the API calls."""

    name = "identity"
    url: str
    auth_url: str
    trustor_id: str
    trustee_id: str
    project_id: str

    def service_credentials(self, **overrides: object) -> dict[str, object]:
        """A ``[service_credentials]`` section for the service user (project-scoped,
        as operators configure it: the plugin must drop that scope for trusts)."""
        section: dict[str, object] = {
            "auth_type": "password",
            "auth_url": self.auth_url,
            "username": SERVICE_USER,
            "password": SERVICE_PASSWORD,
            "user_domain_name": "Default",
            "project_name": SERVICE_PROJECT,
            "project_domain_name": "Default",
        }
        section.update(overrides)
        return section

    def create_trust(self) -> str:
        raise NotImplementedError

    def delete_trust(self, trust_id: str) -> None:
        raise NotImplementedError

    def validate(self, token: str) -> dict | None:
        """The token's body as Keystone validates it, or None if it is not valid."""
        raise NotImplementedError

    def trust_auths(self, trust_id: str) -> int:
        """How many token requests scoped to this trust Keystone has received."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class RealKeystone(Identity):
    """Keystone itself, on SQLite, served by werkzeug on 127.0.0.1."""

    name = "keystone"

    def __init__(self, workdir: Path, startup_timeout: float = 90.0) -> None:
        self.venv = keystone_venv()
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth_url = f"{self.url}/v3"
        self.log_path = workdir / "keystone.log"
        self.proc: subprocess.Popen | None = None
        self._bootstrap()
        self._start(startup_timeout)
        self._create_users()

    # -- set-up --------------------------------------------------------------

    def _config(self) -> Path:
        w = self.workdir
        config = w / "keystone.conf"
        config.write_text(
            "\n".join(
                [
                    "[DEFAULT]",
                    f"log_file = {self.log_path}",
                    "[database]",
                    f"connection = sqlite:///{w / 'keystone.sqlite'}",
                    "[token]",
                    "provider = fernet",
                    f"expiration = {TOKEN_LIFETIME}",
                    "[fernet_tokens]",
                    f"key_repository = {w / 'fernet-keys'}",
                    "[fernet_receipts]",
                    f"key_repository = {w / 'fernet-keys'}",
                    "[credential]",
                    f"key_repository = {w / 'credential-keys'}",
                    "[identity]",
                    "password_hash_rounds = 4",
                    # Keystone's own in-process cache (it drops what a revocation
                    # touches): token validation costs 0.4 s without it.
                    "[cache]",
                    "enabled = true",
                    "backend = dogpile.cache.memory",
                    "",
                ]
            )
        )
        return config

    def _manage(self, *args: str) -> None:
        cmd = [str(self.venv / "bin" / "keystone-manage"), "--config-file", str(self.config)]
        result = subprocess.run(
            [*cmd, *args], capture_output=True, text=True, timeout=300, cwd=str(self.workdir)
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise Unavailable(f"keystone-manage {args[0]} failed: {' | '.join(tail)}")

    def _bootstrap(self) -> None:
        self.config = self._config()
        owner = ("--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid()))
        # The key repositories and the database are independent: made side by side
        # (each keystone-manage spends seconds importing Keystone).
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            steps = [
                pool.submit(self._manage, "db_sync"),
                pool.submit(self._manage, "fernet_setup", *owner),
                pool.submit(self._manage, "credential_setup", *owner),
            ]
            for step in steps:
                step.result()
        self._manage(
            "bootstrap",
            "--bootstrap-password",
            ADMIN_PASSWORD,
            "--bootstrap-region-id",
            "RegionOne",
            "--bootstrap-public-url",
            self.auth_url,
        )

    def _start(self, timeout: float) -> None:
        env = {**os.environ, "OS_KEYSTONE_CONFIG_FILES": str(self.config)}
        env.pop("PYTHONPATH", None)
        self._out = open(self.workdir / "keystone.out", "ab")
        self.proc = subprocess.Popen(
            [str(self.venv / "bin" / "python"), str(HERE / "serve.py"), str(self.port)],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(self.workdir),
        )
        if helpers.wait_serving(self.proc, self.auth_url, timeout=timeout):
            return
        output = (self.workdir / "keystone.out").read_text(errors="replace")[-2000:]
        self.close()
        raise Unavailable(f"Keystone did not start on {self.url}: {output}")

    def _session(self, user: str, password: str, **scope: str) -> ka_session.Session:
        auth = generic.Password(
            auth_url=self.auth_url,
            username=user,
            password=password,
            user_domain_id="default",
            **scope,
        )
        return ka_session.Session(auth=auth)

    def _create_users(self) -> None:
        self.admin = self._session("admin", ADMIN_PASSWORD, system_scope="all")
        a = self.auth_url

        def create(kind: str, body: dict) -> str:
            response = self.admin.post(f"{a}/{kind}s", json={kind: body})
            return response.json()[kind]["id"]

        def role_id(name: str) -> str:
            return self.admin.get(f"{a}/roles", params={"name": name}).json()["roles"][0]["id"]

        service_project = create("project", {"name": SERVICE_PROJECT, "domain_id": "default"})
        self.project_id = create("project", {"name": TRUSTOR_PROJECT, "domain_id": "default"})
        self.trustee_id = create(
            "user", {"name": SERVICE_USER, "password": SERVICE_PASSWORD, "domain_id": "default"}
        )
        self.trustor_id = create(
            "user", {"name": TRUSTOR_USER, "password": TRUSTOR_PASSWORD, "domain_id": "default"}
        )
        for project, user, role in (
            (service_project, self.trustee_id, "service"),
            (self.project_id, self.trustor_id, TRUST_ROLE),
        ):
            self.admin.put(f"{a}/projects/{project}/users/{user}/roles/{role_id(role)}")
        self.trustor = self._session(TRUSTOR_USER, TRUSTOR_PASSWORD, project_id=self.project_id)

    # -- what the tests use ----------------------------------------------------

    def create_trust(self) -> str:
        body = {
            "trust": {
                "trustor_user_id": self.trustor_id,
                "trustee_user_id": self.trustee_id,
                "project_id": self.project_id,
                "impersonation": True,
                "roles": [{"name": TRUST_ROLE}],
            }
        }
        response = self.trustor.post(f"{self.auth_url}/OS-TRUST/trusts", json=body)
        return response.json()["trust"]["id"]

    def delete_trust(self, trust_id: str) -> None:
        self.trustor.delete(f"{self.auth_url}/OS-TRUST/trusts/{trust_id}")

    def validate(self, token: str) -> dict | None:
        response = self.admin.get(
            f"{self.auth_url}/auth/tokens", headers={"X-Subject-Token": token}, raise_exc=False
        )
        if response.status_code != 200:
            return None
        return response.json()["token"]

    def add_endpoint(self, service_type: str, url: str) -> None:
        """Put a service in the catalog, public in RegionOne.

        ``url`` may hold Keystone's ``%(project_id)s`` substitution, as Heat's
        endpoints do.
        """
        a = self.auth_url
        existing = self.admin.get(f"{a}/services", params={"type": service_type}).json()
        for service in existing["services"]:
            self.admin.delete(f"{a}/services/{service['id']}")
        service = self.admin.post(
            f"{a}/services", json={"service": {"type": service_type, "name": service_type}}
        ).json()["service"]
        self.admin.post(
            f"{a}/endpoints",
            json={
                "endpoint": {
                    "service_id": service["id"],
                    "interface": "public",
                    "region_id": "RegionOne",
                    "url": url,
                }
            },
        )

    def trust_auths(self, trust_id: str) -> int:
        counts = requests.get(f"{self.url}/_test/trust-auths", timeout=10).json()
        return counts.get(trust_id, 0)

    def close(self) -> None:
        helpers.stop_process(self.proc)
        if getattr(self, "_out", None) is not None:
            self._out.close()


class Forwarder:
    """A TCP port in front of a Keystone that can be taken down and brought back.

    Down, connections to it are refused, as to a Keystone that is stopped.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def url(self, path: str = "/v3") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def up(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            listener.settimeout(0.1)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        if listener is not None:
            listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            with self._lock:
                if self._listener is not listener:
                    return
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.down()
