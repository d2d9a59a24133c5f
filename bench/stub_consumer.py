"""A stub notifier: the simplest threaded one, for scale.

    python bench/stub_consumer.py --config-file F --topic T [--timeout 10]

An oslo.messaging notification listener (threading executor, as many threads
as ``[DEFAULT] executor_thread_pool_size``, 64 by default) on topic T of the
config's ``control_exchange``; for each ``alarm.update`` it POSTs the alarm,
as aodh's REST notifier does, to every http(s) action with requests (one
keep-alive session per thread, ``--timeout`` seconds per request, no retry),
and forgets it: no journal, no events, no log line per delivery. Only
oslo.messaging and requests are used, never the code under test.

Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import uuid

import oslo_messaging
import requests
from oslo_config import cfg
from sender import register_opts


class Endpoint:
    filter_rule = oslo_messaging.NotificationFilter(event_type=r"^alarm\.update$")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
        return session

    def sample(self, ctxt, publisher_id, event_type, payload, metadata) -> None:
        body = json.dumps({k: payload.get(k) for k in (
            "alarm_name", "alarm_id", "severity", "previous", "current", "reason",
            "reason_data")})  # fmt: skip
        for action in payload.get("actions") or []:
            if not action.startswith(("http://", "https://")):
                continue
            headers = {
                "content-type": "application/json",
                "x-openstack-request-id": f"req-{uuid.uuid4()}",
            }
            try:
                self._session().post(action, data=body, headers=headers, timeout=self.timeout)
            except requests.RequestException:
                pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)

    conf = cfg.ConfigOpts()
    conf(["--config-file", args.config_file], default_config_files=[])
    register_opts(conf)
    transport = oslo_messaging.get_notification_transport(conf)
    server = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=args.topic)], [Endpoint(args.timeout)]
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *a: stop.set())
    server.start()
    print("stub consumer listening", file=sys.stderr, flush=True)
    while not stop.wait(1.0):
        pass
    server.stop()
    server.wait()
    transport.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
