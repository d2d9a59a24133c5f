"""``trust+heat://TRUST_ID@``: autohealing through Heat with a Keystone trust.

Keystone is the real one (``real_keystone``, see ``tests/keystone``). Heat
cannot run here: ``tests/heat.py`` is a local stand-in for its orchestration
REST API, which authenticates every request against that Keystone and is in
its catalog as ``orchestration``. The engine and the plugin run in the test
process, as in test_trust.

Every request to Heat costs a token validation by the real Keystone (a
fraction of a second), so the tests use few members and few requests.
"""

from __future__ import annotations

import logging
import uuid
from urllib import parse

import pytest

from ceilo_notifier import events

# Installing Keystone the first time takes a minute or two, inside the first
# test that needs it, whichever runs first: every test here uses it.
pytestmark = pytest.mark.timeout(900)


def heat_action(trust_id: str) -> str:
    return f"trust+heat://{trust_id}@"


def reason_data(stack: dict, member_ids: list[str]) -> dict:
    """What aodh's loadbalancer_member_health evaluator puts in reason_data."""
    return {
        "stack_id": stack["stack_id"],
        "asg_id": stack["asg_id"],
        "unhealthy_members": [{"id": m} for m in member_ids],
    }


def member_ids(stack: dict, count: int) -> list[str]:
    return [m["member_id"] for m in stack["members"][:count]]


@pytest.fixture
def run(keystone_runs, real_keystone):
    def make(**alarm_opts):
        return keystone_runs(real_keystone, **alarm_opts)

    return make


@pytest.fixture
def heat_calls(heat):
    """The requests Heat receives from here on: (method, path, query, headers)."""
    start = len(heat.requests)

    def calls() -> list[tuple[str, str, dict, dict]]:
        made = []
        for method, url, headers in heat.requests[start:]:
            split = parse.urlsplit(url)
            lowered = {k.lower(): v for k, v in headers.items()}
            made.append((method, split.path, parse.parse_qs(split.query), lowered))
        return made

    return calls


def service_log(caplog) -> str:
    """The captured log lines of the service, without the Heat stand-in's.

    The stand-in validates each token with Keystone's admin API, in the
    threads that serve its requests: keystoneauth's debug lines there (token
    bodies, trust ids included) are Heat's, as they would be in Heat's log.
    """
    return "\n".join(
        f"{r.name} {r.getMessage()}"
        for r in caplog.records
        if "process_request_thread" not in r.threadName
    )


def error_lines(caplog, alarm_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and alarm_id in r.getMessage()
    ]


def test_unhealthy_members_are_marked_and_the_stack_updated(
    run, real_keystone, heat, heat_calls, caplog
):
    caplog.set_level(logging.INFO)
    trust_id = real_keystone.create_trust()
    stack = heat.add_autohealing_stack(real_keystone.project_id, members=3)
    sick = member_ids(stack, 2)
    r = run()
    (d,) = r.deliver(
        [heat_action(trust_id)], alarm_id="heal-me", reason_data=reason_data(stack, sick)
    )
    assert r.outcomes(d) == [events.DELIVERED], d.error
    # Each member's resource was looked up three stacks deep by its physical id...
    # (each call is first sent to .../stacks/ID, which Heat redirects to .../stacks/NAME/ID)
    resources = f"/stacks/{stack['stack_name']}/{stack['stack_id']}/resources"
    listings = [q for m, path, q, _ in heat_calls() if m == "GET" and path.endswith(resources)]
    assert [q["physical_resource_id"] for q in listings] == [[m] for m in sick]
    assert {q["nested_depth"][0] for q in listings} == {"3"}  # as aodh: three stacks deep
    # ...its member of the group marked unhealthy, then the stack updated in place once.
    assert heat.marked_unhealthy(stack["asg_id"]) == [
        (m["parent_resource"], "unhealthy load balancer member") for m in stack["members"][:2]
    ]
    (update,) = heat.updates(stack["stack_id"])
    assert update == {}  # PATCH with an empty body: Heat's update with existing=True
    assert [m for m, path, _, _ in heat_calls() if stack["stack_id"] in path][-1] == "PATCH"
    # Every request carried a token of the trust, acting in the trustor's project.
    tokens = {headers.get("x-auth-token") for *_, headers in heat_calls()}
    for token in tokens:
        body = real_keystone.validate(token) if token else None
        assert body is not None, "Heat got a request without a token Keystone knows"
        assert body["OS-TRUST:trust"]["id"] == trust_id
        assert body["project"]["id"] == real_keystone.project_id
    assert "Alarm heal-me: stack " + stack["stack_id"] + " updated to replace 2 members" in (
        caplog.text
    )
    assert trust_id not in caplog.text and trust_id not in d.masked_action


