"""Versioned notification payloads (after Nova's versioned notifications).

Consumers rely on the contract: a payload's version changes if and only if
its data changes — minor for added fields, major for removed or changed
ones. ``tests/test_payloads.py`` holds a fingerprint of every class here.

Payload classes are kept in a registry of their own (``PAYLOADS``), apart
from oslo.versionedobjects' global registry: they are published, never
received back as objects.
"""

from __future__ import annotations

from oslo_versionedobjects import base, fields

from ceilo_notifier import events

PAYLOADS: dict[str, list[type[base.VersionedObject]]] = {}


def register_payload(cls: type[base.VersionedObject]) -> type[base.VersionedObject]:
    base.VersionedObjectRegistry.register_if(False)(cls)
    PAYLOADS.setdefault(cls.obj_name(), []).append(cls)
    return cls


class NotificationPayloadBase(base.VersionedObject):
    OBJ_SERIAL_NAMESPACE = "ceilo_notifier_object"
    OBJ_PROJECT_NAMESPACE = "ceilo_notifier"

    def to_primitive(self) -> dict:
        """The serialised payload, without the change list consumers do not need."""
        self.obj_reset_changes(recursive=True)
        return self.obj_to_primitive()


@register_payload
class AlarmActionPayload(NotificationPayloadBase):
    """The outcome of one delivery of an alarm transition to one action."""

    # Version 1.0: initial version
    VERSION = "1.0"

    fields = {
        "alarm_id": fields.StringField(),
        "alarm_name": fields.StringField(nullable=True),
        "severity": fields.StringField(nullable=True),
        "previous": fields.StringField(nullable=True),
        "current": fields.StringField(nullable=True),
        "action": fields.StringField(),
        "scheme": fields.StringField(nullable=True),
        "outcome": fields.EnumField(valid_values=list(events.OUTCOMES)),
        "attempts": fields.IntegerField(),
        "status_code": fields.IntegerField(nullable=True),
        "duration": fields.FloatField(nullable=True),
        "error": fields.StringField(nullable=True),
        "request_id": fields.StringField(nullable=True),
    }

    @classmethod
    def from_event(cls, event: events.DeliveryEvent) -> AlarmActionPayload:
        return cls(
            alarm_id=event.alarm_id or "",
            alarm_name=event.alarm_name,
            severity=event.severity,
            previous=event.previous,
            current=event.current,
            action=event.action,
            scheme=event.scheme,
            outcome=event.outcome,
            attempts=event.attempt,
            status_code=event.status_code,
            duration=event.duration,
            error=event.error,
            request_id=event.request_id,
        )
