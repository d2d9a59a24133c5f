"""Stage 0: where alarms come in.

``rpc`` serves the ``notify_alarm`` casts of alarm evaluators; with
``[alarm] notification_listener`` set, ``notifications`` also consumes the
``alarm.update`` notifications aodh's evaluator emits. Both hand what they
receive to ``intake`` for validation and to the engine, and neither lets a
caller's error escape to oslo.messaging.
"""