@pytest.mark.parametrize(
    ("data", "cause"),
    [
        pytest.param({}, "reason_data has no stack_id and no asg_id", id="nothing"),
        pytest.param(
            {"asg_id": "g", "unhealthy_members": [{"id": "m"}]}, "has no stack_id", id="no-stack"
        ),
        pytest.param(
            {"stack_id": "s", "unhealthy_members": [{"id": "m"}]}, "has no asg_id", id="no-group"
        ),
        pytest.param(
            {"stack_id": "s", "asg_id": "g", "unhealthy_members": "m"},
            'unhealthy_members is not a list of {"id": <member id>}',
            id="members-not-a-list",
        ),
        pytest.param(
            {"stack_id": "s", "asg_id": "g", "unhealthy_members": ["m"]},
            'unhealthy_members is not a list of {"id": <member id>}',
            id="members-not-dicts",
        ),
        pytest.param(
            {"stack_id": "s", "asg_id": "g", "unhealthy_members": [{"name": "m"}]},
            'unhealthy_members is not a list of {"id": <member id>}',
            id="members-without-id",
        ),
        pytest.param(
            {"stack_id": "s", "asg_id": "g", "unhealthy_members": []},
            "reason_data has no unhealthy_members",
            id="no-members",
        ),
    ],
)
def test_bad_reason_data_fails_that_action_only(
    run, real_keystone, heat_calls, webhook, caplog, data, cause
):
    caplog.set_level(logging.INFO)
    trust_id = uuid.uuid4().hex  # never asked for: the input is refused first
    alarm_id = f"bad-{uuid.uuid4().hex[:8]}"
    url = webhook.url("ok")
    r = run(rest_notifier_max_retries=3)
    bad, good = r.deliver([heat_action(trust_id), url], alarm_id=alarm_id, reason_data=data)
    assert r.outcomes(bad) == [events.FAILED] and bad.attempt == 1
    assert cause in bad.error
    (line,) = error_lines(caplog, alarm_id)
    assert cause in line and "trust+heat://***@" in line
    assert heat_calls() == [] and real_keystone.trust_auths(trust_id) == 0
    # The other action of the same alarm went out.
    assert good.outcome == events.DELIVERED
    (request,) = webhook.requests_for(url)
    assert request.json()["alarm_id"] == alarm_id
    assert trust_id not in caplog.text


def test_members_not_in_the_stack_fail_the_delivery(run, real_keystone, heat, caplog):
    caplog.set_level(logging.INFO)
    trust_id = real_keystone.create_trust()
    stack = heat.add_autohealing_stack(real_keystone.project_id, members=2)
    stranger = str(uuid.uuid4())
    r = run()
    (d,) = r.deliver(
        [heat_action(trust_id)], alarm_id="strangers", reason_data=reason_data(stack, [stranger])
    )
    assert r.outcomes(d) == [events.FAILED] and d.attempt == 1
    assert f"none of the 1 unhealthy members is a resource of stack {stack['stack_id']}" in (
        d.error
    )
    assert (
        f"Alarm strangers: 1 of 1 unhealthy members are not in a group of stack "
        f"{stack['stack_id']}: {stranger}"
    ) in caplog.text
    assert heat.marked_unhealthy(stack["asg_id"]) == []
    assert heat.updates(stack["stack_id"]) == []


