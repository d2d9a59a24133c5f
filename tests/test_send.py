"""``ceilo-notifier-send``: casting to the service, and --local delivery without a broker."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import LOOPBACK
from tests.helpers import ROOT, Webhook, write_config


def send(*args: str, config=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ceilo_notifier.cmd.send"]
    if config:
        cmd += ["--config-file", str(config)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_local_prints_each_outcome_and_exits_zero_when_all_delivered(webhook, tmp_path):
    url = webhook.url("ok")
    conf = write_config(
        tmp_path / "c.conf", {"alarm": {"rest_notifier_allowed_networks": LOOPBACK}}
    )
    result = send(
        "--local",
        "--action",
        url,
        "--action",
        "log://",
        "--alarm-id",
        "cli-1",
        "--alarm-name",
        "disk",
        "--severity",
        "low",
        "--reason",
        "full",
        "--reason-data",
        '{"pct": 97}',
        config=conf,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["ACTION", "OUTCOME", "STATUS", "ATTEMPTS", "TIME"]
    assert re.search(rf"{re.escape(url)}\s+delivered\s+200\s+1\s+\d+ ms", result.stdout)
    assert re.search(r"log://\s+delivered\s+-\s+1", result.stdout)
    body = webhook.requests_for(url)[0].json()
    assert body == {
        "alarm_id": "cli-1",
        "alarm_name": "disk",
        "severity": "low",
        "previous": "ok",
        "current": "alarm",
        "reason": "full",
        "reason_data": {"pct": 97},
    }


def test_local_exits_non_zero_when_an_action_fails(webhook, tmp_path):
    conf = write_config(
        tmp_path / "c.conf",
        {"alarm": {"rest_notifier_max_retries": 0, "rest_notifier_allowed_networks": LOOPBACK}},
    )
    good, gone = webhook.url("ok"), webhook.url("status/410")
    result = send(
        "--local",
        "--action",
        good,
        "--action",
        gone,
        "--action",
        "bogus://x",
        "--alarm-id",
        "cli-2",
        config=conf,
    )
    assert result.returncode == 1
    assert re.search(rf"{re.escape(gone)}\s+failed\s+410\s+1", result.stdout)
    assert re.search(r"bogus://x\s+dropped\s+-\s+0\s+-\s+unknown scheme 'bogus'", result.stdout)
    assert re.search(rf"{re.escape(good)}\s+delivered\s+200", result.stdout)
    assert "Alarm cli-2: action bogus://x dropped" in result.stderr


def test_bad_reason_data_is_a_clear_usage_error():
    result = send("--local", "--action", "log://", "--alarm-id", "x", "--reason-data", "{nope")
    assert result.returncode != 0
    assert "--reason-data is not JSON" in result.stderr


def test_cast_reaches_the_running_service(start_notifier, topic, webhook):
    notifier = start_notifier(topic)
    url = webhook.url("ok")
    result = send(
        "--action",
        url,
        "--alarm-id",
        "cli-cast",
        "--current",
        "ok",
        "--previous",
        "alarm",
        config=notifier.config_path,
    )
    assert result.returncode == 0, result.stderr
    assert "notify_alarm cast for alarm cli-cast" in result.stdout
    (request,) = webhook.wait_for(url)
    assert request.json()["current"] == "ok"


def test_local_refuses_loopback_however_it_is_spelt_and_delivers_it_where_allowed(tmp_path):
    """The command a user runs, with the default denied networks: no spelling of
    127.0.0.1 reaches a server there, none is retried; allowed, they are delivered."""
    server = Webhook()
    try:
        spellings = ["１２７.０.０.１", "127。0。0。1", "①②⑦.0.0.1", "127．0．0．1", "𝟏𝟐𝟕.0.0.1"]
        spellings += ["2130706433", "0177.0.0.1", "0x7f.1", "127.1", "[::ffff:127.0.0.1]"]
        urls = [server.url("ok").replace("127.0.0.1", h) for h in ["127.0.0.1", *spellings]]
        retries = {"rest_notifier_max_retries": 2, "rest_notifier_retry_backoff": 0.05}
        conf = write_config(tmp_path / "denied.conf", {"alarm": retries})
        result = send("--local", "--wait", "20", *action_args(urls), "--alarm-id", "x", config=conf)
        assert result.returncode == 1
        for url in urls:
            assert re.search(
                rf"{re.escape(url)}\s+failed\s+-\s+1\s.*target refused: .*in denied network",
                result.stdout,
            ), result.stdout
        assert server.server.connections == 0

        allowed = {"alarm": {**retries, "rest_notifier_allowed_networks": LOOPBACK}}
        conf = write_config(tmp_path / "allowed.conf", allowed)
        result = send(
            "--local", "--wait", "20", *action_args(urls[:3]), "--alarm-id", "y", config=conf
        )
        assert result.returncode == 0, result.stdout + result.stderr
        for url in urls[:3]:
            assert re.search(rf"{re.escape(url)}\s+delivered\s+200\s+1", result.stdout)
            assert len(server.requests_for(url)) == 1
    finally:
        server.close()


def action_args(urls: list[str]) -> list[str]:
    return [arg for url in urls for arg in ("--action", url)]
