"""``ceilo-notifier-status upgrade check``, run as a process on configuration files.

Exit 0 on a clean production configuration, 1 when a check warns (each
warning named in the output), 2 when the journal cannot be reached or has
migrations pending. The check reads: it never creates nor migrates a journal.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import pytest
import sqlalchemy as sa

from ceilo_notifier import journal
from ceilo_notifier.journal import connection
from tests.helpers import ROOT, write_config

RABBIT = "rabbit://guest:guest@127.0.0.1:5672/"
QUORUM = {"rabbit_quorum_queue": True, "rabbit_transient_quorum_queue": True}


def status(config, *extra):
    """Run the check as an operator does; (exit status, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "ceilo_notifier.cmd.status", "upgrade", "check"]
        + ["--config-file", str(config), *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    return proc.returncode, proc.stdout, proc.stderr


def production(path, url, **sections):
    """A production configuration: new spellings, quorum queues, the default deny list."""
    base = {
        "DEFAULT": {"transport_url": RABBIT, "host": "status-test"},
        "database": {"connection": url, "timeout": 3},
        "oslo_messaging_rabbit": dict(QUORUM),
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return write_config(path, base)


def flat(table):
    """The table's text in one line, as the words run across its wrapped lines."""
    return re.sub(r"[|\s]+", " ", table)


def checks(stdout):
    """{check name: (result, details)} of --json output."""
    out = json.loads(stdout)
    return {c["check"]: (c["result"], c["details"] or "") for c in out["checks"]}


def migrated_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path}/journal.sqlite"
    journal.upgrade(url)
    return url


def test_clean_configuration_succeeds(tmp_path):
    config = production(tmp_path / "ceilo-notifier.conf", migrated_sqlite(tmp_path))
    code, out, err = status(config)
    assert code == 0, out + err
    assert "Result: Success" in out and "Warning" not in out and "Failure" not in out
    assert "at revision" in flat(out)


def test_warnings_name_each_problem(tmp_path):
    config = write_config(
        tmp_path / "aodh.conf",
        {
            "DEFAULT": {
                "transport_url": RABBIT,
                "rest_notifier_max_retries": 5,
                "rest_notifier_ssl_verify": False,
                "notifier_topic": "alarming",
            },
            "notifier": {"workers": 2, "batch_size": 10},
            "evaluator": {"workers": 3},  # aodh's own service: not a spelling of ours
            # keystoneauth's deprecated name, not aodh's
            "service_credentials": {"auth_type": "password", "tenant_name": "services"},
            "alarm": {
                "batch_size": 20,
                # loopback and link-local left out of the default
                "rest_notifier_denied_networks": "0.0.0.0/8,::/128,100.100.100.200/32",
            },
            "database": {"connection": migrated_sqlite(tmp_path)},
        },
    )
    code, out, err = status(config, "--json")
    assert code == 1, out + err
    found = checks(out)
    assert found["Journal"][0] == 0
    result, details = found["aodh option spellings"]
    assert result == 1
    for old, new in [
        ("[DEFAULT] rest_notifier_max_retries", "[alarm] rest_notifier_max_retries"),
        ("[DEFAULT] rest_notifier_ssl_verify", "[alarm] rest_notifier_ssl_verify"),
        ("[DEFAULT] notifier_topic", "[alarm] notifier_topic"),
        ("[notifier] workers", "[DEFAULT] workers"),
        ("[notifier] batch_size", "[alarm] batch_size"),
    ]:
        assert f"{old} is aodh's spelling: use {new}" in details
    assert "[notifier] batch_size is aodh's spelling: use [alarm] batch_size" in details
    assert "ignored, [alarm] batch_size is set too" in details
    assert "evaluator" not in details and "tenant_name" not in details
    result, details = found["RPC queues across a broker restart"]
    assert result == 1
    assert "rabbit_quorum_queue = true" in details
    assert "rabbit_transient_quorum_queue = true" in details
    result, details = found["Target safety"]
    assert result == 1
    for address in ("127.0.0.1", "::1", "169.254.169.254", "fd00:ec2::254"):
        assert address in details

    # The table an operator reads names them too.
    code, table, _ = status(config)
    assert code == 1
    for name in ("aodh option spellings", "RPC queues", "Target safety"):
        assert f"Check: {name}" in table
    assert table.count("Result: Warning") == 3


def test_each_warning_alone(tmp_path):
    url = migrated_sqlite(tmp_path)
    # Durable classic queues keep casts too; only the fanout queue is transient.
    durable = production(
        tmp_path / "durable.conf",
        url,
        oslo_messaging_rabbit={
            "rabbit_quorum_queue": False,
            "rabbit_transient_quorum_queue": False,
            "amqp_durable_queues": True,
        },
    )
    code, out, _ = status(durable, "--json")
    assert code == 1
    details = checks(out)["RPC queues across a broker restart"][1]
    assert "fanout" in details and "rabbit_quorum_queue =" not in details

    # An allow list wins over the deny list: metadata inside it is reachable.
    allowed = production(
        tmp_path / "allowed.conf", url, alarm={"rest_notifier_allowed_networks": "169.254.0.0/16"}
    )
    code, out, _ = status(allowed, "--json")
    assert code == 1
    found = checks(out)
    assert found["Target safety"][0] == 1
    assert "169.254.169.254" in found["Target safety"][1]
    assert "127.0.0.1" not in found["Target safety"][1]
    assert [n for n, (r, _) in found.items() if r] == ["Target safety"]

    # A private management network denied on top of the defaults is fine.
    stricter = production(
        tmp_path / "stricter.conf",
        url,
        alarm={
            "rest_notifier_denied_networks": "127.0.0.0/8,::1/128,169.254.0.0/16,"
            "fd00:ec2::254/128,10.20.0.0/16"
        },
    )
    assert status(stricter)[0] == 0


def test_unmigrated_journal_fails_and_is_left_alone(tmp_path):
    url = f"sqlite:///{tmp_path}/journal.sqlite"
    journal.upgrade(url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {connection.VERSION_TABLE} SET version_num = '0004'"))
    config = production(tmp_path / "ceilo-notifier.conf", url)
    code, out, err = status(config)
    assert code == 2, out + err
    assert "Result: Failure" in out
    assert "migrations pending" in flat(out) and "0004" in out
    with engine.connect() as conn:  # not migrated by the check
        version = conn.execute(sa.text(f"SELECT version_num FROM {connection.VERSION_TABLE}"))
        assert version.scalar() == "0004"
    engine.dispose()


def test_missing_journal_fails_and_is_not_created(tmp_path):
    path = tmp_path / "state" / "ceilo-notifier.sqlite"
    config = production(tmp_path / "ceilo-notifier.conf", f"sqlite:///{path}")
    code, out, err = status(config)
    assert code == 2, out + err
    assert "no schema yet" in flat(out) and "ceilo-notifier-manage" in out
    assert not path.parent.exists()


def test_unreachable_journal_fails(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql+psycopg2://ceilo:s3cret-pw@127.0.0.1:{port}/journal"
    config = production(tmp_path / "ceilo-notifier.conf", url)
    code, out, err = status(config)
    assert code == 2, out + err
    assert "cannot be reached" in flat(out)
    assert "s3cret-pw" not in out + err


@pytest.fixture
def pg_url(pg_schema_url):
    from tests.conftest import empty_journal

    empty_journal(pg_schema_url)
    yield pg_schema_url
    empty_journal(pg_schema_url)


def test_postgresql_journal(tmp_path, pg_url):
    config = production(tmp_path / "ceilo-notifier.conf", pg_url)
    code, out, err = status(config)
    assert code == 2, out + err
    assert "no schema yet" in flat(out)

    journal.upgrade(pg_url)
    code, out, err = status(config)
    assert code == 0, out + err
    assert "at revision" in flat(out)


def test_every_aodh_spelling_is_known():
    from ceilo_notifier.cmd import status as status_cmd
    from tests.test_aodh_config import AODH_SPELLINGS

    spellings = status_cmd.aodh_spellings()
    assert set(spellings) == {(group, name) for group, name, _ in AODH_SPELLINGS}
    for group, name, new_group in AODH_SPELLINGS:
        assert spellings[(group, name)] == (new_group, name)
