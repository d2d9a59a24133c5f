"""A TCP proxy on 127.0.0.1 that a test puts between the service and its database.

Stopping a whole PostgreSQL cluster (``tests.pg``) shows one failure only: a
server that refuses. The failures that hurt in production are subtler: a
slow database (every round trip late, so a small connection pool runs out),
a database that hangs (connections accepted, nothing answered), a network
that drops every connection at once. This proxy plays each of them on
demand, for one client only, while the database itself stays healthy; a
test switches the mode at any time:

``pass_through()``  forward everything at once;
``delay(seconds)``  forward every chunk, in both directions, that much later;
``stall()``         accept connections and hold them, forwarding nothing (what
                    was held is forwarded once the mode changes again);
``cut()``           reset every open connection and refuse new ones (the port
                    stops listening until another mode is chosen);
``close()``         cut for good.

Standard library only: a thread accepts, two threads per connection pump.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time

import sqlalchemy as sa

PASS, DELAY, STALL, CUT, CLOSED = "pass", "delay", "stall", "cut", "closed"


class TcpProxy:
    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream = upstream
        self.port = 0
        self.accepted = 0  # connections accepted, for the tests' own checks
        self._mode = PASS
        self._delay = 0.0
        self._cond = threading.Condition()
        self._socks: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._listen()
        self._acceptor = threading.Thread(target=self._accept, name="tcpproxy", daemon=True)
        self._acceptor.start()

    # -- what a test calls --------------------------------------------------

    def url(self, base_url: str) -> str:
        """``base_url`` (a SQLAlchemy URL) with its host and port replaced by the proxy's."""
        url = sa.engine.make_url(base_url).set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    def pass_through(self) -> None:
        self._set(PASS, 0.0)

    def delay(self, seconds: float) -> None:
        self._set(DELAY, seconds)

    def stall(self) -> None:
        self._set(STALL, 0.0)

    def cut(self) -> None:
        self._set(CUT, 0.0)

    def close(self) -> None:
        self._set(CLOSED, 0.0)
        self._acceptor.join(5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inside -------------------------------------------------------------

    def _set(self, mode: str, delay: float) -> None:
        with self._cond:
            if self._mode == CLOSED:
                return
            self._mode, self._delay = mode, delay
            if mode in (CUT, CLOSED):
                self._unlisten()
                for sock in list(self._socks):
                    _reset(sock)
                self._socks.clear()
            elif self._listener is None:
                self._listen()
            self._cond.notify_all()

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener

    def _unlisten(self) -> None:
        if self._listener is not None:
            try:  # stops listening at once, even while the acceptor selects on it
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None

    def _accept(self) -> None:
        while True:
            with self._cond:
                if self._mode == CLOSED:
                    return
                listener = self._listener
            if listener is None:
                time.sleep(0.02)
                continue
            try:
                ready, _, _ = select.select([listener], [], [], 0.05)
                if not ready:
                    continue
                client, _ = listener.accept()
            except OSError:  # closed by cut() meanwhile
                continue
            with self._cond:
                if self._mode in (CUT, CLOSED):
                    _reset(client)
                    continue
                self._socks.add(client)
                self.accepted += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        """Connect upstream once the mode lets anything through, then pump both ways."""
        if not self._wait(time.monotonic()):
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
            server.settimeout(None)
        except OSError:
            _reset(client)
            return
        with self._cond:
            if self._mode in (CUT, CLOSED):
                _reset(server)
                return
            self._socks.add(server)
        threading.Thread(target=self._pump, args=(server, client), daemon=True).start()
        self._pump(client, server)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                if not self._wait(time.monotonic()):
                    return
                dst.sendall(chunk)
        except OSError:
            pass
        # One side closed: close both (the other pump then ends too).
        with self._cond:
            self._socks.discard(src)
            self._socks.discard(dst)
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _wait(self, received: float) -> bool:
        """Hold a chunk received at ``received`` as the mode says; False once cut."""
        with self._cond:
            while True:
                if self._mode in (CUT, CLOSED):
                    return False
                if self._mode == STALL:
                    self._cond.wait()
                    continue
                remaining = received + self._delay - time.monotonic()
                if self._mode == PASS or remaining <= 0:
                    return True
                self._cond.wait(remaining)


def _reset(sock: socket.socket) -> None:
    """Close with a RST (SO_LINGER 0), as a dropped connection looks to its peer."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RD)  # wakes a pump blocked reading it, sends nothing
    except OSError:
        pass
    sock.close()
