"""``ceilo-notifier-status upgrade check``: is this configuration ready to run?

ceilo-notifier-status upgrade check --config-file F [--json]

Run before starting a new version, or after editing the configuration. Each
check is read-only (the journal is never migrated here); the exit status is
oslo.upgradecheck's: 0 success, 1 warning, 2 failure, 255 a check that crashed.

* Journal: the database must answer and its schema be at this version's
  newest revision (else ``ceilo-notifier-manage upgrade``): failure.
* aodh option spellings: every aodh name the configuration files still use,
  with the option it is a spelling of: warning.
* RPC queues: casts published while the broker restarts are lost unless the
  queues they go to are durable (quorum): warning.
* Target safety: a deny list that lets webhooks reach loopback or the cloud
  metadata address: warning.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import sys
from collections.abc import Sequence

from oslo_config import cfg
from oslo_upgradecheck import upgradecheck

from ceilo_notifier import cmd, masking, opts

Result = upgradecheck.Result
Code = upgradecheck.Code

# Addresses that no tenant's webhook should reach: loopback (where the broker's
# management API and the service's own /metrics answer) and the cloud metadata
# service, over IPv4 and IPv6.
GUARDED_ADDRESSES = {
    "127.0.0.1": "loopback",
    "::1": "loopback",
    "169.254.169.254": "the metadata address",
    "fd00:ec2::254": "the metadata address",
}


def aodh_spellings() -> dict[tuple[str, str], tuple[str, str]]:
    """(group, name) of each of aodh's spellings -> (group, name) of the option it sets.

    Those are the deprecated names of ceilo-notifier's own options (``opts``);
    keystoneauth's deprecated names in [service_credentials] are not aodh's.
    """
    spellings = {}
    for group, options in opts.ALL_GROUPS:
        group = group or "DEFAULT"
        for opt in options:
            for old in opt.deprecated_opts:
                old_group = old.group or group
                old_name = (old.name or opt.name).replace("-", "_")
                spellings[(old_group, old_name)] = (group, opt.name.replace("-", "_"))
    return spellings


def config_files(conf: cfg.ConfigOpts) -> list[str]:
    """The files oslo.config read, in its order: --config-file ones, then --config-dir's."""
    files = list(conf.config_file or [])
    for directory in conf.config_dir or []:
        files.extend(sorted(glob.glob(os.path.join(directory, "*.conf"))))
    return files


def options_set(path: str) -> dict[str, set[str]]:
    """{section: names of the options set in it} of one file, names with underscores."""
    sections: dict[str, dict[str, list[str]]] = {}
    cfg.ConfigParser(path, sections).parse()
    return {
        section: {key.replace("-", "_") for key in values} for section, values in sections.items()
    }


def _spelled(group: str, name: str) -> str:
    return f"[{group}] {name}"


