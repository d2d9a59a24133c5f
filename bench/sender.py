"""Feed alarms the way alarm evaluators do, and record when each one went out.

Run by bench/run.py as its own process (so its CPU is not the target's):

    python bench/sender.py --config-file F --mode rpc|notification --topic T --prefix P \
        --batch 80 URL1 --batch 20 URL2 [--rate 100] [--threads 4] --out casts.json

``--mode rpc``: ``notify_alarm`` casts on topic T (target version 1.0), as
ceilometer's evaluator and ceilo-notifier's client library cast them.
``--mode notification``: what aodh's evaluator sends to aodh-notifier: an
oslo.messaging notification (driver messagingv2, publisher
``alarming.evaluator``, event type ``alarm.update``, priority sample) on topic
T of the config's ``control_exchange`` (aodh's is ``aodh``, topic
``alarming``). Either way the payload is the dict aodh's evaluator builds:
actions, alarm_id, alarm_name, severity, previous, current, reason,
reason_data.

Only oslo.messaging is used, never the code under test. The config file has
``[DEFAULT] transport_url`` and ``control_exchange`` and any
``[oslo_messaging_rabbit]`` options.

It connects, prints ``{"event": "ready"}`` and waits for a line on stdin
before it starts (so imports and connection set-up stay out of the measured
time). Alarm i of the run gets alarm_id ``<prefix>-<i:06d>`` and
``reason_data = {"sent": time.time() when it went out, "seq": i}``. Batches go
out in order. ``--rate`` paces them (never faster than that, also after a
broker outage); without it, ``--threads`` threads send as fast as they can.
One that raises is recorded with its error and not retried.

Output (``--out``): {"casts": [[alarm_id, sent, returned, error-or-null], ...]}.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import oslo_messaging
from oslo_config import cfg


def emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def register_opts(conf: cfg.ConfigOpts) -> None:
    """oslo.messaging's options on a private ConfigOpts: some releases register their
    tracing and metrics options on the global one only."""
    import importlib

    import oslo_messaging.opts

    for group, options in oslo_messaging.opts.list_opts():
        conf.register_opts(options, group=group)
    for module, name in (
        ("oslo_messaging._tracing.client", "oslo_messaging_tracing"),
        ("oslo_messaging._metrics.client", "oslo_messaging_metrics"),
    ):
        try:
            options = getattr(importlib.import_module(module), name)
            conf.register_opts(options, group=name)
        except (ImportError, AttributeError, cfg.DuplicateOptError):
            continue


def make_send(conf: cfg.ConfigOpts, mode: str, topic: str):
    """A send(payload) for the mode, and a close()."""
    if mode == "rpc":
        transport = oslo_messaging.get_rpc_transport(conf)
        client = oslo_messaging.get_rpc_client(
            transport, oslo_messaging.Target(topic=topic, version="1.0")
        )

        def send(payload: dict) -> None:
            client.cast({}, "notify_alarm", data=payload)

    else:
        transport = oslo_messaging.get_notification_transport(conf)
        notifier = oslo_messaging.Notifier(
            transport, driver="messagingv2", publisher_id="alarming.evaluator", topics=[topic]
        )

        def send(payload: dict) -> None:
            notifier.sample({}, "alarm.update", payload)

    return send, transport.cleanup


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--mode", choices=("rpc", "notification"), default="rpc")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--batch", nargs=2, action="append", metavar=("COUNT", "URL"))
    parser.add_argument("--rate", type=float, default=0.0, help="alarms per second (0: max)")
    parser.add_argument("--threads", type=int, default=1, help="sending threads when --rate 0")
    parser.add_argument("--out", required=True)
    parser.add_argument("--warmup-url", help="send one alarm <prefix>-warmup here first")
    args = parser.parse_args(argv)

    plan: list[tuple[str, str]] = []
    for count, url in args.batch or []:
        for _ in range(int(count)):
            plan.append((f"{args.prefix}-{len(plan):06d}", url))

    conf = cfg.ConfigOpts()
    conf(["--config-file", args.config_file], default_config_files=[])
    register_opts(conf)
    send, close = make_send(conf, args.mode, args.topic)

    def data(alarm_id: str, url: str, seq: int) -> dict:
        return {
            "actions": [url],
            "alarm_id": alarm_id,
            "alarm_name": f"bench {alarm_id}",
            "severity": "moderate",
            "previous": "ok",
            "current": "alarm",
            "reason": "Transition to alarm due to 3 samples outside threshold",
            "reason_data": {"type": "threshold", "sent": time.time(), "seq": seq},
        }

    if args.warmup_url:
        send(data(f"{args.prefix}-warmup", args.warmup_url, -1))
    emit(event="ready")
    sys.stdin.readline()

    results: list[list | None] = [None] * len(plan)

    def one(i: int) -> None:
        alarm_id, url = plan[i]
        payload = data(alarm_id, url, i)
        sent = payload["reason_data"]["sent"]
        error = None
        try:
            send(payload)
        except Exception as exc:  # noqa: BLE001 - recorded as "not sent"
            error = f"{type(exc).__name__}: {exc}"
        results[i] = [alarm_id, sent, time.time(), error]

    start = time.time()
    emit(event="started", t=start)
    if args.rate > 0:
        interval = 1.0 / args.rate
        last = None
        for i in range(len(plan)):
            due = start + i * interval
            if last is not None:
                due = max(due, last + interval)
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)
            last = time.time()
            one(i)
            if i % 100 == 99:
                emit(event="progress", n=i + 1, t=time.time())
    else:
        threads = max(1, args.threads)

        def worker(k: int) -> None:
            for i in range(k, len(plan), threads):
                one(i)

        workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    end = time.time()
    with open(args.out, "w") as f:
        json.dump({"casts": results}, f)
    failed = sum(1 for x in results if x and x[3])
    emit(event="done", t=end, casts=len(plan), failed=failed, seconds=end - start)
    close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
