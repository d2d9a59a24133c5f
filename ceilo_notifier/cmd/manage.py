"""``ceilo-notifier-manage``: read and tend the journal.

ceilo-notifier-manage --config-file F history [--alarm-id A] [--outcome O]
                                              [--since 2h] [--until ISO] [--limit N]
ceilo-notifier-manage --config-file F failed [same filters]
ceilo-notifier-manage --config-file F replay [--alarm-id A] [--request-id R ...]
ceilo-notifier-manage --config-file F purge --older-than DAYS
ceilo-notifier-manage --config-file F upgrade
ceilo-notifier-manage --config-file F check-action URL [URL ...]
ceilo-notifier-manage --config-file F endpoints [--state open|half_open|paused|closed|all]
ceilo-notifier-manage --config-file F endpoint-pause URL [--for SECONDS]
ceilo-notifier-manage --config-file F endpoint-resume URL
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import sys
from collections.abc import Sequence

from oslo_config import cfg

from ceilo_notifier import actions, cmd, events, journal, masking
from ceilo_notifier import endpoints as endpoint_states

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(value: str | None) -> datetime.datetime | None:
    """An ISO 8601 time, or an age such as 30m, 2h, 7d (that long ago)."""
    if not value:
        return None
    match = _DURATION.match(value.strip())
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        return journal.utcnow() - datetime.timedelta(seconds=seconds)
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise SystemExit(f"not a time or an age (like 2h, 7d): {value!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


def _add_filters(parser, outcome: bool = True) -> None:
    parser.add_argument("--alarm-id", help="only this alarm")
    if outcome:
        parser.add_argument(
            "--outcome",
            action="append",
            choices=[journal.PENDING, *events.OUTCOMES],
            help="only deliveries in this state; repeat for several",
        )
    parser.add_argument("--since", help="accepted at or after: ISO time, or an age like 2h")
    parser.add_argument("--until", help="accepted before: ISO time, or an age like 30m")
    parser.add_argument("--limit", type=int, default=100, help="rows at most (default 100)")


def add_parsers(subparsers) -> None:
    history = subparsers.add_parser("history", help="list deliveries, newest first")
    _add_filters(history)
    history.add_argument("--events", action="store_true", help="also list every attempt")
    failed = subparsers.add_parser("failed", help="list failed deliveries")
    _add_filters(failed, outcome=False)
    failed.add_argument("--events", action="store_true", help="also list every attempt")
    replay = subparsers.add_parser("replay", help="deliver failed deliveries again")
    _add_filters(replay, outcome=False)
    replay.add_argument("--request-id", action="append", help="only this delivery; repeatable")
    purge = subparsers.add_parser("purge", help="delete finished deliveries older than N days")
    purge.add_argument("--older-than", type=float, required=True, metavar="DAYS")
    subparsers.add_parser("upgrade", help="create or migrate the journal's schema")
    check = subparsers.add_parser(
        "check-action", help="check action URLs as an alarm API registers them"
    )
    check.add_argument("urls", nargs="+", metavar="URL")
    listing = subparsers.add_parser(
        "endpoints", help="list endpoints held by endpoint health, with their waiting deliveries"
    )
    listing.add_argument(
        "--state",
        choices=[*endpoint_states.STATES, "all"],
        help="only endpoints in this state (default: every held one)",
    )
    pause = subparsers.add_parser(
        "endpoint-pause", help="hold every delivery to an endpoint (receiver maintenance)"
    )
    pause.add_argument("url", metavar="URL", help="an action URL, or the endpoint as listed")
    pause.add_argument("--for", dest="seconds", type=float, help="resume by itself after this")
    resume = subparsers.add_parser(
        "endpoint-resume", help="release an endpoint: its held deliveries drain in order"
    )
    resume.add_argument("url", metavar="URL", help="an action URL, or the endpoint as listed")


COMMAND = cfg.SubCommandOpt("command", title="commands", handler=add_parsers)


def _table(rows: list[list[str]], headers: list[str], out) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), file=out)
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


def _when(value: datetime.datetime | None) -> str:
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def show(
    records: list[journal.Record], the_journal: journal.Journal, with_events: bool, out=sys.stdout
) -> None:
    rows = [
        [
            _when(r.created_at),
            r.alarm_id,
            r.action_masked,
            r.state,
            str(r.attempts),
            "-" if r.status_code is None else str(r.status_code),
            r.request_id,
            (r.error or "")[:80],
        ]
        for r in records
    ]
    _table(
        rows,
        ["ACCEPTED (UTC)", "ALARM", "ACTION", "STATE", "ATTEMPTS", "STATUS", "REQUEST ID", "ERROR"],
        out,
    )
    if with_events:
        for r in records:
            print(f"\n{r.request_id} {r.action_masked}", file=out)
            for e in the_journal.events_of(r.request_id):
                took = "-" if e["duration"] is None else f"{e['duration'] * 1000:.0f} ms"
                print(
                    f"  {_when(e['timestamp'])}  attempt {e['attempt']}  {e['outcome']:<10}"
                    f"  {e['status_code'] or '-'}  {took}  {e['error'] or ''}",
                    file=out,
                )
    print(f"\n{len(records)} deliveries", file=out)


def replay(
    conf: cfg.ConfigOpts,
    the_journal: journal.Journal,
    records: list[journal.Record],
    out=sys.stdout,
) -> int:
    """Deliver failed deliveries again, here, journaling every attempt."""
    # A replay owns what it claims like any owner: with a lease, so that if it
    # is killed halfway a live service takes its deliveries over.
    lease = journal.Lease(the_journal, conf.host, conf.database.owner_lease)
    lease.beat()
    lease.start()
    try:
        return _replay(conf, the_journal, records, out)
    finally:
        lease.stop()


def _replay(
    conf: cfg.ConfigOpts,
    the_journal: journal.Journal,
    records: list[journal.Record],
    out,
) -> int:
    from ceilo_notifier import dispatchers, engine
    from ceilo_notifier.dispatchers import database

    claimed = the_journal.claim([r.request_id for r in records], [events.FAILED])
    if not claimed:
        print("nothing to replay", file=out)
        return 0
    backend = database.DatabaseBackend(conf)
    backend.start(the_journal.owner)
    backend.journal.clock = the_journal.clock  # the lease keeps it in the database's time
    total, done = len(claimed), []

    def progress(event: events.DeliveryEvent) -> None:
        if event.final:
            done.append(event)
            print(
                f"[{len(done)}/{total}] {event.request_id} {event.action} -> {event.outcome}"
                f"{'' if event.status_code is None else f' ({event.status_code})'}"
                f"{f': {event.error}' if event.error else ''}",
                file=out,
                flush=True,
            )

    # It journals through its own writer, and asks the journal before every
    # attempt whose turn it is: services share the journal with it.
    the_engine = engine.Engine(
        conf,
        sinks=[dispatchers.fan_out([backend]), progress],
        journal=None,
        ordering=the_journal,
    )
    the_engine.journal_shared = True
    try:
        # An operator's replay is not aged out, but a newer transition of the
        # alarm to the same action still supersedes it.
        the_engine.resume(
            [dataclasses.replace(r, attempts=0, next_attempt_at=None) for r in claimed],
            the_journal,
            ageing=False,
        )
        the_engine.wait_idle()
    finally:
        the_engine.stop()
        backend.flush()
        backend.stop()
    delivered = sum(e.outcome == events.DELIVERED for e in done)
    print(f"replayed {total}: {delivered} delivered, {total - delivered} not", file=out)
    return 0 if delivered == total else 1


def check_actions(conf: cfg.ConfigOpts, urls: Sequence[str], out=None) -> int:
    """One line per URL, ``ok  URL`` or ``invalid  URL: cause``; 0 when all are valid."""
    out = out or sys.stdout
    invalid = 0
    for url in urls:
        try:
            actions.validate(conf, url)
        except actions.InvalidAction as exc:
            # Masked after validate: a plugin provider masks its schemes, once loaded.
            shown = masking.escape_control(masking.mask_url(url))
            invalid += 1
            print(f"invalid  {shown}: {masking.escape_control(str(exc))}", file=out)
        else:
            print(f"ok  {masking.escape_control(masking.mask_url(url))}", file=out)
    return 1 if invalid else 0


def list_endpoints(the_journal: journal.Journal, state: str | None, out=None) -> None:
    """One line per endpoint: state, consecutive failures, since, next probe, waiting."""
    out = out or sys.stdout
    if state == "all":
        states = None
    else:
        states = [state] if state else list(endpoint_states.HELD_STATES)
    rows = the_journal.endpoint_list(states)
    waiting = the_journal.waiting_for(r.endpoint for r in rows)
    table = [
        [
            masking.escape_control(r.endpoint),
            r.state,
            str(r.failures),
            _when(r.since),
            _when(r.until) if r.state in (endpoint_states.OPEN, endpoint_states.PAUSED) else "-",
            str(waiting.get(r.endpoint, 0)),
            masking.escape_control(masking.mask_text(r.reason or "")),
        ]
        for r in rows
    ]
    _table(table, ["ENDPOINT", "STATE", "FAILURES", "SINCE", "UNTIL", "WAITING", "REASON"], out)


def set_endpoint(
    conf: cfg.ConfigOpts,
    the_journal: journal.Journal,
    url: str,
    paused: bool,
    seconds: float | None = None,
    out=None,
) -> int:
    """Pause or resume an endpoint by hand; running services follow within sync_seconds."""
    from ceilo_notifier import engine

    out = out or sys.stdout
    endpoint = endpoint_states.endpoint_of_url(url, engine.load_plugins(conf))
    if endpoint is None:
        print(
            f"no endpoint for {masking.escape_control(masking.mask_url(url))}: "
            "its plugin reports none (or there is no plugin for its scheme)",
            file=out,
        )
        return 1
    with the_journal.engine.connect() as conn:
        the_journal.clock.measure(conn)
    now = the_journal.clock.now()
    if seconds is not None and seconds <= 0:
        print(f"--for must be more than 0 seconds, not {seconds:g}", file=out)
        return 2
    until = now + datetime.timedelta(seconds=seconds) if paused and seconds else None
    written = the_journal.save_endpoint(
        journal.EndpointRow(
            endpoint=endpoint,
            state=endpoint_states.PAUSED if paused else endpoint_states.CLOSED,
            failures=0,
            since=now,
            until=until,
            open_for=0.0,
            reason="paused by an operator" if paused else "resumed by an operator",
            changed_at=now,
            changed_by=the_journal.owner,
        ),
        operator=True,
    )
    shown = masking.escape_control(endpoint)
    if not written:
        print(f"{shown}: a newer change of its state is in the journal; try again", file=out)
        return 1
    if not paused:
        # Rows of processes that are not running (or not yet synced) are due
        # now too; a running process releases its own again when it follows.
        the_journal.release_held(endpoint, everyone=True)
    if paused:
        print(f"{shown} paused" + (f" until {_when(until)}" if until else ""), file=out)
    else:
        print(f"{shown} resumed: its held deliveries drain in order", file=out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    conf = cmd.prepare(sys.argv[1:] if argv is None else argv, cli_opts=[COMMAND])
    command = conf.command.name
    if command == "check-action":
        return check_actions(conf, conf.command.urls)
    url = conf.database.connection
    journal.upgrade(url)
    if command == "upgrade":
        print("journal schema is up to date")
        return 0
    the_journal = journal.Journal(url, journal.owner_tag(conf.host, "manage"))
    try:
        if command == "purge":
            before = journal.utcnow() - datetime.timedelta(days=conf.command.older_than)
            count = the_journal.purge(before)
            print(f"purged {count} finished deliveries older than {conf.command.older_than:g} days")
            return 0
        if command == "endpoints":
            list_endpoints(the_journal, conf.command.state)
            return 0
        if command in ("endpoint-pause", "endpoint-resume"):
            paused = command == "endpoint-pause"
            seconds = getattr(conf.command, "seconds", None)
            return set_endpoint(conf, the_journal, conf.command.url, paused, seconds)
        states = getattr(conf.command, "outcome", None)
        if command in ("failed", "replay"):
            states = [events.FAILED]
        records = the_journal.find(
            alarm_id=conf.command.alarm_id,
            states=states,
            since=parse_time(conf.command.since),
            until=parse_time(conf.command.until),
            limit=conf.command.limit,
        )
        if command == "replay":
            wanted = conf.command.request_id
            if wanted:
                records = [r for r in the_journal.get(wanted) if r.state == events.FAILED]
            return replay(conf, the_journal, records)
        show(records, the_journal, conf.command.events)
        return 0
    finally:
        the_journal.close()


if __name__ == "__main__":
    sys.exit(main())