def test_heat_unavailable_is_retried_then_delivered(run, real_keystone, heat, caplog):
    caplog.set_level(logging.INFO)
    trust_id = real_keystone.create_trust()
    stack = heat.add_autohealing_stack(real_keystone.project_id, members=1)
    r = run(rest_notifier_max_retries=2)
    heat.fail_next(503, 1)
    (d,) = r.deliver(
        [heat_action(trust_id)],
        alarm_id="flaky-heat",
        reason_data=reason_data(stack, member_ids(stack, 1)),
    )
    assert r.outcomes(d) == [events.RETRYING, events.DELIVERED]
    (retrying,) = [e for e in r.events if e.outcome == events.RETRYING]
    assert "Heat answered HTTP 503 to the resource listing" in retrying.error
    assert "Alarm flaky-heat: attempt 1 to trust+heat://***@ failed: Heat answered HTTP 503" in (
        caplog.text
    )
    assert len(heat.marked_unhealthy(stack["asg_id"])) == 1
    assert len(heat.updates(stack["stack_id"])) == 1


def test_an_attempt_that_would_outlast_its_deadline_ends_as_retryable(run, real_keystone, heat):
    """plugin_timeout 6 s and 10 s per request: after the first request there is no
    time for another, so the attempt ends, retryable, before the engine would abandon
    it (an abandoned attempt is failed while its thread runs on)."""
    trust_id = real_keystone.create_trust()
    stack = heat.add_autohealing_stack(real_keystone.project_id, members=2)
    r = run(plugin_timeout=6, rest_notifier_timeout=10, rest_notifier_max_retries=1)
    (d,) = r.deliver([heat_action(trust_id)], reason_data=reason_data(stack, member_ids(stack, 2)))
    assert r.outcomes(d) == [events.RETRYING, events.FAILED], d.error
    assert all("attempt out of time before the resource listing" in e.error for e in r.events)
    assert "did not return within" not in d.error
    assert heat.updates(stack["stack_id"]) == []


def test_an_unknown_stack_fails_at_once_with_heats_message(run, real_keystone, heat, heat_calls):
    trust_id = real_keystone.create_trust()
    stack = heat.add_autohealing_stack(real_keystone.project_id, members=1)
    gone = str(uuid.uuid4())
    data = {**reason_data(stack, member_ids(stack, 1)), "stack_id": gone}
    r = run(rest_notifier_max_retries=3)
    (d,) = r.deliver([heat_action(trust_id)], reason_data=data)
    assert r.outcomes(d) == [events.FAILED] and d.attempt == 1
    assert "Heat answered HTTP 404 to the resource listing" in d.error
    assert f"The Stack ({gone}) could not be found" in d.error
    assert len(heat_calls()) == 1
    assert heat.marked_unhealthy(stack["asg_id"]) == []


def test_a_deleted_trust_fails_with_keystones_refusal_and_stays_masked(
    run, real_keystone, heat, heat_calls, caplog
):
    caplog.set_level(logging.DEBUG)
    stack = heat.add_autohealing_stack(real_keystone.project_id, members=1)
    data = reason_data(stack, member_ids(stack, 1))
    fresh, used = real_keystone.create_trust(), real_keystone.create_trust()
    caplog.clear()  # the test's own Keystone calls quote the trust ids
    r = run(rest_notifier_max_retries=3)
    # A token of `used` is cached, with a first call to Heat (an unknown stack: one request).
    (d,) = r.deliver([heat_action(used)], reason_data={**data, "stack_id": str(uuid.uuid4())})
    assert "HTTP 404" in d.error and len(heat_calls()) == 1
    logged = service_log(caplog)
    real_keystone.delete_trust(fresh)
    real_keystone.delete_trust(used)
    caplog.clear()  # as above

    (never_used, revoked) = r.deliver([heat_action(fresh), heat_action(used)], reason_data=data)
    # Never used: Keystone refuses its token, Heat is not called.
    assert r.outcomes(never_used) == [events.FAILED] and never_used.attempt == 1
    assert "Keystone refused the token request for the trust" in never_used.error
    # Used: Heat refuses the revoked token, a new one is refused by Keystone.
    assert r.outcomes(revoked) == [events.FAILED] and revoked.attempt == 1
    assert "Keystone refused the token request for the trust" in revoked.error
    assert len(heat_calls()) == 2  # the revoked token's request only
    assert heat.marked_unhealthy(stack["asg_id"]) == []
    logged += service_log(caplog)
    assert "keystoneauth.session REQ: curl" in logged  # the service's own debug lines are in
    for trust_id in (fresh, used):
        assert trust_id not in logged
        for event in r.events:
            assert trust_id not in str(event)
    assert logged.count("failed after 1 attempt(s): Keystone") == 2
