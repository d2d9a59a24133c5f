"""etc/systemd/ceilo-notifier.service: valid for systemd, and hardened.

``systemd-analyze verify`` loads the unit as systemd would (every key known,
ExecStart executable): the unit is checked as shipped, but for the path of its
binary, which becomes an executable stub in a temporary directory.
``systemd-analyze security --offline=true`` scores its exposure. Neither
needs a running systemd; tools/bootstrap.sh installs them when missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.helpers import ROOT

UNIT = ROOT / "etc" / "systemd" / "ceilo-notifier.service"
SYSUSERS = ROOT / "etc" / "systemd" / "ceilo-notifier.sysusers"
BINARY = "/usr/local/bin/ceilo-notifier"
CONFIG = "/etc/ceilo-notifier/ceilo-notifier.conf"
# systemd-analyze security: 0 is the most locked down, 10 "UNSAFE"; 1.4 when written.
MAX_EXPOSURE = 2.0


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing (tools/bootstrap.sh installs the systemd package)")
    return path


def service() -> dict[str, list[str]]:
    """[Service] of the unit: every value of each key, in order."""
    values: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


@pytest.fixture
def unit_with_stub(tmp_path):
    """The unit as shipped, but for ExecStart's binary: an executable stub here."""
    stub = tmp_path / "bin" / "ceilo-notifier"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    assert text.count(f"ExecStart={BINARY} ") == 1
    unit = tmp_path / "ceilo-notifier.service"
    unit.write_text(text.replace(f"ExecStart={BINARY} ", f"ExecStart={stub} "))
    return unit


def test_verify(unit_with_stub):
    proc = subprocess.run(
        [tool("systemd-analyze"), "verify", str(unit_with_stub)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # An unknown key or a bad value is a warning with status 0: any line about
    # the unit fails the test too.
    about_unit = [
        line for line in (proc.stdout + proc.stderr).splitlines() if "ceilo-notifier" in line
    ]
    assert proc.returncode == 0 and not about_unit, proc.stdout + proc.stderr


def test_verify_catches_a_broken_unit(tmp_path, unit_with_stub):
    """The check above would see a mistake."""
    broken = tmp_path / "broken" / "ceilo-notifier.service"
    broken.parent.mkdir()
    broken.write_text(unit_with_stub.read_text().replace("ProtectHome=yes", "ProtectHomes=yes"))
    proc = subprocess.run(
        [tool("systemd-analyze"), "verify", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert "ProtectHomes" in proc.stdout + proc.stderr


def test_exposure_score(unit_with_stub):
    proc = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=true", str(unit_with_stub)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, proc.stdout


def test_hardening():
    unit = service()
    one = {key: values[-1] for key, values in unit.items()}
    assert one["User"] == "ceilo-notifier" and "DynamicUser" not in one
    assert unit["ExecStart"] == [f"{BINARY} --config-file {CONFIG}"]
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "StateDirectory": "ceilo-notifier",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
    }.items():
        assert one.get(key) == value, key
    assert unit["SystemCallFilter"][0] == "@system-service"
    # Nothing writable but the state directory, which is state_path's default.
    assert not {"ReadWritePaths", "LogsDirectory", "CacheDirectory", "RuntimeDirectory"} & set(
        unit
    )
    from ceilo_notifier import opts

    state_path = next(o for o in opts.DEFAULT_OPTS if o.name == "state_path")
    assert state_path.default == f"/var/lib/{one['StateDirectory']}"
    assert one["WorkingDirectory"] == state_path.default


def test_stop_timeout_outlasts_graceful_shutdown():
    from oslo_service import _options

    graceful = next(o for o in _options.service_opts if o.name == "graceful_shutdown_timeout")
    timeout = service()["TimeoutStopSec"][-1]
    assert int(timeout.rstrip("s")) > graceful.default


def test_open_file_limit_fits_the_default_pool():
    """The default pool, as many idle keep-alive sockets and the headroom fit under it."""
    from oslo_config import cfg

    from ceilo_notifier import limits, opts

    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf([], default_config_files=[])
    need = 2 * conf.alarm.dispatch_pool_size + limits.headroom(conf)
    assert int(service()["LimitNOFILE"][-1]) >= 4 * need


def test_sysusers_creates_the_user(tmp_path):
    (tmp_path / "etc").mkdir()
    subprocess.run(
        [tool("systemd-sysusers"), f"--root={tmp_path}", str(SYSUSERS)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    passwd = (tmp_path / "etc" / "passwd").read_text()
    user = next(line for line in passwd.splitlines() if line.startswith("ceilo-notifier:"))
    assert user.endswith(":/var/lib/ceilo-notifier:/usr/sbin/nologin")
    assert "ceilo-notifier:" in (tmp_path / "etc" / "group").read_text()


def test_each_setting_once():
    """A key set twice means the last wins, but for SystemCallFilter, whose lines add up."""
    repeated = {k for k, v in service().items() if len(v) > 1}
    assert repeated <= {"SystemCallFilter"}
