"""A stand-in for Heat's orchestration REST API (v1), served on 127.0.0.1.

Heat cannot run in the test environment, so the ``trust+heat://`` tests talk
to this server instead. It answers the requests python-heatclient 5.3.0 makes
for aodh's auto-healing sequence the way Heat's API and engine do (routes,
statuses, redirects, bodies and error bodies were taken from Heat's
``heat/api/openstack/v1`` and ``heat/engine/service.py``):

* every request is authenticated like keystonemiddleware's ``auth_token``
  does it: ``X-Auth-Token`` is validated against the real Keystone of the
  test run; a missing or invalid token answers 401 with its body and
  ``WWW-Authenticate``. A token whose project is not the ``{tenant_id}`` of
  the URL answers 403 (a trust-scoped token is scoped to the trustor's
  project);
* ``/v1/{tenant_id}/stacks/{name or id}`` (any method) and ``.../resources``
  (GET, POST) look the stack up by id or name and answer 302 with its
  canonical ``Location`` (``.../stacks/{stack_name}/{stack_id}...``, query kept);
  an unknown stack answers 404 ``EntityNotFound``;
* ``GET .../stacks/{name}/{id}/resources`` with ``nested_depth`` (at most 5)
  and the filters ``physical_resource_id``, ``name``, ``type``, ``status``,
  ``action`` and ``id``, as query parameters: the resources of the stack, then
  of its nested stacks depth first, each with ``parent_resource`` when its stack
  is nested, ``links`` (self, stack, nested) and no ``stack_name`` (Heat drops
  it); unknown parameters answer 400;
* ``GET .../resources/{resource_name}``: the resource, in detail;
* ``PATCH .../resources/{resource_name}`` with ``mark_unhealthy`` and
  ``resource_status_reason`` (the resource found by name or physical id):
  ``CHECK_FAILED``, or back to ``CHECK_COMPLETE``; 200 with ``null``;
* ``PATCH .../stacks/{name}/{id}`` (an update with ``existing``): 202. The
  update completes at once: the stack becomes ``UPDATE_COMPLETE`` and every
  ``CHECK_FAILED`` resource below it is replaced (new physical ids, and a new
  nested stack for a group member);
* Heat's error bodies: ``{"code", "title", "explanation", "error": {"type",
  "message", "traceback"}}`` from its fault middleware, webob's own bodies for
  paths no route matches (404), redirects and 202.

``fail_next(status)`` answers the next requests with that status and the
fault middleware's body (401: keystonemiddleware's), before authentication,
as a proxy or an overloaded Heat would.

Left out: creating, showing, deleting stacks and everything else of the API
(routes Heat has answer 501 here, so a test relying on them fails plainly),
policy rules beyond the project check, stack locks and actions in progress
(an update is never seen ``IN_PROGRESS``, so no 409), events, outputs,
templates, deleted stacks, the version document, and XML.

A stack of ``add_autohealing_stack`` is what aodh's auto-healing expects: an
``OS::Heat::AutoScalingGroup`` ``asg`` whose nested stack holds members that
are template resources (``lb_member.yaml``: a template resource is a nested
stack Heat lists with ``nested_depth``, which an ``OS::Heat::Stack`` is not),
each holding ``server`` (``OS::Nova::Server``) and ``member``
(``OS::Octavia::PoolMember``, its physical id the Octavia member id).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import http.server
import itertools
import json
import re
import threading
import uuid
from collections.abc import Iterator
from urllib import parse

MAX_NESTED_DEPTH = 5  # heat.conf max_nested_stack_depth, by default
MEMBER_TYPE = "lb_member.yaml"

# webob's titles and explanations, which Heat's fault middleware puts in its bodies.
_WEBOB = {
    400: (
        "Bad Request",
        "The server could not comply with the request since it is either malformed or "
        "otherwise incorrect.",
    ),
    401: (
        "Unauthorized",
        "This server could not verify that you are authorized to access the document you "
        "requested. Either you supplied the wrong credentials (e.g., bad password), or your "
        "browser does not understand how to supply the credentials required.",
    ),
    403: ("Forbidden", "Access was denied to this resource."),
    404: ("Not Found", "The resource could not be found."),
    405: ("Method Not Allowed", "The method %s is not allowed for this resource."),
    409: ("Conflict", "There was a conflict when trying to complete your request."),
    500: (
        "Internal Server Error",
        "The server has either erred or is incapable of performing the requested operation.",
    ),
    501: ("Not Implemented", "The request method %s is not implemented for this server."),
    502: ("Bad Gateway", "Bad gateway."),
    503: (
        "Service Unavailable",
        "The server is currently unavailable. Please try again at a later time.",
    ),
    504: ("Gateway Timeout", "The gateway has timed out."),
}
_WEBOB_CLASS = {
    400: "HTTPBadRequest",
    401: "HTTPUnauthorized",
    403: "HTTPForbidden",
    404: "HTTPNotFound",
    405: "HTTPMethodNotAllowed",
    409: "HTTPConflict",
    500: "HTTPInternalServerError",
    501: "HTTPNotImplemented",
    502: "HTTPBadGateway",
    503: "HTTPServiceUnavailable",
    504: "HTTPGatewayTimeout",
}
_UNAUTHENTICATED = {
    "error": {
        "code": 401,
        "title": "Unauthorized",
        "message": "The request you have made requires authentication.",
    }
}
_LOOKUP_GET = {"resources", "events", "template", "actions", "environment", "files"}
_LOOKUP_POST = {"resources", "events", "template", "actions"}
_LIST_PARAMS = {"type", "status", "name", "action", "id", "physical_resource_id"}

_EMPTY = object()  # an answer without a body

# Heat's v1 routes (heat/api/openstack/v1/__init__.py), group by group, in the
# order Heat connects them: (url, methods, controller action).
_ALL = ("GET", "POST", "PUT", "PATCH", "DELETE")
_STACK = "/stacks/{stack_name}/{stack_id}"
_ROUTE_GROUPS = (
    (
        ("/validate", ("POST",), "stacks.validate_template"),
        ("/resource_types", ("GET",), "stacks.list_resource_types"),
        ("/resource_types/{type_name}", ("GET",), "stacks.resource_schema"),
        ("/resource_types/{type_name}/template", ("GET",), "stacks.generate_template"),
        ("/template_versions", ("GET",), "stacks.list_template_versions"),
        (
            "/template_versions/{template_version}/functions",
            ("GET",),
            "stacks.list_template_functions",
        ),
        ("/stacks", ("GET",), "stacks.index"),
        ("/stacks", ("POST",), "stacks.create"),
        ("/stacks/preview", ("POST",), "stacks.preview"),
        ("/stacks/detail", ("GET",), "stacks.detail"),
        ("/stacks/{stack_name}", _ALL, "stacks.lookup"),
        ("/stacks/{stack_name:arn:.*}", _ALL, "stacks.lookup"),
        (
            "/stacks/{stack_name}/{path:resources|events|template|actions|environment|files}",
            ("GET",),
            "stacks.lookup",
        ),
        (
            "/stacks/{stack_name}/{path:resources|events|template|actions}",
            ("POST",),
            "stacks.lookup",
        ),
        (_STACK, ("GET",), "stacks.show"),
        (_STACK + "/template", ("GET",), "stacks.template"),
        (_STACK + "/environment", ("GET",), "stacks.environment"),
        (_STACK + "/files", ("GET",), "stacks.files"),
        (_STACK, ("PUT",), "stacks.update"),
        (_STACK, ("PATCH",), "stacks.update_patch"),
        (_STACK + "/preview", ("PUT",), "stacks.preview_update"),
        (_STACK + "/preview", ("PATCH",), "stacks.preview_update_patch"),
        (_STACK, ("DELETE",), "stacks.delete"),
        (_STACK + "/abandon", ("DELETE",), "stacks.abandon"),
        (_STACK + "/export", ("GET",), "stacks.export"),
        (_STACK + "/snapshots", ("POST",), "stacks.snapshot"),
        (_STACK + "/snapshots/{snapshot_id}", ("GET",), "stacks.show_snapshot"),
        (_STACK + "/snapshots/{snapshot_id}", ("DELETE",), "stacks.delete_snapshot"),
        (_STACK + "/snapshots", ("GET",), "stacks.list_snapshots"),
        (_STACK + "/snapshots/{snapshot_id}/restore", ("POST",), "stacks.restore_snapshot"),
        (_STACK + "/outputs", ("GET",), "stacks.list_outputs"),
        (_STACK + "/outputs/{output_key}", ("GET",), "stacks.show_output"),
    ),
    (
        (_STACK + "/resources", ("GET",), "resources.index"),
        (_STACK + "/resources/{resource_name}", ("GET",), "resources.show"),
        (_STACK + "/resources/{resource_name}/metadata", ("GET",), "resources.metadata"),
        (_STACK + "/resources/{resource_name}/signal", ("POST",), "resources.signal"),
        (_STACK + "/resources/{resource_name}", ("PATCH",), "resources.mark_unhealthy"),
    ),
    (
        (_STACK + "/events", ("GET",), "events.index"),
        (_STACK + "/resources/{resource_name}/events", ("GET",), "events.index"),
        (_STACK + "/resources/{resource_name}/events/{event_id}", ("GET",), "events.show"),
    ),
    ((_STACK + "/actions", ("POST",), "actions.action"),),
    (("/build_info", ("GET",), "build_info.build_info"),),
    (
        ("/software_configs", ("GET",), "software_configs.index"),
        ("/software_configs", ("POST",), "software_configs.create"),
        ("/software_configs/{config_id}", ("GET",), "software_configs.show"),
        ("/software_configs/{config_id}", ("DELETE",), "software_configs.delete"),
    ),
    (
        ("/software_deployments", ("GET",), "software_deployments.index"),
        (
            "/software_deployments/metadata/{server_id}",
            ("GET",),
            "software_deployments.metadata",
        ),
        ("/software_deployments", ("POST",), "software_deployments.create"),
        ("/software_deployments/{deployment_id}", ("GET",), "software_deployments.show"),
        ("/software_deployments/{deployment_id}", ("PUT",), "software_deployments.update"),
        ("/software_deployments/{deployment_id}", ("DELETE",), "software_deployments.delete"),
    ),
    (("/services", ("GET",), "services.index"),),
)
_MODELLED = {
    "stacks.lookup",
    "stacks.update_patch",
    "resources.index",
    "resources.show",
    "resources.mark_unhealthy",
}


def _compile(url: str) -> re.Pattern:
    def variable(m: re.Match) -> str:
        name, _, requirement = m.group(1).partition(":")
        return f"(?P<{name}>{requirement or '[^/]+'})"

    pattern = re.sub(r"\{([^}]+)\}", variable, "/{tenant_id}" + url)
    return re.compile(pattern + "$")


def _routes() -> list[tuple[re.Pattern, tuple[str, ...], str, str]]:
    """(pattern, methods, action, allowed methods) as Heat's mapper holds them, in order.

    Each group adds its routes, then for each of its URLs a ``reject`` (405)
    for the other methods and an ``options`` (204) route.
    """
    routes = []
    for group in _ROUTE_GROUPS:
        urls: dict[str, list[str]] = {}
        for url, methods, action in group:
            routes.append((_compile(url), methods, action, ",".join(methods)))
            urls.setdefault(url, []).extend(methods)
        for url, methods in urls.items():
            allowed = ",".join(methods)
            missing = tuple(m for m in ("HEAD", *_ALL) if m not in methods)
            routes.append((_compile(url), missing, "reject", allowed))
            routes.append((_compile(url), ("OPTIONS",), "options", allowed))
    return routes


_ROUTES = _routes()


def _match(method: str, path: str) -> tuple[tuple[str, str] | None, dict[str, str]]:
    """The first route matching (action, allowed methods) and its arguments."""
    for pattern, methods, action, allowed in _ROUTES:
        m = pattern.match(path)
        if m and method in methods:
            return (action, allowed), {k: parse.unquote(v) for k, v in m.groupdict().items()}
    return None, {}


def short_id() -> str:
    """A 12-character id as Heat makes them (heat.common.short_id)."""
    random_bits = uuid.uuid4().time  # the 60 random bits of a version 4 uuid
    return base64.b32encode((random_bits << 4).to_bytes(8, "big"))[:12].decode().lower()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _q(value: str) -> str:
    return parse.quote(value, "")


@dataclasses.dataclass
class _Resource:
    name: str
    type: str
    physical_id: str
    stack: _Stack
    db_id: int
    required_by: list[str] = dataclasses.field(default_factory=list)
    nested: _Stack | None = None
    action: str = "CREATE"
    status: str = "COMPLETE"
    reason: str = "state changed"
    created: str = dataclasses.field(default_factory=_now)
    updated: str | None = None


@dataclasses.dataclass
class _Stack:
    id: str
    name: str
    tenant: str
    parent_resource: str | None = None
    resources: dict[str, _Resource] = dataclasses.field(default_factory=dict)
    action: str = "CREATE"
    status: str = "COMPLETE"
    deleted: bool = False

    def path(self) -> str:
        return f"{_q(self.tenant)}/stacks/{_q(self.name)}/{_q(self.id)}"

    def iter_resources(self, depth: int, match) -> Iterator[_Resource]:
        """As heat.engine.stack.Stack.iter_resources: this stack's, then its nested stacks'."""
        yield from (r for r in self.resources.values() if match(r))
        if depth == 0:
            return
        for res in self.resources.values():
            if res.nested is not None:
                yield from res.nested.iter_resources(depth - 1, match)

    def find(self, name: str) -> _Resource | None:
        """By logical name, else by physical id (engine's _find_resource_in_stack)."""
        if name in self.resources:
            return self.resources[name]
        matches = [r for r in self.resources.values() if r.physical_id == name]
        return matches[0] if len(matches) == 1 else None


class _Error(Exception):
    """An answer other than success: status, body, extra headers."""

    def __init__(self, status: int, body: object, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def _fault(status: int, error_type: str | None = None, message: str | None = None) -> _Error:
    """Heat's fault middleware (heat.api.middleware.fault) body for an error."""
    title, explanation = _WEBOB.get(status, ("Error", "Error"))
    error = {"type": error_type or _WEBOB_CLASS.get(status, "HTTPError"), "traceback": None}
    if message is not None:  # Heat includes it for its own ("safe") exceptions only
        error["message"] = message
    body = {"code": status, "title": title, "explanation": explanation, "error": error}
    return _Error(status, body)


def _bad_request(message: str) -> _Error:
    return _fault(400, "HTTPBadRequest", message)


def _stack_not_found(name: str) -> _Error:
    return _fault(404, "EntityNotFound", f"The Stack ({name}) could not be found.")


def _no_route() -> _Error:
    # Heat's router returns webob's HTTPNotFound itself, outside the fault middleware.
    return _Error(
        404,
        {
            "message": "The resource could not be found.<br /><br />\n\n\n",
            "code": "404 Not Found",
            "title": "Not Found",
        },
    )


def _resource_not_found(name: str, stack: _Stack) -> _Error:
    message = f"The Resource ({name}) could not be found in Stack {stack.name}."
    return _fault(404, "ResourceNotFound", message)


def _extract_bool(name: str, value: object) -> bool:
    if str(value).lower() not in ("true", "false"):
        raise _bad_request(
            f'Unrecognized value "{value}" for "{name}", acceptable values are: true, false.'
        )
    return str(value).lower() == "true"


def _extract_int(name: str, value: str) -> int:
    try:
        result = int(value)
    except ValueError:
        raise _bad_request(f"Only integer is acceptable by '{name}'.") from None
    if result < 0:
        raise _bad_request(
            f"Value '{value}' is invalid for '{name}' which only accepts non-negative integer."
        )
    return result


def _parse_status(values: list[str]) -> tuple[set[str], set[str]]:
    """heat.engine.api._parse_object_status: ("CREATE_FAILED") -> ({"CREATE"}, {"FAILED"})."""
    actions, statuses = set(), set()
    for val in values:
        for s in ("COMPLETE", "FAILED", "IN_PROGRESS"):
            index = val.rfind(s)
            if index != -1:
                statuses.add(val[index:])
                if index > 1:
                    actions.add(val[: index - 1])
                break
    return actions, statuses


def _matcher(filters: dict[str, list[str]]):
    """The filters of a resource list, as the engine applies them."""
    filters = dict(filters)
    if "status" in filters:
        actions, statuses = _parse_status(filters["status"])
        filters["status"] = sorted(statuses)
        if actions:
            filters["action"] = sorted(set(filters.get("action", [])) | actions)
    type_filter = filters.pop("type", None)
    if type_filter is not None and len(type_filter) > 1:
        # The engine tests `list in str`: a TypeError, which Heat answers with 500.
        raise _fault(500, "TypeError", None)
    columns = {
        "physical_resource_id": lambda r: r.physical_id,
        "name": lambda r: r.name,
        "action": lambda r: r.action,
        "status": lambda r: r.status,
        "id": lambda r: str(r.db_id),
    }

    def match(res: _Resource) -> bool:
        for key, values in filters.items():
            if columns[key](res) not in values:
                return False
        # The engine keeps a resource when `type in res.type()`: a substring.
        return type_filter is None or type_filter[0] in res.type

    return match


class FakeHeat:
    """Heat's orchestration API for the tests; see the module docstring."""

    def __init__(self, keystone) -> None:
        self.keystone = keystone
        self.requests: list[tuple[str, str, dict]] = []
        self._lock = threading.RLock()
        self._stacks: dict[str, _Stack] = {}
        self._marked: dict[str, list[tuple[str, str]]] = {}
        self._updates: dict[str, list[dict]] = {}
        self._failures: list[int] = []
        self._numbers = itertools.count(1)
        self._db_ids = itertools.count(1)
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.heat = self
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1/%(project_id)s"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # -- what the tests use ----------------------------------------------------

    def add_autohealing_stack(self, project_id: str, members: int = 3) -> dict:
        with self._lock:
            top = self._stack(f"asg-stack-{next(self._numbers)}", project_id)
            asg = self._resource(top, "asg", "OS::Heat::AutoScalingGroup")
            group = self._nest(asg)
            made = []
            for _ in range(members):
                member = self._resource(group, short_id(), MEMBER_TYPE)
                made.append(
                    {"member_id": self._fill_member(member), "parent_resource": member.name}
                )
            return {
                "stack_id": top.id,
                "stack_name": top.name,
                "asg_id": group.id,
                "members": made,
            }

    def marked_unhealthy(self, stack_id: str) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._marked.get(stack_id, []))

    def updates(self, stack_id: str) -> list[dict]:
        with self._lock:
            return list(self._updates.get(stack_id, []))

    def resource_status(self, stack_id: str, resource_name: str) -> str:
        """The ``resource_status`` Heat would list for a resource of a stack."""
        with self._lock:
            res = self._stacks[stack_id].resources[resource_name]
            return f"{res.action}_{res.status}"

    def fail_next(self, status: int, count: int = 1) -> None:
        with self._lock:
            self._failures.extend([status] * count)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- the stacks --------------------------------------------------------------

    def _stack(self, name: str, tenant: str, parent_resource: str | None = None) -> _Stack:
        stack = _Stack(str(uuid.uuid4()), name, tenant, parent_resource)
        self._stacks[stack.id] = stack
        return stack

    def _resource(self, stack: _Stack, name: str, type_: str, physical_id: str = "") -> _Resource:
        res = _Resource(name, type_, physical_id, stack, next(self._db_ids))
        stack.resources[name] = res
        return res

    def _nest(self, res: _Resource) -> _Stack:
        """The nested stack of a resource, named as Heat names it."""
        parent = res.stack
        nested = self._stack(f"{parent.name}-{res.name}-{short_id()}", parent.tenant, res.name)
        res.nested = nested
        res.physical_id = nested.id
        return nested

    def _fill_member(self, member: _Resource) -> str:
        nested = self._nest(member)
        server = self._resource(nested, "server", "OS::Nova::Server", str(uuid.uuid4()))
        server.required_by = ["member"]
        pool_member = self._resource(nested, "member", "OS::Octavia::PoolMember")
        pool_member.physical_id = str(uuid.uuid4())
        return pool_member.physical_id

    def _lookup(self, tenant: str, name_or_id: str) -> _Stack:
        """engine.identify_stack: by id (deleted ones too), else by name, within the project."""
        stack = self._stacks.get(name_or_id)
        if stack is None or stack.tenant != tenant:
            stack = next(
                (
                    s
                    for s in self._stacks.values()
                    if s.name == name_or_id and s.tenant == tenant and not s.deleted
                ),
                None,
            )
        if stack is None:
            raise _stack_not_found(name_or_id)
        return stack

    def _identified(
        self, tenant: str, name: str, stack_id: str, show_deleted: bool = False
    ) -> _Stack:
        """engine._get_stack: the id must exist in the project and carry that name."""
        stack = self._stacks.get(stack_id)
        if (
            stack is None
            or stack.tenant != tenant
            or stack.name != name
            or (stack.deleted and not show_deleted)
        ):
            raise _stack_not_found(name)
        return stack

    def _delete(self, stack: _Stack) -> None:
        stack.action, stack.status, stack.deleted = "DELETE", "COMPLETE", True
        for res in stack.resources.values():
            if res.nested is not None:
                self._delete(res.nested)

    def _replace_failed(self, stack: _Stack) -> None:
        for res in list(stack.resources.values()):
            if (res.action, res.status) == ("CHECK", "FAILED"):
                replacement = _Resource(
                    res.name, res.type, "", stack, next(self._db_ids), list(res.required_by)
                )
                replacement.reason = "state changed"
                stack.resources[res.name] = replacement
                if res.nested is not None:
                    self._delete(res.nested)
                if res.nested is not None and res.type == MEMBER_TYPE:
                    self._fill_member(replacement)
                elif res.nested is not None:
                    self._nest(replacement)
                else:
                    replacement.physical_id = str(uuid.uuid4())
            elif res.nested is not None:
                self._replace_failed(res.nested)
                res.nested.action, res.nested.status = "UPDATE", "COMPLETE"

    # -- the API -----------------------------------------------------------------

    def handle(self, method: str, url: str, headers, body: bytes, host: str):
        """(status, body, headers) of a request; the body ``_EMPTY`` for none."""
        with self._lock:
            self.requests.append((method, url, dict(headers)))
            failure = self._failures.pop(0) if self._failures else None
        if failure == 401:
            return 401, _UNAUTHENTICATED, self._www_authenticate()
        if failure is not None:
            error = _fault(failure, message=_WEBOB.get(failure, ("", "Error"))[1])
            return error.status, error.body, error.headers
        token = headers.get("X-Auth-Token")
        info = self.keystone.validate(token.strip()) if token else None
        if info is None:
            return 401, _UNAUTHENTICATED, self._www_authenticate()
        split = parse.urlsplit(url)
        query = parse.parse_qs(split.query, keep_blank_values=True)
        try:
            with self._lock:
                return self._route(method, split.path, query, info, body, host)
        except _Error as error:
            return error.status, error.body, error.headers

    def _www_authenticate(self) -> dict[str, str]:
        return {"WWW-Authenticate": f'Keystone uri="{self.keystone.auth_url}"'}

    def _route(self, method, path, query, info, body, host):
        if not path.startswith("/v1/"):
            raise _no_route()
        route, args = _match(method, path[len("/v1") :])
        if route is None:
            raise _no_route()
        action, allowed = route
        if action == "reject":
            raise _fault(405, "HTTPMethodNotAllowed", _WEBOB[405][1])
        if action == "options":
            return 204, _EMPTY, {"Allow": allowed}
        tenant = args["tenant_id"]
        if action not in _MODELLED:
            # A route Heat has that this stand-in does not model.
            raise _fault(501, "NotImplementedError", f"{action}: not modelled here")
        project = (info.get("project") or {}).get("id")
        if project != tenant:
            raise _fault(403, "HTTPForbidden", _WEBOB[403][1])
        base = f"http://{host}/v1"
        if action == "stacks.lookup":
            stack = self._lookup(tenant, args["stack_name"])
            location = f"{base}/{stack.path()}" + (f"/{args['path']}" if "path" in args else "")
            if query:
                location += "?" + parse.urlencode(query, True)
            message = (
                f'The resource was found at <a href="{location}">{location}</a>;\n'
                "you should be redirected automatically.\n\n"
            )
            found = {"message": message, "code": "302 Found", "title": "Found"}
            return 302, found, {"Location": location}
        # Heat lists the resources of a deleted stack (show_deleted), nothing else.
        show_deleted = action == "resources.index"
        stack = self._identified(tenant, args["stack_name"], args["stack_id"], show_deleted)
        if action == "stacks.update_patch":
            return self._update_patch(stack, self._json(body))
        if action == "resources.index":
            return 200, {"resources": self._list(stack, query, base)}, {}
        if action == "resources.show":
            name = args["resource_name"]
            if name not in stack.resources:
                raise _resource_not_found(name, stack)
            return 200, {"resource": self._format(stack.resources[name], base, True)}, {}
        return self._mark_unhealthy(stack, args["resource_name"], self._json(body))

    @staticmethod
    def _json(body: bytes) -> dict | None:
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError as exc:
            raise _bad_request(str(exc)) from None

    def _list(self, stack: _Stack, query: dict[str, list[str]], base: str) -> list[dict]:
        invalid = set(query) - (_LIST_PARAMS | {"nested_depth", "with_detail"})
        if invalid:
            raise _bad_request(f"Invalid filter parameters {list(invalid)}")
        depth = _extract_int("nested_depth", query.get("nested_depth", ["0"])[-1])
        detail = _extract_bool("with_detail", query.get("with_detail", ["false"])[-1])
        filters = {k: v for k, v in query.items() if k in _LIST_PARAMS}
        rsrcs = stack.iter_resources(min(depth, MAX_NESTED_DEPTH), _matcher(filters))
        return [self._format(r, base, detail) for r in rsrcs]

    @staticmethod
    def _format(res: _Resource, base: str, detail: bool = False) -> dict:
        """heat.engine.api.format_stack_resource, then the API's format_resource."""
        stack_url = f"{base}/{res.stack.path()}"
        links = [
            {"href": f"{stack_url}/resources/{res.name}", "rel": "self"},
            {"href": stack_url, "rel": "stack"},
        ]
        if res.nested is not None:
            links.append({"href": f"{base}/{res.nested.path()}", "rel": "nested"})
        formatted = {
            "updated_time": res.updated or res.created,
            "creation_time": res.created,
            "logical_resource_id": res.name,
            "resource_name": res.name,
            "physical_resource_id": res.physical_id,
            "resource_status": f"{res.action}_{res.status}",
            "resource_status_reason": res.reason,
            "resource_type": res.type,
            "links": links,
            "required_by": list(res.required_by),
        }
        if res.stack.parent_resource:
            formatted["parent_resource"] = res.stack.parent_resource
        if detail:
            formatted["description"] = ""
            formatted["attributes"] = {}
        return formatted

    def _mark_unhealthy(self, stack: _Stack, name: str, body: dict | None):
        if body is None:
            raise _bad_request(_WEBOB[400][1])
        invalid = set(body) - {"mark_unhealthy", "resource_status_reason"}
        if invalid:
            raise _bad_request(f"Invalid keys in resource mark unhealthy {invalid}")
        if "mark_unhealthy" not in body:
            raise _bad_request("Missing mandatory (mark_unhealthy) key from mark unhealthy request")
        unhealthy = _extract_bool("mark_unhealthy", body["mark_unhealthy"])
        res = stack.find(name)
        if res is None:
            raise _resource_not_found(name, stack)
        reason = body.get("resource_status_reason") or (
            "state changed by resource_mark_unhealthy api"
        )
        if unhealthy:
            if res.action != "DELETE":
                res.action, res.status, res.reason, res.updated = "CHECK", "FAILED", reason, _now()
            self._marked.setdefault(stack.id, []).append((res.name, reason))
        elif (res.action, res.status) == ("CHECK", "FAILED"):
            res.action, res.status, res.reason, res.updated = "CHECK", "COMPLETE", reason, _now()
        return 200, None, {}

    def _update_patch(self, stack: _Stack, body: dict | None):
        self._updates.setdefault(stack.id, []).append(body if body is not None else {})
        self._replace_failed(stack)
        stack.action, stack.status = "UPDATE", "COMPLETE"
        accepted = {
            "message": "The request is accepted for processing.<br /><br />\n\n\n",
            "code": "202 Accepted",
            "title": "Accepted",
        }
        return 202, accepted, {}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    heat: FakeHeat


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args):
        pass

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        host = self.headers.get("Host") or f"127.0.0.1:{self.server.heat.port}"
        status, answer, headers = self.server.heat.handle(
            self.command, self.path, self.headers, body, host
        )
        payload = b"" if answer is _EMPTY else json.dumps(answer).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-openstack-request-id", f"req-{uuid.uuid4()}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve


def serve(keystone) -> Iterator[FakeHeat]:
    """Start the server, put it in Keystone's catalog as ``orchestration``; stop it after."""
    server = FakeHeat(keystone)
    keystone.add_endpoint("orchestration", server.url)
    try:
        yield server
    finally:
        server.close()


def heat_fixture(real_keystone) -> Iterator[FakeHeat]:
    """The body of a session fixture: ``heat = pytest.fixture(scope="session")(heat_fixture)``."""
    yield from serve(real_keystone)
