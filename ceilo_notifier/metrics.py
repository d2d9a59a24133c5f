"""Prometheus metrics and the health check, on ``[metrics] bind_host``:``port``.

Workers count in prometheus-client's multiprocess mode (files in the
directory named by PROMETHEUS_MULTIPROC_DIR, which ``ceilo-notifier`` sets
before this module is first imported); the parent process, which outlives
its workers, serves ``/metrics`` for all of them and ``/healthz``.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
import time
from typing import Any

import prometheus_client
from oslo_config import cfg
from oslo_log import log
from prometheus_client import multiprocess
from prometheus_client.core import GaugeMetricFamily

from ceilo_notifier import actions

LOG = log.getLogger(__name__)

DELIVERIES = prometheus_client.Counter(
    "ceilo_notifier_deliveries", "Deliveries by final outcome.", ["scheme", "outcome"]
)
ATTEMPT_SECONDS = prometheus_client.Histogram(
    "ceilo_notifier_attempt_duration_seconds",
    "Duration of each delivery attempt.",
    ["scheme"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RETRIES = prometheus_client.Counter(
    "ceilo_notifier_retries", "Attempts that failed and were scheduled again.", ["scheme"]
)
IN_FLIGHT = prometheus_client.Gauge(
    "ceilo_notifier_deliveries_in_flight", "Attempts running now.", multiprocess_mode="livesum"
)
# Counts by state, never by endpoint: tenants choose endpoints, labels must stay bounded.
ENDPOINTS = prometheus_client.Gauge(
    "ceilo_notifier_endpoints",
    "Endpoints held by endpoint health, by state (open, half_open, paused).",
    ["state"],
    multiprocess_mode="livemax",
)
for _state in ("open", "half_open", "paused"):
    ENDPOINTS.labels(_state).set(0)
HEARTBEAT_INTERVAL = 5.0
_loop_heartbeat: prometheus_client.Gauge | None = None
_loop_heartbeat_lock = threading.Lock()


def loop_heartbeat() -> prometheus_client.Gauge:
    """The delivery loop's heartbeat, set by each process's loop every HEARTBEAT_INTERVAL.

    Deliveries waiting for a retry or for an open endpoint make no attempts
    for a while, so the absence of attempts cannot tell waiting from wedged:
    this can. The stalest live process is exported. Made on first use, by a
    process that runs deliveries: made at import, the parent that serves
    /metrics for its workers would count as a process whose loop never turned.
    """
    global _loop_heartbeat
    with _loop_heartbeat_lock:
        if _loop_heartbeat is None:
            _loop_heartbeat = prometheus_client.Gauge(
                "ceilo_notifier_delivery_loop_heartbeat_timestamp_seconds",
                "When the delivery loop last turned (Unix time; the stalest process).",
                multiprocess_mode="livemin",
            )
        return _loop_heartbeat


UNKNOWN_SCHEME = "unknown"


def scheme_label(scheme: str | None) -> str:
    """The ``scheme`` label of an event: an installed scheme, ``unknown`` or ``-``.

    Callers write the schemes of their actions: every one of them as a label
    value would make a series of its own, without end.
    """
    if not scheme:
        return "-"
    scheme = scheme.lower()
    return scheme if scheme in actions.installed() else UNKNOWN_SCHEME


def record(event: Any) -> None:
    """Event sink: count what happened to a delivery."""
    scheme = scheme_label(event.scheme)
    if event.duration is not None and event.attempt:
        ATTEMPT_SECONDS.labels(scheme).observe(event.duration)
    if event.outcome == "retrying":
        RETRIES.labels(scheme).inc()
    elif event.final:
        DELIVERIES.labels(scheme, event.outcome).inc()


class JournalCollector:
    """Backlog figures, read from the journal at scrape time."""

    def __init__(self, the_journal) -> None:
        self.journal = the_journal

    def collect(self):
        try:
            count, oldest = self.journal.backlog()
        except Exception as exc:
            LOG.warning("Journal backlog unavailable for metrics: %s", exc)
            return
        yield GaugeMetricFamily(
            "ceilo_notifier_journal_backlog",
            "Deliveries pending or waiting for a retry.",
            value=count,
        )
        age = 0.0 if oldest is None else max(0.0, time.time() - oldest.timestamp())
        yield GaugeMetricFamily(
            "ceilo_notifier_journal_oldest_pending_age_seconds",
            "Age of the oldest unfinished delivery.",
            value=age,
        )


class HealthCollector:
    """``ceilo_notifier_up{component}``: what /healthz reports, as gauges for Prometheus."""

    def __init__(self, probe) -> None:
        self.probe = probe

    def collect(self):
        family = GaugeMetricFamily(
            "ceilo_notifier_up",
            "1 when the component (broker, journal) can be reached, as /healthz reports.",
            labels=["component"],
        )
        for component, (ok, _detail) in self.probe().items():
            family.add_metric([component], 1.0 if ok else 0.0)
        yield family


def forget_dead_processes(directory: str) -> None:
    """Drop the live gauges of workers that are gone (a killed worker is replaced).

    Their files would otherwise hold a replaced worker's in-flight count and
    its last heartbeat for as long as the parent runs.
    """
    pids = set()
    for name in os.listdir(directory):
        if name.startswith("gauge_live") and name.endswith(".db"):
            pid = name[: -len(".db")].rpartition("_")[2]
            if pid.isdigit():
                pids.add(int(pid))
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)
        except OSError:
            pass  # alive, another user's


class BrokerProbe:
    """Can the broker of transport_url be reached? Cached briefly: scrapes are frequent."""

    def __init__(self, conf: cfg.ConfigOpts, ttl: float = 5.0) -> None:
        self.conf = conf
        self.ttl = ttl
        self._at = 0.0
        self._result: tuple[bool, str] = (False, "not checked")

    def check(self) -> tuple[bool, str]:
        if time.monotonic() - self._at < self.ttl:
            return self._result
        self._result = self._probe()
        self._at = time.monotonic()
        return self._result

    def _probe(self) -> tuple[bool, str]:
        import kombu
        import oslo_messaging

        try:
            url = oslo_messaging.TransportURL.parse(self.conf, self.conf.transport_url)
        except Exception as exc:
            return False, f"bad transport_url: {type(exc).__name__}"
        if not url.transport or not url.transport.startswith(("rabbit", "amqp")):
            return True, f"{url.transport} transport: not probed"
        errors = []
        for host in url.hosts or []:
            amqp = kombu.Connection(
                hostname=host.hostname,
                port=host.port or 5672,
                userid=host.username,
                password=host.password,
                virtual_host=url.virtual_host or "/",
                connect_timeout=2,
                ssl=self.conf.oslo_messaging_rabbit.ssl,
            )
            try:
                amqp.connect()
                return True, f"{host.hostname}:{host.port or 5672} reachable"
            except Exception as exc:
                errors.append(f"{host.hostname}:{host.port or 5672}: {type(exc).__name__}")
            finally:
                amqp.release()
        return False, "; ".join(errors) or "no broker host"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.split("?")[0] == "/metrics":
            try:
                if self.server.directory:
                    forget_dead_processes(self.server.directory)
                body = prometheus_client.generate_latest(self.server.registry)
            except Exception as exc:
                # A worker's sample file can be caught mid-write: this scrape
                # fails with its cause and the next one reads it whole.
                LOG.warning("Metrics could not be collected: %s", exc)
                self._reply(500, f"metrics unavailable: {exc}\n".encode(), "text/plain")
                return
            self._reply(200, body, prometheus_client.CONTENT_TYPE_LATEST)
        elif self.path.split("?")[0] == "/healthz":
            status, report = self.server.health()
            self._reply(status, json.dumps(report).encode(), "application/json")
        else:
            self._reply(404, b"not found\n", "text/plain")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class MetricsServer:
    def __init__(self, conf: cfg.ConfigOpts, the_journal=None) -> None:
        self.conf = conf
        self.journal = the_journal
        self.broker = BrokerProbe(conf)
        # A registry of this server's own: the collectors below read this
        # server's journal and probes, and a process may make several servers.
        registry = prometheus_client.CollectorRegistry()
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            multiprocess.MultiProcessCollector(registry)
        else:
            registry.register(prometheus_client.REGISTRY)
        if the_journal is not None:
            registry.register(JournalCollector(the_journal))
        registry.register(HealthCollector(self.probe))
        self.httpd = _Server((conf.metrics.bind_host, conf.metrics.port), _Handler)
        self.httpd.registry = registry
        self.httpd.directory = directory
        self.httpd.health = self.health
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def probe(self) -> dict[str, tuple[bool, str]]:
        """Each component /healthz and ``ceilo_notifier_up`` report: (reachable, detail)."""
        components = {"broker": self.broker.check()}
        if self.journal is not None:
            try:
                self.journal.ping()
                components["journal"] = (True, "reachable")
            except Exception as exc:
                detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
                components["journal"] = (False, detail)
        return components

    def health(self) -> tuple[int, dict[str, Any]]:
        components = self.probe()
        report: dict[str, Any] = {
            name: {"ok": ok, "detail": detail} for name, (ok, detail) in components.items()
        }
        healthy = all(ok for ok, _detail in components.values())
        report["status"] = "ok" if healthy else "unhealthy"
        return (200 if healthy else 503), report

    def start(self) -> None:
        self.thread.start()
        LOG.info(
            "Serving /metrics and /healthz on %s:%s",
            self.conf.metrics.bind_host,
            self.httpd.server_address[1],
        )

    def stop(self, directory: str | None = None) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if directory:
            shutil.rmtree(directory, ignore_errors=True)
