"""The ceiling: a bare oslo.messaging RPC server whose notify_alarm does nothing.

Same transport, topic, target and executor (threading) as ceilo-notifier, so
what it handles per second is the most any notifier built on oslo.messaging
can consume on this machine with this sender.

    python bench/bare_server.py --config-file F --prefix P --expect N --out handled.json

Prints ``{"event": "ready"}`` once it consumes; exits once it has handled N
casts whose alarm_id starts with the prefix (or after --timeout seconds) and
writes {"handled": [[alarm_id, handled_at, sent], ...]}, then prints
``{"event": "handled", "n": N}``.
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
import oslo_messaging  # noqa: E402
from oslo_config import cfg  # noqa: E402

from ceilo_notifier import opts, rpc  # noqa: E402


class NoopEndpoint:
    target = oslo_messaging.Target(version="1.0")

    def __init__(self, prefix: str, expect: int) -> None:
        self.prefix = prefix
        self.expect = expect
        self.handled: list[tuple[str, float, float | None]] = []
        self.done = threading.Event()

    def notify_alarm(self, context, data) -> None:
        now = time.time()
        alarm_id = data.get("alarm_id") or ""
        if alarm_id.startswith(self.prefix) and not alarm_id.endswith("-warmup"):
            sent = (data.get("reason_data") or {}).get("sent")
            self.handled.append((alarm_id, now, sent))
            if len(self.handled) >= self.expect:
                self.done.set()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf(["--config-file", args.config_file], default_config_files=[])
    rpc.register_messaging_opts(conf)
    transport = rpc.get_transport(conf)
    endpoint = NoopEndpoint(args.prefix, args.expect)
    # No executor argument: it is deprecated, and without eventlet's monkey
    # patching oslo.messaging picks the threading executor, as the service's.
    server = oslo_messaging.get_rpc_server(
        transport, rpc.get_target(conf, server=conf.host), [endpoint]
    )
    server.start()
    sys.stdout.write(json.dumps({"event": "ready"}) + "\n")
    sys.stdout.flush()
    endpoint.done.wait(args.timeout)
    with open(args.out, "w") as f:
        json.dump({"handled": list(endpoint.handled)}, f)
    sys.stdout.write(json.dumps({"event": "handled", "n": len(endpoint.handled)}) + "\n")
    sys.stdout.flush()
    server.stop()
    server.wait()
    transport.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
