"""The devstack plugin, run phase by phase in a bash sandbox.

devstack's functions are replaced by the stand-ins of ``tests/devstack_stubs``:
each one records its name and arguments in a call log, and ``iniset`` really
writes the configuration file, which the tests then read back. Every path
(``DEST``, ``DATA_DIR``, the configuration directory, the directory of the
console scripts) is a temporary directory.
"""

from __future__ import annotations

import configparser
import dataclasses
import getpass
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from oslo_config import cfg

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "devstack" / "plugin.sh"
SETTINGS = ROOT / "devstack" / "settings"
STUBS = Path(__file__).resolve().parent / "devstack_stubs"
SEP = "\x1f"
DONE = "SANDBOX-DONE"

# What stack.sh runs, in order, in one shell.
STACK_PHASES = [("stack", "install"), ("stack", "post-config"), ("stack", "extra")]

# A stand-in for the console script: it records its call and insists on the config file.
FAKE_MANAGE = """#!/bin/bash
IFS=$'\\x1f'
printf '%s\\n' "ceilo-notifier-manage$IFS$*" >> "$STUB_LOG"
[[ "$1" == "--config-file" && -f "$2" ]] || { echo "no config file: $2" >&2; exit 3; }
"""


@dataclasses.dataclass
class Call:
    name: str
    args: list[str]


class Sandbox:
    """DEST, DATA_DIR, the config dir and devstack's environment, all in a temp dir."""

    def __init__(self, root: Path, **env: str) -> None:
        self.root = root
        self.dest = root / "opt-stack"
        self.data_dir = self.dest / "data"
        self.checkout = self.dest / "ceilo-notifier"
        self.conf_dir = root / "etc" / "ceilo-notifier"
        self.conf = self.conf_dir / "ceilo-notifier.conf"
        self.data = self.data_dir / "ceilo-notifier"
        self.bin_dir = root / "venv" / "bin"
        self.log = root / "calls.log"
        for directory in (self.checkout, self.data_dir, self.bin_dir):
            directory.mkdir(parents=True, exist_ok=True)
        manage = self.bin_dir / "ceilo-notifier-manage"
        manage.write_text(FAKE_MANAGE)
        manage.chmod(0o755)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(root),
            "LC_ALL": "C.UTF-8",
            "STUB_LOG": str(self.log),
            "STUB_DIR": str(STUBS),
            "STUB_PYTHON": sys.executable,
            "STUB_BIN_DIR": str(self.bin_dir),
            "DEST": str(self.dest),
            "DATA_DIR": str(self.data_dir),
            "STACK_USER": getpass.getuser(),
            "CEILO_NOTIFIER_CONF_DIR": str(self.conf_dir),
            "ENABLED_SERVICES": "rabbit",
            "DATABASE_BACKENDS": " mysql postgresql",
            "DATABASE_TYPE": "mysql",
            "BASE_SQL_CONN": "mysql+pymysql://root:dbsecret@127.0.0.1",
            "RABBIT_USERID": "stackrabbit",
            "RABBIT_PASSWORD": "rabbitsecret",
            "RABBIT_HOST": "192.0.2.10",
            "SERVICE_HOST": "192.0.2.10",
            "SERVICE_TIMEOUT": "60",
            "ENABLE_DEBUG_LOG_LEVEL": "True",
            "KEYSTONE_SERVICE_URI": "http://192.0.2.10/identity",
            "SERVICE_PASSWORD": "servicesecret",
            "SERVICE_PROJECT_NAME": "service",
            "SERVICE_DOMAIN_NAME": "Default",
            "REGION_NAME": "RegionOne",
        }
        self.env.update(env)

    def run(
        self,
        phases: list[tuple[str, str]],
        *,
        rpc_backend: bool = True,
        localrc: str = "",
        check: bool = True,
    ) -> subprocess.CompletedProcess:
        """Source settings, then plugin.sh once per phase, in one shell under errexit.

        ``rpc_backend=False`` leaves lib/rpc_backend's functions out, as unstack.sh does.
        """
        lines = [
            "set -o errexit",
            "set -o xtrace",
            f'source "{STUBS / "functions.sh"}"',
        ]
        if rpc_backend:
            lines.append(f'source "{STUBS / "rpc_backend.sh"}"')
        lines += [
            localrc,
            'compgen -A function | sort > "$STUB_LOG.functions.before"',
            'compgen -v | sort > "$STUB_LOG.variables.before"',
            f'source "{SETTINGS}"',
        ]
        for mode, phase in phases:
            lines.append(f"_stub_record PHASE {mode} {phase}".rstrip())
            lines.append(f'source "{PLUGIN}" {mode} {phase}'.rstrip())
        lines += [
            'compgen -A function | sort > "$STUB_LOG.functions.after"',
            'compgen -v | sort > "$STUB_LOG.variables.after"',
            'echo "ENABLED_SERVICES=$ENABLED_SERVICES"',
            '[[ $- == *e* ]] && echo "ERREXIT=on"',
            f"echo {DONE}",
        ]
        script = self.root / "sandbox.sh"
        script.write_text("\n".join(lines) + "\n")
        proc = subprocess.run(
            ["bash", str(script)], env=self.env, capture_output=True, text=True, timeout=120
        )
        if check:
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert DONE in proc.stdout, proc.stderr[-3000:]
        return proc

    def stack(self, **kw) -> subprocess.CompletedProcess:
        return self.run(STACK_PHASES, **kw)

    def unstack(self) -> subprocess.CompletedProcess:
        return self.run([("unstack", "")], rpc_backend=False)

    def clean(self) -> subprocess.CompletedProcess:
        """clean.sh: unstack.sh --all in its own process, then plugin.sh clean."""
        self.unstack()
        return self.run([("clean", "")])

    def calls(self, name: str | None = None) -> list[Call]:
        if not self.log.exists():
            return []
        found = []
        for line in self.log.read_text().splitlines():
            fields = line.split(SEP)
            if name is None or fields[0] == name:
                found.append(Call(fields[0], fields[1:]))
        return found

    def names(self) -> list[str]:
        return [call.name for call in self.calls()]

    def index(self, name: str, *args: str) -> int:
        """Position in the log of the first call of ``name`` whose arguments start with args."""
        for position, call in enumerate(self.calls()):
            if call.name == name and call.args[: len(args)] == list(args):
                return position
        raise AssertionError(f"{name} {args} was not called: {self.names()}")

    def config(self) -> configparser.ConfigParser:
        # [DEFAULT] is a section like the others here, as it is for oslo.config.
        parser = configparser.ConfigParser(interpolation=None, default_section="")
        parser.optionxform = str
        parser.read_string(self.conf.read_text())
        return parser

    def multi_config(self) -> dict:
        """The config file as oslo.config reads it: every option a list of values."""
        sections: dict = {}
        cfg.ConfigParser(str(self.conf), sections).parse()
        return sections

    def new_names(self, kind: str) -> set[str]:
        before = Path(f"{self.log}.{kind}.before").read_text().split()
        after = Path(f"{self.log}.{kind}.after").read_text().split()
        return set(after) - set(before)


