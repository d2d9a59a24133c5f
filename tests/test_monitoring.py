"""The operator's monitoring kit: alerting rules, their unit tests, the dashboard.

Every metric the rules and the dashboard name must be one a running service
exports; the rules' unit tests run with promtool (tools/bootstrap.sh puts it
in the virtualenv).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import alarm, free_port, wait_until
from tests.test_operations import get, metric, served_with_broker_and_journal_down

TOP = Path(__file__).resolve().parent.parent
RULES = TOP / "etc" / "prometheus" / "ceilo-notifier-alerts.yaml"
RULE_TESTS = TOP / "etc" / "prometheus" / "ceilo-notifier-alerts.test.yaml"
DASHBOARD = TOP / "etc" / "grafana" / "ceilo-notifier.json"
RUNBOOK = TOP / "doc" / "source" / "admin" / "monitoring.rst"

# Metrics that Prometheus makes itself, not the service.
PROMETHEUS_OWN = {"up"}
# PromQL words that look like metric names.
KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}
# Grafana's variables in a query, and what stands for them when it is checked.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": "ceilo-notifier", "$instance": ".*"}


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


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's variables allowed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values, regexes
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana's variables
    # Label lists of aggregations and vector matching.
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expr):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in KEYWORDS:
            continue  # a function or an operator
        names.add(name)
    return names


def test_metric_names_are_read_from_promql():
    assert metric_names(
        'sum without (scheme, outcome) (rate(ceilo_notifier_deliveries_total{outcome="failed",'
        ' job=~"$job"}[10m])) / on (instance) group_left sum(x_total) > 0.2 and up == 0'
    ) == {"ceilo_notifier_deliveries_total", "x_total", "up"}
    assert metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(a_bucket[$__rate_interval])))"
        " unless time() - b_seconds offset 5m > 60"
    ) == {"a_bucket", "b_seconds"}


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            m = re.fullmatch(r"label_values\((.*), *\w+\)", variable["query"]["query"])
            assert m, variable
            queries.append(m.group(1))
    return queries


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


def test_the_dashboard_is_grafana_json_with_a_datasource_variable():
    board = json.loads(DASHBOARD.read_text())
    assert board["schemaVersion"] >= 36 and board["title"] == "ceilo-notifier"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    queries = " ".join(dashboard_queries())
    for name in (
        "ceilo_notifier_deliveries_total",
        "ceilo_notifier_attempt_duration_seconds_bucket",
        "ceilo_notifier_retries_total",
        "ceilo_notifier_deliveries_in_flight",
        "ceilo_notifier_journal_backlog",
        "ceilo_notifier_journal_oldest_pending_age_seconds",
        "ceilo_notifier_endpoints",
        "ceilo_notifier_up",
        "ceilo_notifier_delivery_loop_heartbeat_timestamp_seconds",
    ):
        assert name in queries, name


def test_the_dashboard_queries_are_valid_promql(tmp_path):
    """promtool has no expression check of its own: the queries go in as recording rules."""
    exprs = []
    for query in dashboard_queries():
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, query
        exprs.append(query)
    recorded = [{"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    assert f"SUCCESS: {len(exprs)} rules found" in run_promtool("check", "rules", str(path))


def test_up_gauges_say_what_healthz_says(make_conf):
    """Prometheus cannot read /healthz's JSON: ceilo_notifier_up{component} carries it."""
    _dead, [(status, text), (health, _report)] = served_with_broker_and_journal_down(
        make_conf, "/metrics", "/healthz"
    )
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


@pytest.fixture(params=[1, 2], ids=["one-process", "two-workers"])
def exported(request, start_notifier, topic, caster, webhook):
    """The sample names a running service exports, and its scrape: in one process,
    and with two workers whose parent adds up their sample files."""
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    start_notifier(
        topic,
        default={"workers": request.param},
        alarm={"rest_notifier_max_retries": 1, "rest_notifier_retry_backoff": 0.1},
        extra={"metrics": {"port": port}},
    )
    client = caster(topic)
    # One delivered, one retried then failed: every counter and histogram has a sample.
    client.cast(alarm([webhook.url("ok"), webhook.url("status/503")], alarm_id="monitoring"))

    def scraped():
        status, text = get(f"http://127.0.0.1:{port}/metrics")
        if status != 200:
            return None  # a sample file caught mid-write; the next scrape reads it
        failed = metric(text, "ceilo_notifier_deliveries_total", outcome="failed")
        done = metric(text, "ceilo_notifier_deliveries_total", outcome="delivered")
        beat = metric(text, "ceilo_notifier_delivery_loop_heartbeat_timestamp_seconds")
        return text if (done, failed) == (1, 1) and beat else None

    text = wait_until(scraped, 20)
    assert text, get(f"http://127.0.0.1:{port}/metrics")[1]
    names = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    return names, text


def test_every_metric_the_rules_and_dashboard_name_is_exported(exported):
    """Names are compared as Prometheus stores them: the sample names of the scrape,
    so a counter is ``…_total`` and a histogram ``…_bucket``, ``…_sum``, ``…_count``."""
    names, text = exported
    named = {}
    for rule in rules():
        for name in metric_names(rule["expr"]):
            named.setdefault(name, f"alert {rule['alert']}")
    for query in dashboard_queries():
        for name in metric_names(query):
            named.setdefault(name, f"dashboard query {query}")
    assert len(named) > 10, named
    missing = {
        name: where
        for name, where in named.items()
        if name not in names and name not in PROMETHEUS_OWN
    }
    assert not missing, (missing, sorted(names))
    assert metric(text, "ceilo_notifier_up", component="broker") == 1
    assert metric(text, "ceilo_notifier_up", component="journal") == 1
    # The stalest worker's loop turned within a few heartbeats.
    beat = metric(text, "ceilo_notifier_delivery_loop_heartbeat_timestamp_seconds")
    assert time.time() - 30 < beat <= time.time() + 1
