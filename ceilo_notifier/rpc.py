"""RPC plumbing shared by the service and its callers, and the client library.

``RPCAlarmNotifier`` is what an alarm evaluator imports to cast
``notify_alarm`` the way ceilometer's evaluator always has.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import oslo_messaging
from oslo_config import cfg
from oslo_log import log

from ceilo_notifier import opts

LOG = log.getLogger(__name__)

RPC_VERSION = "1.0"

STATE_ACTIONS = {
    "alarm": "alarm_actions",
    "ok": "ok_actions",
    "insufficient data": "insufficient_data_actions",
}


def register_client_opts(conf: cfg.ConfigOpts) -> None:
    """Register what ``RPCAlarmNotifier`` reads on the caller's conf: the topic and the transport.

    An evaluator passes its own ConfigOpts, which knows nothing of
    ceilo-notifier; like every oslo library, the client registers its own
    options there (registering the same option twice is harmless).
    """
    conf.register_opts(opts.CLIENT_OPTS, group="alarm")
    opts.register_messaging_opts(conf)


def get_transport(conf: cfg.ConfigOpts) -> oslo_messaging.Transport:
    return oslo_messaging.get_rpc_transport(conf)


def get_target(conf: cfg.ConfigOpts, server: str | None = None) -> oslo_messaging.Target:
    return oslo_messaging.Target(
        topic=conf.alarm.notifier_rpc_topic, server=server, version=RPC_VERSION
    )


def _field(alarm: Any, name: str, default: Any = None) -> Any:
    if isinstance(alarm, Mapping):
        return alarm.get(name, default)
    return getattr(alarm, name, default)


class RPCAlarmNotifier:
    """Casts ``notify_alarm`` for an alarm that changed state."""

    def __init__(self, conf: cfg.ConfigOpts, transport: oslo_messaging.Transport | None = None):
        register_client_opts(conf)
        self._own_transport = transport is None
        self.transport = transport or get_transport(conf)
        self.client = oslo_messaging.get_rpc_client(self.transport, get_target(conf))

    def notify(
        self,
        alarm: Any,
        previous: str | None,
        reason: str | None,
        reason_data: dict[str, Any] | None,
    ) -> bool:
        """Cast notify_alarm for alarm's new state; False when it has no actions for it."""
        state = _field(alarm, "state")
        actions = _field(alarm, STATE_ACTIONS.get(state, ""), None) or []
        alarm_id = _field(alarm, "alarm_id")
        if not actions:
            LOG.debug("Alarm %s has no actions for state %s; nothing cast", alarm_id, state)
            return False
        self.client.cast(
            {},
            "notify_alarm",
            data={
                "actions": list(actions),
                "alarm_id": alarm_id,
                "alarm_name": _field(alarm, "name"),
                "severity": _field(alarm, "severity"),
                "previous": previous,
                "current": state,
                "reason": str(reason) if reason is not None else None,
                "reason_data": reason_data or {},
            },
        )
        return True

    def cast(self, data: dict[str, Any], server: str | None = None, fanout: bool = False) -> None:
        """Cast a ready-made ``data`` dict, optionally to one host or to every instance."""
        client = self.client
        if server or fanout:
            client = client.prepare(server=server, fanout=fanout)
        client.cast({}, "notify_alarm", data=data)

    def close(self) -> None:
        if self._own_transport:
            self.transport.cleanup()