@pytest.fixture
def sandbox(tmp_path):
    return Sandbox(tmp_path)


def _code_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]


# --- static checks --------------------------------------------------------------------------


@pytest.mark.parametrize("path", [PLUGIN, SETTINGS], ids=["plugin.sh", "settings"])
def test_bash_syntax(path):
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_shellcheck():
    assert shutil.which("shellcheck"), "shellcheck is missing (tools/run-tests.sh installs it)"
    proc = subprocess.run(
        ["shellcheck", "--shell=bash", str(PLUGIN), str(SETTINGS)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_plugin_avoids_what_reviewers_reject():
    code = "\n".join(_code_lines(PLUGIN) + _code_lines(SETTINGS))
    for pattern in [
        r"\bexit\b",
        r"\bset\s+[-+]\w*e",
        r"errexit",
        r"pip3?\s+install",
        r"setup\.py",
        r"\bscreen\b",
        r"\bnohup\b",
        r"\bsystemctl\b",
        r"&\s*$",
        r"/opt/stack",
        r"rabbit://",
        r"guest",
    ]:
        assert re.search(pattern, code, re.MULTILINE) is None, pattern


def test_setup_cfg_names_the_plugin():
    """setup_develop reads the project name from setup.cfg; it must match define_plugin."""
    setup = configparser.ConfigParser(interpolation=None)
    setup.read(ROOT / "setup.cfg")
    assert setup["metadata"]["name"] == "ceilo-notifier"
    assert re.search(r"^define_plugin ceilo-notifier$", SETTINGS.read_text(), re.MULTILINE)
    scripts = setup["entry_points"]["console_scripts"]
    assert re.search(r"^ceilo-notifier\s*=", scripts, re.MULTILINE)


# --- settings -------------------------------------------------------------------------------


def test_settings_build_paths_from_dest_and_data_dir(tmp_path):
    box = Sandbox(tmp_path)
    del box.env["CEILO_NOTIFIER_CONF_DIR"]
    script = tmp_path / "settings.sh"
    script.write_text(
        f'set -o errexit\nsource "{STUBS / "functions.sh"}"\nsource "{SETTINGS}"\n'
        "for v in DIR CONF_DIR CONF DATA_DIR WORKERS QUORUM_QUEUES METRICS_PORT "
        "DISABLE_AODH_NOTIFIER RPC_TOPIC EVENT_DISPATCHERS; do\n"
        '  name=CEILO_NOTIFIER_$v; echo "$name=${!name}"\ndone\n'
    )
    proc = subprocess.run(["bash", str(script)], env=box.env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert values == {
        "CEILO_NOTIFIER_DIR": f"{box.dest}/ceilo-notifier",
        "CEILO_NOTIFIER_CONF_DIR": "/etc/ceilo-notifier",
        "CEILO_NOTIFIER_CONF": "/etc/ceilo-notifier/ceilo-notifier.conf",
        "CEILO_NOTIFIER_DATA_DIR": f"{box.data_dir}/ceilo-notifier",
        "CEILO_NOTIFIER_WORKERS": "1",
        "CEILO_NOTIFIER_QUORUM_QUEUES": "True",
        "CEILO_NOTIFIER_METRICS_PORT": "0",
        "CEILO_NOTIFIER_DISABLE_AODH_NOTIFIER": "False",
        "CEILO_NOTIFIER_RPC_TOPIC": "alarm_notifier",
        "CEILO_NOTIFIER_EVENT_DISPATCHERS": "database",
    }
    assert [c.args for c in box.calls("define_plugin")] == [["ceilo-notifier"]]
    assert ["ceilo-notifier"] in [c.args for c in box.calls("enable_service")]


def test_aodh_notifier_is_left_alone_by_default(tmp_path):
    box = Sandbox(tmp_path, ENABLED_SERVICES="rabbit,aodh-notifier,aodh-evaluator")
    proc = box.run([])
    assert box.calls("disable_service") == []
    assert "aodh-notifier" in proc.stdout.split("ENABLED_SERVICES=")[1].split()[0]


def test_aodh_notifier_can_be_disabled(tmp_path):
    box = Sandbox(
        tmp_path,
        ENABLED_SERVICES="rabbit,aodh-notifier,aodh-evaluator",
        CEILO_NOTIFIER_DISABLE_AODH_NOTIFIER="true",
    )
    proc = box.run([])
    assert [c.args for c in box.calls("disable_service")] == [["aodh-notifier"]]
    enabled = proc.stdout.split("ENABLED_SERVICES=")[1].split()[0].split(",")
    assert "aodh-notifier" not in enabled
    assert {"aodh-evaluator", "ceilo-notifier"} <= set(enabled)


# --- stack ----------------------------------------------------------------------------------


def test_stack_runs_under_errexit_and_keeps_it(sandbox):
    proc = sandbox.stack()
    assert "ERREXIT=on" in proc.stdout
    assert [c.args for c in sandbox.calls("PHASE")] == [list(p) for p in STACK_PHASES]


def test_install_phase(sandbox):
    sandbox.run([("stack", "install")])
    assert [c.args for c in sandbox.calls("setup_develop")] == [[str(sandbox.checkout)]]
    sudo = [c.args for c in sandbox.calls("sudo")]
    assert sudo == [
        [
            "install",
            "-d",
            "-o",
            getpass.getuser(),
            "-m",
            "755",
            str(sandbox.conf_dir),
            str(sandbox.data),
        ]
    ]
    assert sandbox.conf_dir.is_dir() and sandbox.data.is_dir()
    # Nothing is configured or started before its phase.
    assert {"iniset", "run_process", "ceilo-notifier-manage"}.isdisjoint(sandbox.names())


def test_transport_url_comes_from_devstack(tmp_path):
    password = secrets.token_hex(8)
    box = Sandbox(tmp_path, RABBIT_PASSWORD=password, RABBIT_HOST="198.51.100.7")
    box.stack()
    conf = box.config()
    assert conf["DEFAULT"]["transport_url"] == f"rabbit://stackrabbit:{password}@198.51.100.7:5672/"
    assert [c.args for c in box.calls("iniset_rpc_backend")] == [
        ["ceilo-notifier", str(box.conf), "DEFAULT"]
    ]
    assert box.calls("get_transport_url")


def test_no_broker_means_no_transport_url(tmp_path):
    """Nothing is hard-coded: without a broker in devstack, the plugin writes no URL."""
    box = Sandbox(tmp_path, ENABLED_SERVICES="", RABBIT_HOST="", RABBIT_PASSWORD="")
    box.stack()
    assert "transport_url" not in box.config()["DEFAULT"]


def test_default_config(sandbox):
    sandbox.stack()
    conf = sandbox.config()
    assert conf["DEFAULT"]["debug"] == "True"
    assert conf["DEFAULT"]["workers"] == "1"
    assert conf["DEFAULT"]["state_path"] == str(sandbox.data)
    assert "host" not in conf["DEFAULT"]
    assert "control_exchange" not in conf["DEFAULT"]
    assert conf["alarm"]["notifier_rpc_topic"] == "alarm_notifier"
    assert conf["oslo_messaging_rabbit"]["rabbit_quorum_queue"] == "True"
    assert conf["oslo_messaging_rabbit"]["rabbit_transient_quorum_queue"] == "True"
    assert conf["metrics"]["port"] == "0"
    assert conf["metrics"]["bind_host"] == "192.0.2.10"
    assert sandbox.multi_config()["DEFAULT"]["event_dispatchers"] == ["database"]
    assert not conf.has_section("oslo_messaging_notifications")
    assert not conf.has_section("service_credentials")
    assert [c.args for c in sandbox.calls("setup_logging")] == [[str(sandbox.conf)]]


@pytest.mark.filterwarnings("ignore:eventletutils module is deprecated:DeprecationWarning")
def test_service_reads_the_config(tmp_path):
    """The options the plugin writes have the names and types the service registers."""
    from oslo_log import log

    from ceilo_notifier import opts

    box = Sandbox(
        tmp_path, CEILO_NOTIFIER_WORKERS="2", CEILO_NOTIFIER_EVENT_DISPATCHERS="database message"
    )
    box.stack()
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    opts.register_messaging_opts(conf)
    log.register_options(conf)
    conf(["--config-file", str(box.conf)], project="ceilo-notifier")
    assert conf.workers == 2
    assert conf.debug is True
    assert conf.alarm.notifier_rpc_topic == "alarm_notifier"
    assert conf.transport_url == "rabbit://stackrabbit:rabbitsecret@192.0.2.10:5672/"
    assert conf.oslo_messaging_rabbit.rabbit_quorum_queue is True
    assert conf.oslo_messaging_rabbit.rabbit_transient_quorum_queue is True
    assert conf.event_dispatchers == ["database", "message"]
    assert conf.database.connection == f"sqlite:///{box.data}/ceilo-notifier.sqlite"
    assert conf.log_file is None and conf.log_dir is None


def test_overridden_config(tmp_path):
    box = Sandbox(
        tmp_path,
        CEILO_NOTIFIER_WORKERS="4",
        ENABLE_DEBUG_LOG_LEVEL="False",
        CEILO_NOTIFIER_HOST="notifier-a",
        CEILO_NOTIFIER_CONTROL_EXCHANGE="ceilometer",
        CEILO_NOTIFIER_RPC_TOPIC="alarm_notifier_b",
        CEILO_NOTIFIER_QUORUM_QUEUES="false",
    )
    box.stack()
    conf = box.config()
    assert conf["DEFAULT"]["workers"] == "4"
    assert conf["DEFAULT"]["debug"] == "False"
    assert conf["DEFAULT"]["host"] == "notifier-a"
    assert conf["DEFAULT"]["control_exchange"] == "ceilometer"
    assert conf["alarm"]["notifier_rpc_topic"] == "alarm_notifier_b"
    assert conf["oslo_messaging_rabbit"]["rabbit_quorum_queue"] == "False"
    assert conf["oslo_messaging_rabbit"]["rabbit_transient_quorum_queue"] == "False"


def test_sqlite_journal_without_database_backend(tmp_path):
    box = Sandbox(tmp_path)  # rabbit only: no mysql or postgresql service
    box.stack()
    connection = box.config()["database"]["connection"]
    assert connection == f"sqlite:///{box.data}/ceilo-notifier.sqlite"
    assert connection.startswith("sqlite:////"), "the unit runs in /: the path must be absolute"
    assert box.calls("recreate_database") == []
    assert box.calls("database_connection_url") == []
    assert box.index("ceilo-notifier-manage") < box.index("run_process")


@pytest.mark.parametrize("backend", ["mysql", "postgresql"])
def test_database_backend_journal(tmp_path, backend):
    box = Sandbox(tmp_path, ENABLED_SERVICES=f"rabbit,{backend}", DATABASE_TYPE=backend)
    box.stack()
    connection = box.config()["database"]["connection"]
    assert connection == "mysql+pymysql://root:dbsecret@127.0.0.1/ceilo_notifier?charset=utf8"
    assert [c.args for c in box.calls("database_connection_url")] == [["ceilo_notifier"]]
    assert [c.args for c in box.calls("recreate_database")] == [["ceilo_notifier"]]
    assert (
        box.index("PHASE", "stack", "extra")
        < box.index("recreate_database")
        < box.index("ceilo-notifier-manage")
        < box.index("run_process")
    )


def test_schema_command_runs_on_the_written_config(sandbox):
    sandbox.stack()
    (call,) = sandbox.calls("ceilo-notifier-manage")
    assert call.args == ["--config-file", str(sandbox.conf), "upgrade"]


def test_run_process_gets_an_absolute_command(sandbox):
    sandbox.stack()
    (call,) = sandbox.calls("run_process")
    assert call.args == [
        "ceilo-notifier",
        f"{sandbox.bin_dir}/ceilo-notifier --config-file {sandbox.conf}",
    ]
    command = call.args[1]
    assert command.startswith("/") and "sudo" not in command
    assert sandbox.index("PHASE", "stack", "extra") < sandbox.index("run_process")


def test_config_is_rewritten_from_scratch(sandbox):
    sandbox.run([("stack", "install")])
    sandbox.conf.write_text("[DEFAULT]\nstale_option = 1\n[database]\nconnection = sqlite://\n")
    sandbox.run([("stack", "post-config")])
    first = sandbox.conf.read_text()
    assert "stale_option" not in first
    assert sandbox.config()["database"]["connection"].startswith("sqlite:////")
    sandbox.run([("stack", "post-config")])
    assert sandbox.conf.read_text() == first


def test_sample_config_is_the_starting_point(sandbox):
    sample = sandbox.checkout / "etc" / "ceilo-notifier" / "ceilo-notifier.conf.sample"
    sample.parent.mkdir(parents=True)
    sample.write_text(
        "[DEFAULT]\n\n# Number of worker processes (integer value)\n#workers = 1\n\n"
        "[oslo_messaging_rabbit]\nrabbit_quorum_queue = true\n"
    )
    sandbox.env["CEILO_NOTIFIER_QUORUM_QUEUES"] = "False"
    sandbox.stack()
    text = sandbox.conf.read_text()
    assert "# Number of worker processes (integer value)" in text
    conf = sandbox.config()
    assert conf["DEFAULT"]["workers"] == "1"
    assert conf["oslo_messaging_rabbit"]["rabbit_quorum_queue"] == "False"


def test_versioned_notifications_with_the_message_dispatcher(tmp_path):
    box = Sandbox(tmp_path, CEILO_NOTIFIER_EVENT_DISPATCHERS="database,message")
    box.stack()
    conf = box.multi_config()
    assert conf["DEFAULT"]["event_dispatchers"] == ["database", "message"]
    notifications = conf["oslo_messaging_notifications"]
    assert notifications["driver"] == ["messagingv2"]
    assert notifications["transport_url"] == ["rabbit://stackrabbit:rabbitsecret@192.0.2.10:5672/"]
    assert box.calls("get_notification_url")


def test_keystone_service_credentials(tmp_path):
    box = Sandbox(tmp_path, ENABLED_SERVICES="rabbit,keystone")
    box.stack()
    assert [c.args for c in box.calls("create_service_user")] == [["ceilo-notifier"]]
    creds = box.config()["service_credentials"]
    assert dict(creds) == {
        "auth_type": "password",
        "interface": "public",
        "auth_url": "http://192.0.2.10/identity",
        "username": "ceilo-notifier",
        "password": "servicesecret",
        "user_domain_name": "Default",
        "project_name": "service",
        "project_domain_name": "Default",
        "region_name": "RegionOne",
    }
    assert box.index("create_service_user") < box.index("PHASE", "stack", "extra")


def test_metrics_off_means_no_health_wait(sandbox):
    sandbox.stack()
    assert sandbox.calls("wait_for_service") == []


@pytest.mark.parametrize(
    "service_host, bind_host, url_host",
    [
        ("192.0.2.10", "192.0.2.10", "192.0.2.10"),
        ("[2001:db8::10]", "2001:db8::10", "[2001:db8::10]"),
    ],
    ids=["ipv4", "ipv6"],
)
def test_metrics_port_waits_for_healthz(tmp_path, service_host, bind_host, url_host):
    box = Sandbox(tmp_path, SERVICE_HOST=service_host, CEILO_NOTIFIER_METRICS_PORT="9580")
    box.stack()
    conf = box.config()
    assert conf["metrics"]["port"] == "9580"
    assert conf["metrics"]["bind_host"] == bind_host
    (call,) = box.calls("wait_for_service")
    assert call.args == ["60", f"http://{url_host}:9580/healthz"]
    assert box.index("run_process") < box.index("wait_for_service")


def test_failed_health_check_stops_stack(tmp_path):
    """The sandbox does catch an abort: a service that never answers fails the stack."""
    box = Sandbox(tmp_path, CEILO_NOTIFIER_METRICS_PORT="9580", STUB_WAIT_RC="1")
    proc = box.stack(check=False)
    assert proc.returncode != 0
    assert DONE not in proc.stdout
    assert box.calls("die")


def test_plugin_defines_only_prefixed_names(sandbox):
    sandbox.stack()
    for kind in ("functions", "variables"):
        unprefixed = {
            name for name in sandbox.new_names(kind) if "ceilo_notifier" not in name.lower()
        }
        assert unprefixed == set(), kind


# --- unstack and clean ----------------------------------------------------------------------


def test_unstack_twice_stops_the_service(sandbox):
    sandbox.stack()
    for _ in range(2):
        proc = sandbox.unstack()
        assert "ERREXIT=on" in proc.stdout
    assert [c.args for c in sandbox.calls("stop_process")] == [["ceilo-notifier"]] * 2
    assert sandbox.conf.exists(), "unstack keeps the configuration"


def test_clean_twice_removes_config_and_data(sandbox):
    sandbox.stack()
    sandbox.data.joinpath("ceilo-notifier.sqlite").write_text("")
    for _ in range(2):
        sandbox.clean()
        assert not sandbox.conf_dir.exists()
        assert not sandbox.data.exists()
    assert sandbox.data_dir.is_dir() and sandbox.checkout.is_dir(), "only its own dirs go"
    removals = [c.args for c in sandbox.calls("sudo") if c.args[:2] == ["rm", "-rf"]]
    assert removals == [["rm", "-rf", str(sandbox.conf_dir), str(sandbox.data)]] * 2


def test_clean_without_stack(sandbox):
    sandbox.clean()
    assert not sandbox.conf_dir.exists()


# --- phases that are not the plugin's -------------------------------------------------------


QUERIES = {"is_service_enabled", "get_python_exec_prefix", "PHASE"}


@pytest.mark.parametrize(
    "mode, phase",
    [
        ("stack", "pre-install"),
        ("stack", "test-config"),
        ("stack", "bogus"),
        ("stack", ""),
        ("bogus", "install"),
        ("", ""),
    ],
)
def test_unknown_mode_or_phase_does_nothing(sandbox, mode, phase):
    proc = sandbox.run([(mode, phase)])
    assert "ERREXIT=on" in proc.stdout
    settings_calls = {"define_plugin", "enable_service"}
    assert set(sandbox.names()) <= QUERIES | settings_calls
    assert not sandbox.conf_dir.exists() and not sandbox.data.exists()


def test_disabled_service_does_nothing(sandbox):
    proc = sandbox.run(
        STACK_PHASES + [("unstack", ""), ("clean", "")], localrc="disable_service ceilo-notifier"
    )
    assert "ERREXIT=on" in proc.stdout
    assert set(sandbox.names()) <= QUERIES | {"define_plugin", "enable_service", "disable_service"}
    assert not sandbox.conf_dir.exists() and not sandbox.data.exists()
