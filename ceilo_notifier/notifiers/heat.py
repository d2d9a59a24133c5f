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
(``[service_types] heat``, default ``orchestration``). The requests are the
ones python-heatclient 5.3.0 makes for ``resources.list``,
``resources.mark_unhealthy`` and ``stacks.update(existing=True)`` (same
methods, paths, query strings, bodies and JSON headers; only the User-Agent
names this service), sent through the service's keystoneauth session
(bounded by ``[alarm] rest_notifier_timeout``), which follows Heat's
redirects and fetches a new token when Heat refuses one. The attempt is
blocking and runs in the plugin pool. A member not found in the stack is
logged; when none is, the delivery fails, since nothing was healed.
"""

from __future__ import annotations

import json
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


class HeatError(Exception):
    """Heat answered with an error, or not as its API does."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _answer(resp: Any) -> str:
    """The message of Heat's error body (its fault middleware's), else the start of the text."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if body.get("explanation") or body.get("title"):
            return str(body.get("explanation") or body.get("title"))
    return resp.text or getattr(resp, "reason", "") or ""


def _heat_error(exc: HeatError, step: str) -> notifiers.DeliveryError:
    text = masking.mask_text(str(exc)[:200])
    if exc.status is not None:
        return notifiers.status_error(
            f"Heat answered HTTP {exc.status} to {step}: {text}", exc.status
        )
    return notifiers.DeliveryError(f"Heat call failed at {step}: {text}")


class HeatClient:
    """The three calls of Heat's orchestration API v1 that autohealing needs.

    Each sends what python-heatclient sends for the same call: JSON
    ``Accept`` and ``Content-Type``, the path relative to the catalog's
    endpoint (the stack id as given: Heat answers a redirect to the stack's
    canonical ``{name}/{id}`` path, which keystoneauth follows), the query
    in heatclient's order and the body as heatclient encodes it.
    """

    HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}
    USER_AGENT = "ceilo-notifier"

    def __init__(self, session: Any, auth: Any, endpoint: str) -> None:
        self.session = session
        self.auth = auth
        self.endpoint = endpoint.rstrip("/")

    def _request(self, method: str, path: str, body: Any = None, redirect: bool = True) -> Any:
        # keystoneauth follows up to 30 redirects by default (heatclient's calls
        # too); redirect=False returns the redirect itself.
        extra = {} if redirect else {"redirect": False}
        resp = self.session.request(
            f"{self.endpoint}{path}",
            method,
            auth=self.auth,
            headers=dict(self.HEADERS),
            user_agent=self.USER_AGENT,
            data=None if body is None else json.dumps(body),
            raise_exc=False,
            **extra,
        )
        # heatclient raises for 300 and for every status from 400 on; a redirect
        # keystoneauth did not follow (no Location) is no answer either.
        if resp.status_code >= 400 or resp.status_code == 300:
            raise HeatError(_answer(resp), resp.status_code)
        if resp.status_code >= 300 and redirect:
            raise HeatError(f"redirect without a Location: {_answer(resp)}", resp.status_code)
        return resp

    def list_resources(self, stack_id: str, physical_resource_id: str) -> list[dict]:
        """GET /stacks/{stack_id}/resources?physical_resource_id=...&nested_depth=3"""
        query = parse.urlencode(
            {"physical_resource_id": physical_resource_id, "nested_depth": NESTED_DEPTH}, True
        )
        resp = self._request("GET", f"/stacks/{_segment(stack_id)}/resources?{query}")
        try:
            resources = resp.json()["resources"]
        except (ValueError, KeyError, TypeError):
            raise HeatError("the answer is not a list of resources") from None
        if not isinstance(resources, list):
            raise HeatError("the answer is not a list of resources")
        return [r for r in resources if isinstance(r, dict)]

    def _canonical(self, stack_id: str) -> str:
        """{name}/{id} of a stack, from the Location of Heat's lookup (not followed)."""
        resp = self._request("GET", f"/stacks/{_segment(stack_id)}", redirect=False)
        location = resp.headers.get("location")
        if not location or "/stacks/" not in location:
            raise HeatError("Location not returned with redirect")
        return location.split("/stacks/", 1)[1]

    def mark_unhealthy(self, stack_id: str, resource: str, reason: str) -> None:
        """GET /stacks/{stack_id} (the redirect's Location), then
        PATCH /stacks/{name}/{id}/resources/{resource} {"mark_unhealthy": true, ...}"""
        stack = self._canonical(stack_id)
        self._request(
            "PATCH",
            f"/stacks/{parse.quote(stack)}/resources/{parse.quote(resource)}",
            {"mark_unhealthy": True, "resource_status_reason": reason},
        )

    def update_existing(self, stack_id: str) -> None:
        """PATCH /stacks/{stack_id} {}: an update that keeps the template and parameters."""
        self._request("PATCH", f"/stacks/{_segment(stack_id)}", {})


def _segment(value: str) -> str:
    """A stack id from reason_data as one path segment (heatclient sends it unquoted;
    a uuid or a stack name is the same either way, a '/' or '?' is not let through)."""
    return parse.quote(value, safe="")


class _Calls:
    """Heat calls of one attempt: each within the attempt's budget, each failure mapped."""

    def __init__(self, trust: str, budget: notifiers.Budget) -> None:
        self.trust = trust
        self.budget = budget

    def __call__(self, step: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        self.budget.check(step)
        try:
            return call(*args, **kwargs)
        except HeatError as exc:
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

    def client(self, trust: str) -> HeatClient:
        try:
            auth = self.keystone.auth(trust)
            endpoint = self.keystone.endpoint(auth, self.conf.service_types.heat)
        except (keystone.NotConfigured, ka_exceptions.ClientException) as exc:
            raise trust_notifier.keystone_error(exc, trust) from None
        return HeatClient(self.keystone.session, auth, endpoint)

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
                heat.list_resources,
                stack_id,
                member,
            )
            parent = found[0].get("parent_resource") if found else None
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
                heat.mark_unhealthy,
                asg_id,
                resource,
                REASON,
            )
            LOG.info(
                "Alarm %s: resource %s of group %s marked unhealthy", alarm_id, resource, asg_id
            )
        calls("the stack update", heat.update_existing, stack_id)
        LOG.info(
            "Alarm %s: stack %s updated to replace %d members", alarm_id, stack_id, len(unhealthy)
        )

    def close(self) -> None:
        self.keystone.close()
