"""``trust+heat://TRUST_ID@``: heal an autoscaling group, as aodh's autohealing does.

aodh's ``loadbalancer_member_health`` evaluator raises the alarm with
``reason_data`` naming the Heat stack (``stack_id``), its autoscaling group
(``asg_id``, the group's nested stack) and the load balancer members that
failed (``unhealthy_members``: ``[{"id": <Octavia member id>}, …]``). With
a token of the user's trust, for each member this finds the resource whose
physical id is the member's (up to three stacks deep), marks the group's
member that holds it unhealthy, then updates the stack in place
(``existing=True``) so that Heat replaces what was marked.

Heat is found in the Keystone catalog that the trust's token carries
(``[service_types] heat``, default ``orchestration``). The calls are
python-heatclient's, through the service's keystoneauth session (bounded by
``[alarm] rest_notifier_timeout``); the attempt is blocking and runs in the
plugin pool. A member not found in the stack is logged; when none is, the
delivery fails, since nothing was healed.
"""

from __future__ import annotations

from typing import Any
from urllib import parse

from keystoneauth1 import exceptions as ka_exceptions
from oslo_config import cfg
from oslo_log import log

from ceilo_notifier import keystone, masking, notifiers
from ceilo_notifier.notification import AlarmNotification
from ceilo_notifier.notifiers import trust as trust_notifier

LOG = log.getLogger(__name__)

NESTED_DEPTH = 3
# Members healed by one transition; a flood of them must not hold a thread for ever.
MAX_MEMBERS = 50
REASON = "unhealthy load balancer member"


def _members(reason_data: dict[str, Any]) -> tuple[str, str, list[str]]:
    """(stack_id, asg_id, member ids) from the alarm's reason_data, or the delivery error."""
    missing = [key for key in ("stack_id", "asg_id") if not reason_data.get(key)]
    if missing:
        raise notifiers.DeliveryError(
            "reason_data has no " + " and no ".join(missing) + ": trust+heat:// needs the stack "
            "and its autoscaling group (from the loadbalancer_member_health evaluator)"
        )
    members = reason_data.get("unhealthy_members")
    if not members:
        # Refused here, before any Keystone or Heat call: there is nothing to heal.
        raise notifiers.DeliveryError(
            "reason_data has no unhealthy_members: trust+heat:// needs the load balancer "
            'members to heal ([{"id": <member id>}, ...])'
        )
    if not isinstance(members, list) or not all(
        isinstance(m, dict) and m.get("id") for m in members
    ):
        raise notifiers.DeliveryError(
            'reason_data unhealthy_members is not a list of {"id": <member id>}'
        )
    ids = list(dict.fromkeys(str(m["id"]) for m in members))
    return str(reason_data["stack_id"]), str(reason_data["asg_id"]), ids


def _heat_error(exc: Exception, step: str) -> notifiers.DeliveryError:
    status = getattr(exc, "code", None)
    text = masking.mask_text(str(exc)[:200])
    if isinstance(status, int):
        return notifiers.status_error(f"Heat answered HTTP {status} to {step}: {text}", status)
    return notifiers.DeliveryError(f"Heat call failed at {step}: {text}")


class _Calls:
    """Heat calls of one attempt: each within the attempt's budget, each failure mapped."""

    def __init__(self, trust: str, budget: notifiers.Budget) -> None:
        self.trust = trust
        self.budget = budget

    def __call__(self, step: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        from heatclient import exc as heat_exc

        self.budget.check(step)
        try:
            return call(*args, **kwargs)
        except heat_exc.BaseException as exc:
            raise _heat_error(exc, step) from None
        except ka_exceptions.ConnectionError as exc:
            raise notifiers.RetryableError(f"Heat unreachable at {step}: {exc}") from None
        except ka_exceptions.ClientException as exc:
            raise trust_notifier.keystone_error(exc, self.trust) from None


class TrustHeatAlarmNotifier(notifiers.AlarmNotifier):
    """Marks the failed members of an autoscaling group unhealthy and updates the stack."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self.keystone = keystone.TrustTokens(conf, default_timeout=conf.alarm.rest_notifier_timeout)

    @classmethod
    def validate(cls, action: parse.SplitResult) -> None:
        if action.netloc.rpartition("@")[2] or action.path.strip("/") or action.query:
            raise ValueError(
                "trust+heat:// takes no host, path or query: the alarm's "
                "reason_data names the stack"
            )

    def client(self, trust: str) -> Any:
        from heatclient import client as heat_client  # heavy: only where Heat is used

        try:
            auth = self.keystone.auth(trust)
            endpoint = self.keystone.endpoint(auth, self.conf.service_types.heat)
        except (keystone.NotConfigured, ka_exceptions.ClientException) as exc:
            raise trust_notifier.keystone_error(exc, trust) from None
        return heat_client.Client(
            "1", session=self.keystone.session, auth=auth, endpoint_override=endpoint
        )

    def notify(self, action: parse.SplitResult, notification: AlarmNotification) -> None:
        stack_id, asg_id, members = _members(notification.reason_data or {})
        alarm_id = notification.alarm_id
        if len(members) > MAX_MEMBERS:
            LOG.warning(
                "Alarm %s: %d unhealthy members, more than %d; the first %d are healed now",
                alarm_id,
                len(members),
                MAX_MEMBERS,
                MAX_MEMBERS,
            )
            members = members[:MAX_MEMBERS]
        trust = trust_notifier.trust_id(action)
        heat = self.client(trust)
        timeout = self.keystone.session.timeout or self.conf.alarm.rest_notifier_timeout
        calls = _Calls(trust, self.budget(timeout))
        unhealthy, missing = [], []
        for member in members:
            found = calls(
                "the resource listing",
                heat.resources.list,
                stack_id,
                nested_depth=NESTED_DEPTH,
                filters={"physical_resource_id": member},
            )
            parent = getattr(found[0], "parent_resource", None) if found else None
            if parent:
                unhealthy.append(parent)
            else:
                missing.append(member)
        if missing:
            LOG.warning(
                "Alarm %s: %d of %d unhealthy members are not in a group of stack %s: %s",
                alarm_id,
                len(missing),
                len(members),
                stack_id,
                ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else ""),
            )
        if not unhealthy:
            raise notifiers.DeliveryError(
                f"none of the {len(members)} unhealthy members is a resource of stack {stack_id}"
            )
        for resource in dict.fromkeys(unhealthy):
            calls(
                f"marking {resource} unhealthy",
                heat.resources.mark_unhealthy,
                asg_id,
                resource,
                True,
                REASON,
            )
            LOG.info(
                "Alarm %s: resource %s of group %s marked unhealthy", alarm_id, resource, asg_id
            )
        calls("the stack update", heat.stacks.update, stack_id, existing=True)
        LOG.info(
            "Alarm %s: stack %s updated to replace %d members", alarm_id, stack_id, len(unhealthy)
        )

    def close(self) -> None:
        self.keystone.close()
