"""A stand-in for Keystone's Identity v3 token API, served on 127.0.0.1.

It answers what a keystoneauth password plugin asks, the way Keystone 30
does (statuses, error bodies and token bodies were taken from a real one):

* ``GET /`` (300, the version list) and ``GET /v3`` (the v3 version document);
* ``POST /v3/auth/tokens`` with the ``password`` method, scoped to a trust,
  a project, or nothing: 201 with the token in ``X-Subject-Token`` and its
  body (``methods``, ``user``, ``expires_at``, ``issued_at``, ``audit_ids``,
  ``OS-TRUST:trust``, ``project``, ``roles``, ``catalog``). A wrong password,
  an unknown, deleted or expired trust answer 401; a user that is not the
  trustee 403; two scopes at once 400;
* ``GET /v3/auth/tokens`` validates ``X-Subject-Token`` for a valid
  ``X-Auth-Token``: 200 with the body, or 404.
"""

from __future__ import annotations

import datetime
import http.server
import json
import secrets
import threading
import uuid

from tests import keystone as ks

_UNAUTHORIZED = (401, "Unauthorized", "The request you have made requires authentication.")
_FORBIDDEN = (403, "Forbidden", "You are not authorized to perform the requested action.")
_BAD_SCOPE = (
    400,
    "Bad Request",
    "Expecting to find system, project, domain, OS-TRUST:trust or unscoped in scope. "
    "The server could not comply with the request since it is either malformed or "
    "otherwise incorrect. The client is assumed to be in error.",
)
_DOMAIN = {"id": "default", "name": "Default"}


