"""The operator's monitoring kit: alerting rules, their unit tests, the dashboard.

Every metric the rules and the dashboard name must be one a running service
exports; the rules' unit tests run with promtool (tools/bootstrap.sh puts it
in the virtualenv).
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import free_port
from tests.test_operations import get


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
