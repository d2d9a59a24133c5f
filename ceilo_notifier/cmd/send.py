"""``ceilo-notifier-send``: cast one notify_alarm, or deliver it here with --local."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence

from oslo_config import cfg

from ceilo_notifier import cmd, events

CLI_OPTS = [
    cfg.MultiStrOpt("action", required=True, help="Action URL; repeat for several."),
    cfg.StrOpt("alarm-id", required=True, help="Id of the alarm."),
    cfg.StrOpt("alarm-name", help="Name of the alarm."),
    cfg.StrOpt("severity", help="low, moderate, critical or free text."),
    cfg.StrOpt("previous", default="ok", help="Previous state."),
    cfg.StrOpt("current", default="alarm", help="New state."),
    cfg.StrOpt("reason", default="", help="Human-readable reason."),
    cfg.StrOpt("reason-data", default="{}", help="Machine-readable reason, as JSON."),
    cfg.BoolOpt(
        "local",
        default=False,
        help="Deliver in this process instead of casting; no broker needed. "
        "Prints the outcome of each action.",
    ),
    cfg.FloatOpt(
        "wait",
        default=600.0,
        help="With --local, seconds to wait for every delivery, retries included.",
    ),
    cfg.StrOpt("server", help="Cast to this notifier host only (its host topic)."),
    cfg.BoolOpt("fanout", default=False, help="Cast to every notifier instance."),
]


def build_data(conf: cfg.ConfigOpts) -> dict:
    try:
        reason_data = json.loads(conf.reason_data)
    except ValueError as exc:
        raise SystemExit(f"--reason-data is not JSON: {exc}") from None
    return {
        "actions": list(conf.action),
        "alarm_id": conf.alarm_id,
        "alarm_name": conf.alarm_name,
        "severity": conf.severity,
        "previous": conf.previous,
        "current": conf.current,
        "reason": conf.reason,
        "reason_data": reason_data,
    }


def deliver_locally(conf: cfg.ConfigOpts, data: dict, out=sys.stdout) -> int:
    """Deliver in-process, print one line per action, return the exit code."""
    from ceilo_notifier import engine
    from ceilo_notifier.consumers import rpc

    finals: list[events.DeliveryEvent] = []
    lock = threading.Lock()

    def collect(event: events.DeliveryEvent) -> None:
        if event.final:
            with lock:
                finals.append(event)

    the_engine = engine.Engine(conf, sinks=[collect])
    try:
        deliveries = rpc.NotifierEndpoint(conf, the_engine).handle(data)
        the_engine.wait_idle(conf.wait)
    finally:
        the_engine.stop()
    pending = [d for d in deliveries if d.outcome is None]
    with lock:
        results = list(finals)
    width = max((len(e.action) for e in results), default=6)
    print(
        f"{'ACTION':<{width}}  {'OUTCOME':<10}  {'STATUS':>6}  {'ATTEMPTS':>8}  {'TIME':>9}  ERROR",
        file=out,
    )
    for e in results:
        status = "-" if e.status_code is None else str(e.status_code)
        took = "-" if e.duration is None else f"{e.duration * 1000:.0f} ms"
        print(
            f"{e.action:<{width}}  {e.outcome:<10}  {status:>6}  {e.attempt:>8}  {took:>9}  "
            f"{e.error or ''}",
            file=out,
        )
    for d in pending:
        print(
            f"{d.masked_action:<{width}}  {'unfinished':<10}  {'-':>6}  {d.attempt:>8}  "
            f"{'-':>9}  still retrying after {conf.wait} s",
            file=out,
        )
    if not results and not pending:
        return 1
    ok = not pending and all(e.outcome == events.DELIVERED for e in results)
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    conf = cmd.prepare(sys.argv[1:] if argv is None else argv, cli_opts=CLI_OPTS)
    data = build_data(conf)
    if conf.local:
        return deliver_locally(conf, data)
    from ceilo_notifier import rpc

    notifier = rpc.RPCAlarmNotifier(conf)
    try:
        notifier.cast(data, server=conf.server, fanout=conf.fanout)
    finally:
        notifier.close()
    print(f"notify_alarm cast for alarm {conf.alarm_id} on topic {conf.alarm.notifier_rpc_topic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
