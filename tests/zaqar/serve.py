"""Serve Zaqar's WSGI application (API v2) on 127.0.0.1, for the tests.

Run with the Python of Zaqar's own virtualenv, never the project's:
``python serve.py PORT CONFIG_FILE``. This does what
``zaqar.transport.wsgi.app`` does for a WSGI container, with the config file
given on the command line instead of looked up in ``/etc``, and serves the
application with a threaded ``wsgiref`` server: Zaqar itself answers every
request, behind its own middleware (keystonemiddleware's auth_token, the
signed-URL check).
"""

import socketserver
import sys
from wsgiref import simple_server

from oslo_config import cfg
from oslo_log import log
from zaqar import bootstrap


class Server(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True


class Handler(simple_server.WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main():
    port = int(sys.argv[1])
    config_file = sys.argv[2]
    conf = cfg.CONF
    log.register_options(conf)
    conf(project="zaqar", prog="zaqar-queues", args=["--config-file", config_file])
    log.setup(conf, "zaqar")
    boot = bootstrap.Bootstrap(conf)
    app = boot.transport.app
    httpd = simple_server.make_server("127.0.0.1", port, app, Server, Handler)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
