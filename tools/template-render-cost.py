#!/usr/bin/env python3
"""What a payload template costs per render: in a render worker (as the
service renders: a request and an answer over pipes) and in-process (the
same sandboxed render without the worker), for each built-in template and
any in ``--path``.

    python tools/template-render-cost.py [--count 2000] [--path DIR]
"""

from __future__ import annotations

import argparse
import json
import time

from oslo_config import cfg

from ceilo_notifier import templates
from ceilo_notifier.notification import AlarmNotification
from ceilo_notifier.templates import sandbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--path", help="a [templates] path to measure too")
    args = parser.parse_args()
    conf = cfg.ConfigOpts()
    templates.register_opts(conf)
    conf([])
    if args.path:
        conf.set_override("path", args.path, group="templates")
    installed = templates.Templates(conf)
    notification = AlarmNotification(
        alarm_id="9b5a3c3e-4d0c-4d55-a0f5-7f6f3a1c2b11",
        alarm_name="cpu_high",
        severity="critical",
        previous="ok",
        current="alarm",
        reason="Transition to alarm due to 3 samples outside threshold, most recent: 97.3",
        reason_data={
            "type": "threshold",
            "disposition": "outside",
            "count": 3,
            "most_recent": 97.3,
        },
    ).for_delivery("req-3f2e9a6c-1d4b-4f8e-9c7a-2b5d6e8f0a1c")
    start = time.perf_counter()
    installed.render(installed.names[0], notification)  # starts the first worker
    print(f"first render (starts a worker): {(time.perf_counter() - start) * 1000:.0f} ms")
    env = sandbox.Environment(conf.templates.max_body_bytes)
    variables = json.loads(json.dumps(templates.variables(notification)))
    print(f"{'template':<14}{'in a worker':>14}{'in-process':>14}{'IPC':>10}")
    try:
        for name in installed.names:
            start = time.perf_counter()
            for _ in range(args.count):
                installed.render(name, notification)
            worker = (time.perf_counter() - start) / args.count
            compiled = env.from_string(installed.sources[name][0])
            start = time.perf_counter()
            for _ in range(args.count):
                compiled.render(**variables)
            local = (time.perf_counter() - start) / args.count
            print(
                f"{name:<14}{worker * 1e6:>11.0f} µs{local * 1e6:>11.0f} µs"
                f"{(worker - local) * 1e6:>7.0f} µs"
            )
    finally:
        installed.close()


if __name__ == "__main__":
    main()
