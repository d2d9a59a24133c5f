"""Cast notify_alarm the way an alarm evaluator does, and record when each cast went out.

Run by bench/run.py as its own process (so its CPU is not the service's):

    python bench/sender.py --config-file F --prefix P --batch 80 URL1 --batch 20 URL2 \
        [--rate 100] [--threads 4] --out casts.json

It builds its RPC client, prints ``{"event": "ready"}`` and waits for a line
on stdin before it starts casting (so imports and connection set-up stay out
of the measured time). Alarm i of the run gets alarm_id ``<prefix>-<i:06d>``
and ``reason_data = {"sent": time.time() at the cast, "seq": i}``. Batches
are cast in order. ``--rate`` paces the casts (never faster than that, also
after a broker outage); without it, ``--threads`` threads cast as fast as
they can. A cast that raises is recorded with its error and not retried.

Output (``--out``): {"casts": [[alarm_id, sent, returned, error-or-null], ...]}.
"""

# ruff: noqa: I001 - ceilo_notifier.cmd must be imported before oslo.messaging
from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from ceilo_notifier import cmd  # noqa: F401 - selects oslo.service's threading backend

# (the import above must come before oslo.messaging's first import)
from oslo_config import cfg  # noqa: E402

from ceilo_notifier import opts, rpc  # noqa: E402


def emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--batch", nargs=2, action="append", metavar=("COUNT", "URL"))
    parser.add_argument("--rate", type=float, default=0.0, help="casts per second (0: max)")
    parser.add_argument("--threads", type=int, default=1, help="casting threads when --rate 0")
    parser.add_argument("--out", required=True)
    parser.add_argument("--warmup-url", help="cast one alarm <prefix>-warmup here first")
    args = parser.parse_args(argv)

    plan: list[tuple[str, str]] = []
    for count, url in args.batch or []:
        for _ in range(int(count)):
            plan.append((f"{args.prefix}-{len(plan):06d}", url))

    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf(["--config-file", args.config_file], default_config_files=[])
    client = rpc.RPCAlarmNotifier(conf)

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
        client.cast(data(f"{args.prefix}-warmup", args.warmup_url, -1))
    emit(event="ready")
    sys.stdin.readline()

    results: list[list | None] = [None] * len(plan)

    def cast(i: int) -> None:
        alarm_id, url = plan[i]
        payload = data(alarm_id, url, i)
        sent = payload["reason_data"]["sent"]
        error = None
        try:
            client.cast(payload)
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
            cast(i)
            if i % 100 == 99:
                emit(event="progress", n=i + 1, t=time.time())
    else:
        threads = max(1, args.threads)

        def worker(k: int) -> None:
            for i in range(k, len(plan), threads):
                cast(i)

        workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    end = time.time()
    with open(args.out, "w") as f:
        json.dump({"casts": results}, f)
    failed = sum(1 for r in results if r and r[3])
    emit(event="done", t=end, casts=len(plan), failed=failed, seconds=end - start)
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
