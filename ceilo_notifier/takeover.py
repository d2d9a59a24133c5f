"""Taking over the deliveries of a process that went silent.

Deliveries belong to the process that accepted them, and a host resumes its
own at its next start. A host that never starts again (a replaced VM, a
renamed pod), or a replay killed halfway, would leave them open for ever:
every live process holds a lease in the journal (``journal.Lease``, on a
thread of its own), and this thread, finding an owner whose lease ran out
``[database] owner_lease`` seconds ago by the database's clock, claims its
open deliveries — each with a conditional update, so exactly one live
process takes each — and resumes them through the engine, which fails or
supersedes the stale ones instead of sending them. Resuming may wait for
room in the engine; the lease does not wait with it. Deliveries that could
not be resumed are given back, for the next round to claim again.
"""

from __future__ import annotations

from oslo_config import cfg
from oslo_log import log

from ceilo_notifier import pools
from ceilo_notifier.engine import Engine
from ceilo_notifier.journal import Journal

LOG = log.getLogger(__name__)


class Takeover(pools.Periodic):
    """A thread that adopts the work of owners whose lease ran out."""

    def __init__(self, conf: cfg.ConfigOpts, journal: Journal, engine: Engine) -> None:
        super().__init__("journal-takeover", conf.database.owner_lease / 4)
        self.lease = conf.database.owner_lease
        self.journal = journal
        self.engine = engine

    def tick(self) -> None:
        try:
            self.journal.key_unkeyed()
            self.adopt()
        except Exception as exc:
            LOG.warning("Looking for silent owners in the journal failed (%s)", exc)

    def adopt(self) -> None:
        """One round: claim and resume the open deliveries of every silent owner."""
        for owner, seen in self.journal.silent_owners(self.lease).items():
            if self.stopping:
                return
            records = self.journal.take_over(owner)
            if not records:
                continue  # another live process was quicker
            LOG.warning(
                "Took over %d unfinished deliveries of %s, silent since %s (owner_lease %g s)",
                len(records),
                owner,
                seen.isoformat(timespec="seconds") if seen else "ever",
                self.lease,
            )
            try:
                resumed = self.engine.resume(records)
            except Exception as exc:
                given = self.journal.release(records)
                LOG.error(
                    "Could not resume the %d deliveries taken over from %s (%s); "
                    "%d given back for the next round",
                    len(records),
                    owner,
                    exc,
                    given,
                )
                continue
            LOG.info(
                "Of the %d deliveries taken over from %s: %d resumed, %d stale",
                len(records),
                owner,
                len(resumed),
                len(records) - len(resumed),
            )