class Checks(upgradecheck.UpgradeCommands):
    display_title = "ceilo-notifier upgrade check"

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__()
        self.conf = conf

    # -- the journal ----------------------------------------------------------

    def _journal(self) -> Result:
        if "database" not in self.conf.event_dispatchers:
            return Result(Code.SUCCESS, "the journal is not in use (no database dispatcher)")
        url = self.conf.database.connection
        shown = masking.mask_url(url)
        try:
            state = journal_revisions(url, self.conf.database.timeout)
        except JournalUnreachable as exc:
            return Result(Code.FAILURE, f"the journal at {shown} cannot be reached: {exc}")
        current, heads = state.current, state.heads
        files = "".join(f" --config-file {f}" for f in self.conf.config_file or [])
        upgrade = (
            f"run ceilo-notifier-manage{files} upgrade (the service migrates it too when it starts)"
        )
        if not current:
            return Result(
                Code.FAILURE,
                f"the journal at {shown} has no schema yet (this version needs revision "
                f"{', '.join(heads)}): {upgrade}",
            )
        if set(current) == set(heads):
            return Result(Code.SUCCESS, f"the journal at {shown} is at revision {', '.join(heads)}")
        unknown = [r for r in current if r not in state.known]
        if unknown:
            return Result(
                Code.FAILURE,
                f"the journal at {shown} is at revision {', '.join(current)}, which this "
                f"version does not know (its newest is {', '.join(heads)}): it was migrated "
                "by a newer ceilo-notifier",
            )
        return Result(
            Code.FAILURE,
            f"migrations pending: the journal at {shown} is at revision {', '.join(current)}, "
            f"this version needs {', '.join(heads)}: {upgrade}",
        )

    # -- aodh's spellings -----------------------------------------------------

    def _spellings(self) -> Result:
        spellings = aodh_spellings()
        found = []
        for path in config_files(self.conf):
            try:
                sections = options_set(path)
            except (OSError, cfg.ParseError) as exc:
                found.append(f"{path} could not be read: {exc}")
                continue
            for (group, name), (new_group, new_name) in sorted(spellings.items()):
                if name not in sections.get(group, set()):
                    continue
                line = (
                    f"{_spelled(group, name)} is aodh's spelling: use "
                    f"{_spelled(new_group, new_name)} (in {path})"
                )
                if new_name in sections.get(new_group, set()):
                    line += f"; it is ignored, {_spelled(new_group, new_name)} is set too"
                found.append(line)
        if not found:
            return Result(Code.SUCCESS, "no aodh spelling in use")
        return Result(Code.WARNING, "; ".join(found))

    # -- RPC queues across a broker restart -----------------------------------

    def _queues(self) -> Result:
        url = self.conf.transport_url or "rabbit://"
        scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
        if scheme != "rabbit":
            return Result(Code.SUCCESS, f"transport {scheme}: not RabbitMQ, nothing to judge")
        rabbit = self.conf.oslo_messaging_rabbit
        lossy = []
        if not (rabbit.rabbit_quorum_queue or self.conf.oslo_messaging_rabbit.amqp_durable_queues):
            lossy.append(
                "casts to the topic and to a host (and aodh's notifications) go to transient "
                "queues: set [oslo_messaging_rabbit] rabbit_quorum_queue = true"
            )
        if not (rabbit.rabbit_transient_quorum_queue or rabbit.rabbit_stream_fanout):
            lossy.append(
                "fanout casts go to transient queues: set [oslo_messaging_rabbit] "
                "rabbit_transient_quorum_queue = true"
            )
        if not lossy:
            return Result(Code.SUCCESS, "the RPC queues are durable: no cast is lost")
        return Result(
            Code.WARNING,
            "casts published while RabbitMQ restarts, before the service has declared its "
            "queues again, are lost: "
            + "; ".join(lossy)
            + " (on the service and on every casting evaluator alike)",
        )

    # -- target safety --------------------------------------------------------

    def _targets(self) -> Result:
        from ceilo_notifier.notifiers import safety

        alarm = self.conf.alarm
        try:
            policy = safety.AddressPolicy(
                alarm.rest_notifier_denied_networks, alarm.rest_notifier_allowed_networks
            )
        except ValueError as exc:
            return Result(Code.FAILURE, f"not a network: {exc}")
        reachable = []
        for address, what in GUARDED_ADDRESSES.items():
            try:
                policy.check(address, address)
            except safety.TargetDenied:
                continue
            reachable.append(f"{address} ({what})")
        if not reachable:
            return Result(Code.SUCCESS, "loopback and the metadata address are denied")
        return Result(
            Code.WARNING,
            "webhooks written by cloud users may reach "
            + ", ".join(reachable)
            + ": deny them in [alarm] rest_notifier_denied_networks (or keep them out of "
            "rest_notifier_allowed_networks); fine only on a test cloud whose webhooks "
            "run on the same machine",
        )

    _upgrade_checks = (
        ("Journal", _journal),
        ("aodh option spellings", _spellings),
        ("RPC queues across a broker restart", _queues),
        ("Target safety", _targets),
    )


class JournalUnreachable(Exception):
    pass


@dataclasses.dataclass
class Revisions:
    current: tuple[str, ...]  # the database's
    heads: tuple[str, ...]  # this version's newest
    known: set[str]  # every revision this version has


def journal_revisions(url: str, timeout: float) -> Revisions:
    """The journal's revisions and this version's heads, reading only.

    A journal made before Alembic's table had a name of its own keeps its
    revision in ``alembic_version``; ``upgrade`` adopts it, so it counts here.
    """
    import sqlalchemy as sa
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from ceilo_notifier.journal import connection

    config = Config()
    config.set_main_option("script_location", "ceilo_notifier:migrations")
    script = ScriptDirectory.from_config(config)
    heads = tuple(script.get_heads())
    known = {rev.revision for rev in script.walk_revisions()}

    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # Never create the file (nor its directory) by looking.
        path = parsed.database
        if path and path != ":memory:" and not os.path.exists(path):
            return Revisions((), heads, known)
        engine = sa.create_engine(url)
    else:
        engine = connection.make_engine(url, timeout=timeout, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            current = tuple(
                MigrationContext.configure(
                    conn, opts={"version_table": connection.VERSION_TABLE}
                ).get_current_heads()
            )
            if not current and "alembic_version" in sa.inspect(conn).get_table_names():
                old = MigrationContext.configure(conn).get_current_heads()
                current = tuple(r for r in old if r in known)
    except sa.exc.SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise JournalUnreachable(masking.mask_text(str(reason).strip().splitlines()[0])) from None
    finally:
        engine.dispose()
    return Revisions(current, heads, known)


_OWN_ARGS = ("--json", "-h", "--help")


def global_first(argv: Sequence[str]) -> list[str]:
    """``upgrade check --config-file F`` as ``--config-file F upgrade check``.

    oslo.config's options (--config-file, --config-dir, --debug...) belong
    before the subcommand for argparse; operators write them anywhere.
    """
    args = list(argv)
    if "upgrade" not in args:
        return args
    start = args.index("upgrade")
    end = min(start + 2, len(args))  # "upgrade check"
    moved = [a for a in args[end:] if a not in _OWN_ARGS]
    own = [a for a in args[end:] if a in _OWN_ARGS]
    return args[:start] + moved + args[start:end] + own


def main(argv: Sequence[str] | None = None) -> int:
    conf = cfg.ConfigOpts()
    checks = Checks(conf)
    upgradecheck.register_cli_options(conf, checks)
    cmd.prepare(global_first(sys.argv[1:] if argv is None else argv), conf=conf)
    upgradecheck.CONF = conf  # where --json is read
    return upgradecheck.run(conf)


if __name__ == "__main__":
    sys.exit(main())