def _iso(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.000000Z")


class _Refused(Exception):
    def __init__(self, error: tuple[int, str, str]) -> None:
        super().__init__(error[2])
        self.error = error


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: dict | None, headers: dict[str, str] | None = None):
        payload = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Vary", "X-Auth-Token")
        self.send_header("x-openstack-request-id", f"req-{uuid.uuid4()}")
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, error: tuple[int, str, str]) -> None:
        code, title, message = error
        self._send(code, {"error": {"code": code, "message": message, "title": title}})

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def do_GET(self):
        path = self._path()
        fake = self.server.fake
        if path == "":
            self._send(300, {"versions": {"values": [fake.version()]}})
        elif path == "/v3":
            self._send(200, {"version": fake.version()})
        elif path == "/v3/auth/tokens":
            if fake.token(self.headers.get("X-Auth-Token")) is None:
                self._error(_UNAUTHORIZED)
                return
            subject = self.headers.get("X-Subject-Token")
            body = fake.token(subject)
            if body is None:
                self._send(
                    404,
                    {
                        "error": {
                            "code": 404,
                            "message": "Could not find token.",
                            "title": "Not Found",
                        }
                    },
                )
            else:
                self._send(200, {"token": body}, {"X-Subject-Token": subject})
        else:
            self._send(404, {"error": {"code": 404, "message": "Not Found", "title": "Not Found"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self._path() != "/v3/auth/tokens":
            self._send(404, {"error": {"code": 404, "message": "Not Found", "title": "Not Found"}})
            return
        try:
            request = json.loads(raw)["auth"]
        except (ValueError, KeyError, TypeError):
            self._send(
                400, {"error": {"code": 400, "message": "Malformed", "title": "Bad Request"}}
            )
            return
        try:
            token, body = self.server.fake.authenticate(request)
        except _Refused as refused:
            self._error(refused.error)
            return
        self._send(201, {"token": body}, {"X-Subject-Token": token})


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeKeystone


class FakeKeystone(ks.Identity):
    """The Identity v3 token API of ``tests.keystone``, in this process."""

    name = "fake"

    def __init__(self, token_lifetime: float = ks.TOKEN_LIFETIME) -> None:
        self.token_lifetime = token_lifetime
        self.lock = threading.Lock()
        self.trustee_id = uuid.uuid4().hex
        self.trustor_id = uuid.uuid4().hex
        self.service_project_id = uuid.uuid4().hex
        self.project_id = uuid.uuid4().hex
        self.users = {
            self.trustee_id: (ks.SERVICE_USER, ks.SERVICE_PASSWORD, self.service_project_id),
            self.trustor_id: (ks.TRUSTOR_USER, ks.TRUSTOR_PASSWORD, self.project_id),
        }
        self.projects = {
            self.service_project_id: ks.SERVICE_PROJECT,
            self.project_id: ks.TRUSTOR_PROJECT,
        }
        self.trusts: dict[str, dict] = {}
        self.tokens: dict[str, dict] = {}
        self.auths: dict[str, int] = {}
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.fake = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.auth_url = f"{self.url}/v3"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # -- the API ---------------------------------------------------------------

    def version(self) -> dict:
        return {
            "id": "v3.14",
            "status": "stable",
            "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{self.auth_url}/"}],
            "media-types": [
                {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
            ],
        }

    def _user(self, identity: dict) -> str:
        if identity.get("methods") != ["password"]:
            raise _Refused(_UNAUTHORIZED)
        user = identity.get("password", {}).get("user", {})
        domain = user.get("domain", {})
        for user_id, (name, password, _project) in self.users.items():
            same = user.get("id") == user_id or (
                user.get("name") == name
                and (domain.get("id") == "default" or domain.get("name") == "Default")
            )
            if same:
                if user.get("password") != password:
                    raise _Refused(_UNAUTHORIZED)
                return user_id
        raise _Refused(_UNAUTHORIZED)

    def _project(self, project_id: str) -> dict:
        return {"domain": _DOMAIN, "id": project_id, "name": self.projects[project_id]}

    def _roles(self) -> list[dict]:
        return [
            {"id": "member-role", "name": ks.TRUST_ROLE, "domain_id": None},
            {"id": "reader-role", "name": "reader", "domain_id": None},
        ]

    def authenticate(self, request: dict) -> tuple[str, dict]:
        with self.lock:
            user_id = self._user(request.get("identity", {}))
            scope = request.get("scope") or {}
            if len(scope) > 1:
                raise _Refused(_BAD_SCOPE)
            now = datetime.datetime.now(datetime.timezone.utc)
            body: dict = {
                "methods": ["password"],
                "audit_ids": [secrets.token_urlsafe(16)],
                "issued_at": _iso(now),
                "expires_at": _iso(now + datetime.timedelta(seconds=self.token_lifetime)),
            }
            acting = user_id
            if "OS-TRUST:trust" in scope:
                trust_id = scope["OS-TRUST:trust"].get("id", "")
                self.auths[trust_id] = self.auths.get(trust_id, 0) + 1
                trust = self.trusts.get(trust_id)
                if trust is None:
                    raise _Refused(_UNAUTHORIZED)
                if trust["trustee_user_id"] != user_id:
                    raise _Refused(_FORBIDDEN)
                if trust["impersonation"]:
                    acting = trust["trustor_user_id"]
                body["OS-TRUST:trust"] = {
                    "id": trust_id,
                    "trustor_user": {"id": trust["trustor_user_id"]},
                    "trustee_user": {"id": trust["trustee_user_id"]},
                    "impersonation": trust["impersonation"],
                }
                body["project"] = self._project(trust["project_id"])
                body["roles"] = self._roles()
            elif "project" in scope:
                wanted = scope["project"]
                project_id = self.users[user_id][2]
                if (
                    wanted.get("id", project_id) != project_id
                    or wanted.get("name", self.projects[project_id]) != self.projects[project_id]
                ):
                    raise _Refused(_UNAUTHORIZED)
                body["project"] = self._project(project_id)
                body["roles"] = self._roles()
            elif scope:
                raise _Refused(_UNAUTHORIZED)
            body["user"] = {
                "domain": _DOMAIN,
                "id": acting,
                "name": self.users[acting][0],
                "password_expires_at": None,
            }
            if "project" in body:
                body["catalog"] = [
                    {
                        "endpoints": [
                            {
                                "id": "identity-public",
                                "interface": "public",
                                "region_id": "RegionOne",
                                "url": self.auth_url,
                                "region": "RegionOne",
                            }
                        ],
                        "id": "identity",
                        "type": "identity",
                        "name": "keystone",
                    }
                ]
            token = "gAAAAA" + secrets.token_urlsafe(120)
            self.tokens[token] = body
            return token, body

    def token(self, token: str | None) -> dict | None:
        with self.lock:
            body = self.tokens.get(token or "")
            if body is None:
                return None
            expires = datetime.datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
            expires = expires.replace(tzinfo=datetime.timezone.utc)
            if expires <= datetime.datetime.now(datetime.timezone.utc):
                return None
            trust = body.get("OS-TRUST:trust")
            if trust and trust["id"] not in self.trusts:
                return None  # deleting a trust revokes its tokens
            return body

    # -- what the tests use ----------------------------------------------------

    def create_trust(self) -> str:
        trust_id = uuid.uuid4().hex
        with self.lock:
            self.trusts[trust_id] = {
                "trustor_user_id": self.trustor_id,
                "trustee_user_id": self.trustee_id,
                "project_id": self.project_id,
                "impersonation": True,
            }
        return trust_id

    def delete_trust(self, trust_id: str) -> None:
        with self.lock:
            del self.trusts[trust_id]

    def validate(self, token: str) -> dict | None:
        return self.token(token)

    def trust_auths(self, trust_id: str) -> int:
        with self.lock:
            return self.auths.get(trust_id, 0)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
