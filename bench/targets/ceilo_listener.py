"""ceilo-notifier fed as aodh's evaluator feeds aodh-notifier: alarm.update notifications.

The same service as the ceilo-rpc target, with ``[alarm]
notification_listener = true`` on exchange ``aodh``, topic ``alarming``.
"""

from __future__ import annotations

from common import NOTIFICATION_TOPIC

from targets.ceilo_rpc import CeiloRPC


class CeiloListener(CeiloRPC):
    name = "ceilo-listener"
    title = "ceilo-notifier, alarm.update notifications"
    order = 30
    feed_mode = "notification"
    topic = NOTIFICATION_TOPIC
    listener = True
