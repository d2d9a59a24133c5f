"""The ceiling: a bare oslo.messaging consumer that does nothing with what it gets.

    python bench/bare_server.py --config-file F --mode rpc|notification --topic T --prefix P

``--mode rpc``: an RPC server on topic T (target version 1.0) whose
``notify_alarm`` does nothing, with the threading executor, as ceilo-notifier's
RPC server. ``--mode notification``: a notification listener on topic T of the
config's ``control_exchange`` whose ``sample`` endpoint does nothing, as
aodh-notifier's listener. What it handles per second is the most any notifier
built on oslo.messaging can consume on this machine with this sender. Only
oslo.messaging is used, never the code under test.

Prints ``{"event": "ready"}`` once it consumes, ``{"event": "warmup"}`` when it
handled an alarm whose id ends in ``-warmup``, and then reads commands on
stdin, one per line:

    count         -> {"event": "count", "n": N}   (alarms with the prefix so far)
    dump PATH     -> writes {"handled": [[alarm_id, handled_at, sent], ...]} to PATH,
                     then {"event": "dumped", "n": N}
    reset         -> forgets what it handled

It stops on SIGTERM or at the end of stdin.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

import oslo_messaging
from oslo_config import cfg
from sender import register_opts


def emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class _Stop(Exception):
    pass


class Recorder:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.handled: list[tuple[str, float, float | None]] = []
        self.lock = threading.Lock()

    def record(self, data: dict) -> None:
        now = time.time()
        alarm_id = (data or {}).get("alarm_id") or ""
        if alarm_id.endswith("-warmup"):
            emit(event="warmup")
        elif alarm_id.startswith(self.prefix):
            sent = (data.get("reason_data") or {}).get("sent")
            with self.lock:
                self.handled.append((alarm_id, now, sent))


class RPCEndpoint:
    target = oslo_messaging.Target(version="1.0")

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def notify_alarm(self, context, data) -> None:
        self.recorder.record(data)


class NotificationEndpoint:
    filter_rule = oslo_messaging.NotificationFilter(event_type=r"^alarm\.update$")

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def sample(self, ctxt, publisher_id, event_type, payload, metadata) -> None:
        self.recorder.record(payload)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--mode", choices=("rpc", "notification"), default="rpc")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args(argv)

    conf = cfg.ConfigOpts()
    conf(["--config-file", args.config_file], default_config_files=[])
    register_opts(conf)
    recorder = Recorder(args.prefix)
    # No executor argument: without eventlet's monkey patching oslo.messaging
    # picks the threading executor.
    if args.mode == "rpc":
        transport = oslo_messaging.get_rpc_transport(conf)
        server = oslo_messaging.get_rpc_server(
            transport,
            oslo_messaging.Target(topic=args.topic, server="bench-bare", version="1.0"),
            [RPCEndpoint(recorder)],
        )
    else:
        transport = oslo_messaging.get_notification_transport(conf)
        server = oslo_messaging.get_notification_listener(
            transport, [oslo_messaging.Target(topic=args.topic)],
            [NotificationEndpoint(recorder)],
        )  # fmt: skip
    server.start()

    def on_term(signum, frame):
        raise _Stop

    signal.signal(signal.SIGTERM, on_term)
    emit(event="ready")
    try:
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            with recorder.lock:
                handled = list(recorder.handled)
                if cmd == "reset":
                    recorder.handled.clear()
            if cmd == "count":
                emit(event="count", n=len({h[0] for h in handled}))
            elif cmd == "dump":
                with open(arg, "w") as f:
                    json.dump({"handled": handled}, f)
                emit(event="dumped", n=len(handled))
    except _Stop:
        pass
    server.stop()
    server.wait()
    transport.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
