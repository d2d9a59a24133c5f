"""``ceilo-notifier``: run the service.

With one worker (the default) the service runs in this very process: a
parent whose only jobs would be signals and ``/metrics`` is a second copy of
every library in memory for nothing. With several workers, oslo.service's
launcher forks them and the parent serves ``/metrics`` for all.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence

from oslo_log import log

from ceilo_notifier import cmd, masking

LOG = log.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    conf = cmd.prepare(sys.argv[1:] if argv is None else argv)
    single = conf.workers == 1 and cmd.BACKEND == "threading"
    metrics_dir = None
    if conf.metrics.port and not single:
        # Before prometheus_client is first imported: workers count in files
        # the parent, which serves /metrics, adds up.
        metrics_dir = tempfile.mkdtemp(prefix="ceilo-notifier-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir

    from ceilo_notifier import journal, limits, metrics
    from ceilo_notifier.service import NotifierService

    # Before anything opens a file; workers inherit it.
    limits.raise_open_files()

    the_journal = None
    if "database" in conf.event_dispatchers:
        # Once, in the parent, before any worker opens the journal; a journal
        # that cannot be reached stops the start here, with one clear line.
        try:
            journal.upgrade(conf.database.connection)
        except Exception as exc:
            LOG.critical(
                "The journal at %s cannot be opened (%s); not starting. Fix [database] "
                "connection, or leave database out of event_dispatchers.",
                masking.mask_url(conf.database.connection),
                str(getattr(exc, "orig", None) or exc).splitlines()[0],
            )
            return 1
        if conf.metrics.port:
            the_journal = journal.Journal(
                conf.database.connection, journal.owner_tag(conf.host, "metrics")
            )
    server = None
    if conf.metrics.port:
        server = metrics.MetricsServer(conf, the_journal)
        server.start()
    try:
        if single:
            return run_in_process(conf, NotifierService(conf, executor=cmd.EXECUTOR))
        return run_workers(conf, NotifierService(conf, executor=cmd.EXECUTOR))
    finally:
        if server is not None:
            server.stop(metrics_dir)


def run_in_process(conf, service) -> int:
    """Run one service here until SIGTERM or SIGINT; SIGHUP reloads mutable options."""
    from oslo_service import _options

    conf.register_opts(_options.service_opts)
    stop = threading.Event()

    def on_stop(signum, _frame):
        LOG.info("Caught %s, stopping", signal.Signals(signum).name)
        stop.set()

    def on_hup(_signum, _frame):
        conf.mutate_config_files()
        service.reset()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    service.start()
    while not stop.wait(1.0):
        pass
    # Past graceful_shutdown_timeout the process ends whatever is still running.
    limit = conf.graceful_shutdown_timeout
    if limit:
        killer = threading.Timer(limit, os._exit, (1,))
        killer.daemon = True
        killer.start()
    service.stop(graceful=True)
    return 0


def run_workers(conf, service) -> int:
    from oslo_service import service as os_service

    launcher = os_service.launch(conf, service, workers=conf.workers, restart_method="mutate")
    return int(launcher.wait() or 0)


if __name__ == "__main__":
    sys.exit(main())
