"""``ceilo-notifier``: run the service."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence

from oslo_log import log

from ceilo_notifier import cmd, masking

LOG = log.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    conf = cmd.prepare(sys.argv[1:] if argv is None else argv)
    from oslo_service import service as os_service

    metrics_dir = None
    if conf.metrics.port:
        # Before prometheus_client is first imported: workers count in files
        # the parent, which serves /metrics, adds up.
        metrics_dir = tempfile.mkdtemp(prefix="ceilo-notifier-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir

    from ceilo_notifier import journal, metrics
    from ceilo_notifier.service import NotifierService

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
        if metrics_dir:
            the_journal = journal.Journal(
                conf.database.connection, journal.owner_tag(conf.host, "metrics")
            )
    server = None
    if metrics_dir:
        server = metrics.MetricsServer(conf, the_journal)
        server.start()

    launcher = os_service.launch(
        conf,
        NotifierService(conf, executor=cmd.EXECUTOR),
        workers=conf.workers,
        restart_method="mutate",
    )
    try:
        code = launcher.wait()
    finally:
        if server is not None:
            server.stop(metrics_dir)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
