"""A PostgreSQL cluster of a test's own, on a port of its own, to stop and start at will.

Tests that take the database away must never touch the shared server: this
one is made with ``initdb`` in a temporary directory (as the ``postgres``
user when the tests run as root, since PostgreSQL refuses to run as root)
and removed afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile

from tests.helpers import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (tools/run-tests.sh installs it)")
    return found[-1]


class PrivateCluster:
    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="ceilo-pg-", dir="/var/tmp")
        self.data = os.path.join(self.root, "data")
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres")
        os.chmod(self.root, 0o700)
        self._run(_bin("initdb"), "-D", self.data, "-A", "trust", "-U", "postgres")
        self.start()
        self._run(_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "j")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/j"

    def _run(self, *cmd: str) -> None:
        if self.as_postgres:
            cmd = ("runuser", "-u", "postgres", "--", *cmd)
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run(
            _bin("pg_ctl"),
            "-D",
            self.data,
            "-l",
            os.path.join(self.root, "server.log"),
            "-w",
            "-s",
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1",
            "start",
        )

    def stop(self) -> None:
        self._run(_bin("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "-s", "stop")

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
