"""The operator's monitoring kit: alerting rules, their unit tests, the dashboard.

Every metric the rules and the dashboard name must be one a running service
exports; the rules' unit tests run with promtool (tools/bootstrap.sh puts it
in the virtualenv).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import free_port
from tests.test_operations import get

TOP = Path(__file__).resolve().parent.parent
RULES = TOP / "etc" / "prometheus" / "ceilo-notifier-alerts.yaml"
RULE_TESTS = TOP / "etc" / "prometheus" / "ceilo-notifier-alerts.test.yaml"
RUNBOOK = TOP / "doc" / "source" / "admin" / "monitoring.rst"


def promtool() -> str:
    found = shutil.which("promtool") or shutil.which(
        "promtool", path=os.path.dirname(sys.executable)
    )
    assert found, "promtool is missing (tools/bootstrap.sh installs it into the virtualenv)"
    return found


def run_promtool(*args: str) -> str:
    done = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=TOP)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def test_the_rules_pass_promtool_check_and_their_unit_tests():
    assert "SUCCESS: 12 rules found" in run_promtool("check", "rules", str(RULES))
    assert "SUCCESS" in run_promtool("test", "rules", str(RULE_TESTS))


def test_every_alert_is_unit_tested_firing_and_not_firing():
    tested: dict[str, set[bool]] = {}
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            tested.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    for rule in rules():
        assert tested.get(rule["alert"]) == {True, False}, rule["alert"]


def test_every_alert_has_severity_duration_and_a_runbook_entry():
    runbook = RUNBOOK.read_text()
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert re.fullmatch(r"\d+m", rule.get("for", "")), rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "admin/monitoring.html", rule["alert"]
        assert anchor == "alert-" + rule["alert"].lower()
        # The label Sphinx turns into that anchor, before the alert's section.
        assert re.search(rf"^\.\. _{anchor}:\n\n{rule['alert']}\n~+$", runbook, re.M), anchor


def test_up_gauges_say_what_healthz_says(make_conf):
    """Prometheus cannot read /healthz's JSON: ceilo_notifier_up{component} carries it."""
    from ceilo_notifier import journal, metrics

    dead = free_port()
    conf = make_conf(transport_url=f"rabbit://guest:guest@127.0.0.1:{dead}/")
    conf.set_override("port", free_port(), group="metrics")
    broken = journal.Journal(f"postgresql+psycopg2://nobody@127.0.0.1:{dead}/x", "h/L/1")
    server = metrics.MetricsServer(conf, broken)
    server.start()
    try:
        status, text = get(f"http://127.0.0.1:{conf.metrics.port}/metrics")
        health, _report = get(f"http://127.0.0.1:{conf.metrics.port}/healthz")
    finally:
        server.stop()
    assert status == 200 and health == 503
    assert 'ceilo_notifier_up{component="broker"} 0.0' in text
    assert 'ceilo_notifier_up{component="journal"} 0.0' in text


def test_live_gauges_of_dead_workers_are_forgotten(tmp_path):
    """A killed worker is replaced: its in-flight count and heartbeat must not stay."""
    from ceilo_notifier import metrics

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for pid in (os.getpid(), gone.pid):
        (tmp_path / f"gauge_livemin_{pid}.db").write_bytes(b"")
        (tmp_path / f"gauge_livesum_{pid}.db").write_bytes(b"")
    (tmp_path / f"counter_{gone.pid}.db").write_bytes(b"")
    metrics.forget_dead_processes(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            f"counter_{gone.pid}.db",  # counters of a dead worker still count
            f"gauge_livemin_{os.getpid()}.db",
            f"gauge_livesum_{os.getpid()}.db",
        ]
    )
