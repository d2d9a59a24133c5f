"""``ceilo-notifier``: run the service."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ceilo_notifier import cmd


def main(argv: Sequence[str] | None = None) -> int:
    conf = cmd.prepare(sys.argv[1:] if argv is None else argv)
    from oslo_service import service as os_service

    from ceilo_notifier import journal
    from ceilo_notifier.service import NotifierService

    if "database" in conf.event_dispatchers:
        # Once, in the parent, before any worker opens the journal.
        journal.upgrade(conf.database.connection)

    launcher = os_service.launch(
        conf, NotifierService(conf), workers=conf.workers, restart_method="mutate"
    )
    code = launcher.wait()
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
