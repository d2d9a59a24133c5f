"""Serve Keystone's public WSGI application on 127.0.0.1, for the tests.

Run with the Python of Keystone's own virtualenv, never the project's:
``python serve.py PORT``. Keystone's config files come from
``OS_KEYSTONE_CONFIG_FILES``, as for any Keystone WSGI deployment (Keystone
parses the command line too, so the port is taken off it first).

Keystone itself answers every request. A thin WSGI middleware only counts
the token requests scoped to each trust, served at ``GET /_test/trust-auths``,
so the tests can tell how often the notifier authenticated.
"""

import io
import json
import sys
import threading

from keystone.server import wsgi
from werkzeug import serving


class CountTrustAuths:
    def __init__(self, app):
        self.app = app
        self.counts = {}
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "").rstrip("/")
        if method == "GET" and path == "/_test/trust-auths":
            with self.lock:
                body = json.dumps(self.counts).encode()
            start_response(
                "200 OK",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        if method == "POST" and path == "/v3/auth/tokens":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            data = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(data)
            try:
                scope = json.loads(data)["auth"].get("scope") or {}
                trust_id = scope.get("OS-TRUST:trust", {}).get("id")
            except (ValueError, KeyError, AttributeError, TypeError):
                trust_id = None
            if trust_id:
                with self.lock:
                    self.counts[trust_id] = self.counts.get(trust_id, 0) + 1
        return self.app(environ, start_response)


def main():
    port = int(sys.argv[1])
    del sys.argv[1:]
    app = CountTrustAuths(wsgi.initialize_public_application())
    serving.run_simple("127.0.0.1", port, app, threaded=True)


if __name__ == "__main__":
    main()
