"""``jsonlines``: append every delivery event to a file, one JSON object per line.

Enable with ``[DEFAULT] event_dispatchers = jsonlines`` (repeat the option to
keep ``database`` too) and set ``[jsonlines_dispatcher] path``.
"""

from __future__ import annotations

import json
import logging
import threading

from oslo_config import cfg

from ceilo_notifier import dispatchers, events

OPTS = [
    cfg.StrOpt(
        "path",
        default="/var/log/ceilo-notifier/events.jsonl",
        help="File the events are appended to.",
    )
]


class JsonLinesBackend(dispatchers.EventBackend):
    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        conf.register_opts(OPTS, group="jsonlines_dispatcher")
        self._lock = threading.Lock()
        self._file = None

    def start(self) -> None:
        self._file = open(self.conf.jsonlines_dispatcher.path, "a", encoding="utf-8")

    def dump(self, level: int, event: events.DeliveryEvent) -> None:
        line = json.dumps({"level": logging.getLevelName(level), **event.as_dict()})
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def stop(self) -> None:
        if self._file is not None:
            self._file.close()
