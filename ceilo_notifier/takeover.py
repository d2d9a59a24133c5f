"""Heartbeats in the shared journal, and taking over a silent host's deliveries.

Deliveries belong to the host that accepted them, and a host resumes its own
at its next start. A host that never starts again (a replaced VM, a renamed
pod) would leave them open for ever: every live instance heartbeats in the
journal, and one that finds a host silent for ``[database] owner_lease``
seconds claims that host's open deliveries — each with a conditional update,
so exactly one live host takes each — and resumes them through the engine,
which fails or supersedes the stale ones instead of sending them.
"""

from __future__ import annotations

import threading

from oslo_config import cfg
from oslo_log import log

from ceilo_notifier.engine import Engine
from ceilo_notifier.journal import Journal

LOG = log.getLogger(__name__)


class Takeover:
    """A thread that heartbeats for this process and adopts silent hosts' work."""

    def __init__(self, conf: cfg.ConfigOpts, journal: Journal, engine: Engine) -> None:
        self.host = conf.host
        self.lease = conf.database.owner_lease
        self.journal = journal
        self.engine = engine
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="journal-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(10)

    def _run(self) -> None:
        while True:
            try:
                self.journal.heartbeat(self.host)
                if self.journal.live_owners(self.lease) > 1:
                    self.engine.journal_shared = True
                self._adopt()
            except Exception as exc:
                LOG.warning("Journal heartbeat failed (%s); trying again", exc)
            if self._stopped.wait(self.lease / 4):
                return

    def _adopt(self) -> None:
        for host, seen in self.journal.silent_hosts(self.host, self.lease).items():
            records = self.journal.take_over(host)
            if not records:
                continue  # another live host was quicker
            resumed = self.engine.resume(records)
            LOG.warning(
                "Took over %d unfinished deliveries of host %s, silent since %s "
                "(owner_lease %g s): %d resumed, %d stale",
                len(records),
                host,
                seen.isoformat(timespec="seconds") if seen else "ever",
                self.lease,
                len(resumed),
                len(records) - len(resumed),
            )
