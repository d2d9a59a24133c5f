"""ceilo-notifier fed as ceilometer-style evaluators feed it: notify_alarm casts.

The service runs as operators run it: ``python -m ceilo_notifier.cmd.notifier
--config-file F`` (from the work tree, or the tree of ``--rev``), stopped with
SIGTERM. Its config sets the broker, a host name of its own, its state_path
(so its journal is fresh) in the run's directory, loopback as an allowed
webhook network, and whatever ``--set`` adds.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from common import CHILD_ENV, RPC_TOPIC, expand_dir, merge, parse_overrides

from targets import PY, Target, tag

# the options that shape the scenarios, as the code under test defines them
_SETTINGS = """
import json
from oslo_config import cfg
from ceilo_notifier import opts
conf = cfg.ConfigOpts(); opts.register_opts(conf); conf([], default_config_files=[])
out = {}
for name in ('workers', 'shutdown_grace_period'):
    out[name] = getattr(conf, name, None)
for name in ('dispatch_pool_size', 'per_host_concurrency', 'rest_notifier_timeout',
             'rest_notifier_max_retries'):
    try:
        out[name] = getattr(conf.alarm, name)
    except (AttributeError, cfg.NoSuchOptError):
        pass
for name in ('enabled', 'failure_threshold', 'open_seconds', 'max_open_seconds'):
    try:
        out['endpoint_health.' + name] = getattr(conf.endpoint_health, name)
    except (AttributeError, cfg.NoSuchOptError):
        pass
print(json.dumps(out))
"""


class CeiloRPC(Target):
    name = "ceilo-rpc"
    title = "ceilo-notifier, RPC casts"
    order = 20
    feed_mode = "rpc"
    topic = RPC_TOPIC
    listener = False
    _settings: dict | None = None

    def config(self, broker, extra: dict) -> dict:
        alarm = {
            "notifier_rpc_topic": RPC_TOPIC,
            # the default deny list denies loopback, where the sink is
            "rest_notifier_allowed_networks": "127.0.0.0/8,::1/128",
        }
        if self.listener:
            alarm.update(notification_listener="true", notifier_exchange=self.exchange,
                         notifier_topic=self.topic)  # fmt: skip
        sections = merge(
            {
                "DEFAULT": {
                    "transport_url": broker.url,
                    "host": f"bench-{tag()}",
                    "state_path": str(self.d),
                },
                "alarm": alarm,
            },
            extra,
            parse_overrides(self.bench.args.set or []),
        )
        return expand_dir(sections, self.d)

    def command(self, config: Path) -> list[str]:
        return [PY, "-m", "ceilo_notifier.cmd.notifier", "--config-file", str(config)]

    def ready_queues(self) -> list[str]:
        queues = [RPC_TOPIC]
        if self.listener:
            queues.append(f"{self.topic}.sample")
        return queues

    def settings(self) -> dict:
        """Its defaults (asked from the code that runs, so --rev is honoured) with --set
        applied; asked once per run, in a process of its own."""
        if CeiloRPC._settings is None:
            res = subprocess.run(
                [PY, "-c", _SETTINGS], env=CHILD_ENV, cwd=tempfile.gettempdir(),
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            try:
                out = json.loads(res.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                out = {"error": (res.stderr or "no output")[-300:]}
            for values in parse_overrides(self.bench.args.set or []).values():
                for k, v in values.items():
                    out[k] = f"{v} (--set)"
            CeiloRPC._settings = out
        return dict(CeiloRPC._settings)
