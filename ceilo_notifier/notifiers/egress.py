"""Target safety for code that opens its own connections (Apprise's services).

Apprise has no hook for where it connects: its services call requests,
smtplib or sockets themselves, each in its own way. The enforcement point is
therefore below them all, in the interpreter: an audit hook (PEP 578,
``sys.addaudithook``) sees every ``socket.connect`` (``connect_ex`` too) and
``socket.sendto`` the process makes, with the socket and the peer address,
just before the system call, whatever library made it. The hook acts only in
threads marked with ``guarded()`` (a thread-local flag): the threads that run
Apprise. The rest of the service (the broker, the journal's database,
Keystone, aiohttp with its own checks in ``safety``) is untouched, and the
hook costs it one dictionary lookup per audited event.

In a guarded thread:

* a connection is refused unless its peer is an IP address the service's
  ``AddressPolicy`` permits (``rest_notifier_denied_networks`` and
  ``rest_notifier_allowed_networks``, IPv4 carried in IPv6 judged too): the
  address actually connected to, after name resolution, so a name resolving
  to a denied address is refused and nothing reaches it. A host name handed
  to ``connect`` (which would resolve it past any check) and every family
  but IPv4 and IPv6 (a Unix socket is the notifier's own host) are refused;
* every address a name resolves to must be permitted (``socket.getaddrinfo``
  is wrapped, as section 11 has it for webhooks): a name with one denied
  address is refused before any connection;
* nothing else may act on the notifier's own host: starting a thread (whose
  connections would escape the flag) or a process, writing, renaming or
  removing a file are refused.

A refusal raises ``TargetDenied`` (a ``ValueError``, so no client takes it
for a connection error and tries the next address) and is kept in the
thread's ``Guarded`` record, since a library may swallow the exception and
report a plain failure.

The hook cannot be removed once added; it is added on first use, by the
first plugin that needs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import socket
import sys
import threading
import weakref
from collections.abc import Iterator

from ceilo_notifier.notifiers import safety

TargetDenied = safety.TargetDenied


@dataclasses.dataclass
class Guarded:
    """What one guarded call did, as far as the network is concerned."""

    policy: safety.AddressPolicy
    refusal: str | None = None  # the first refusal
    resolved: int = 0  # names looked up
    name: str | None = None  # the last of them, to name in a refusal
    connects: list[str] = dataclasses.field(default_factory=list)  # peers, "address:port"
    # Sockets connected so far, shut by ``cut`` (from another thread).
    sockets: weakref.WeakSet = dataclasses.field(default_factory=weakref.WeakSet)
    over: bool = False

    def cut(self) -> None:
        """The attempt is over: shut its sockets (a blocked read returns at once)
        and refuse any connection it still tries."""
        self.over = True
        for sock in list(self.sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    @property
    def networked(self) -> bool:
        """True once the call has looked a name up or tried a connection."""
        return bool(self.resolved or self.connects)

    def refuse(self, why: str) -> None:
        if self.refusal is None:
            self.refusal = why
        raise TargetDenied(why)


_local = threading.local()
_install_lock = threading.Lock()
_installed = False

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_LOCAL_EFFECTS = frozenset(
    {
        "_thread.start_new_thread",
        "subprocess.Popen",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "os.startfile",
        "os.remove",
        "os.rename",
        "os.rmdir",
        "os.mkdir",
        "os.chmod",
        "os.chown",
        "os.link",
        "os.symlink",
        "os.truncate",
        "os.utime",
        "shutil.rmtree",
        "shutil.move",
        "shutil.copyfile",
    }
)
_NETWORK = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo"})
_WATCHED = _NETWORK | _LOCAL_EFFECTS | {"open"}


def _hook(event: str, args: tuple) -> None:
    if event not in _WATCHED:
        return
    current: Guarded | None = getattr(_local, "guarded", None)
    if current is None:
        return
    if event == "socket.getaddrinfo":
        _judge_name(current, args[0])
    elif event in _NETWORK:
        _judge_peer(current, args[0], args[1])
    elif event == "open":
        _judge_open(current, args)
    else:
        current.refuse(f"{event} is not allowed to a destination's code")


def _judge_name(current: Guarded, host: object) -> None:
    """Before a lookup: a host that denotes an address by itself is judged as it."""
    if current.over:
        current.refuse("the attempt is over")
    current.resolved += 1
    name = host.decode(errors="replace") if isinstance(host, bytes) else str(host)
    current.name = name
    try:
        current.policy.check_literal(name.strip("[]"))
    except TargetDenied as exc:
        current.refuse(str(exc))


def _judge_peer(current: Guarded, sock: socket.socket, address: object) -> None:
    if address is None:  # sendmsg on a connected socket: judged at connect
        return
    family = getattr(sock, "family", None)
    if family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
        current.refuse(f"a connection to {address!r}, not to an IP address, refused")
    host, port = address[0], address[1]
    try:
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        current.refuse(f"{host}: the client was to connect to {host!r}, not an address")
    current.connects.append(f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}")
    if current.over:
        current.refuse("the attempt is over")
    try:
        current.policy.check(current.name or str(ip), str(ip))
    except TargetDenied as exc:
        current.refuse(str(exc))
    with contextlib.suppress(TypeError):
        current.sockets.add(sock)


def _judge_open(current: Guarded, args: tuple) -> None:
    _path, mode, flags = (list(args) + [None, None, None])[:3]
    writes = isinstance(mode, str) and any(c in mode for c in "wax+")
    if writes or (isinstance(flags, int) and flags & _WRITE_FLAGS):
        current.refuse("writing a file is not allowed to a destination's code")


_real_getaddrinfo = socket.getaddrinfo


def _checked_getaddrinfo(host, port, *args, **kwargs):
    """socket.getaddrinfo, which in a guarded thread refuses a name unless every
    address it resolves to is permitted."""
    infos = _real_getaddrinfo(host, port, *args, **kwargs)
    current: Guarded | None = getattr(_local, "guarded", None)
    if current is not None:
        name = host.decode(errors="replace") if isinstance(host, bytes) else str(host)
        for info in infos:
            if info[0] in (socket.AF_INET, socket.AF_INET6):
                try:
                    current.policy.check(name, str(info[4][0]))
                except TargetDenied as exc:
                    current.refuse(str(exc))
    return infos


def install() -> None:
    """Add the audit hook and the resolver check, once per process.

    The resolver check wraps the ``socket.getaddrinfo`` of that moment (a
    green one under eventlet); code that replaces it later bypasses that
    check only, never the hook's on every connection.
    """
    global _installed, _real_getaddrinfo
    if _installed:
        return
    with _install_lock:
        if not _installed:
            _real_getaddrinfo = socket.getaddrinfo
            socket.getaddrinfo = _checked_getaddrinfo
            _no_environment_proxies()
            # A first import in a guarded thread would write its bytecode: refused
            # there, it would fail the delivery as a refused target.
            sys.dont_write_bytecode = True
            sys.addaudithook(_hook)
            _installed = True


def _no_environment_proxies() -> None:
    """In guarded threads, requests ignores HTTP(S)_PROXY and ALL_PROXY: through a
    proxy, the guard would judge the proxy's address and never the target's."""
    try:
        import requests
    except ImportError:
        return
    merge = requests.Session.merge_environment_settings

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        if getattr(_local, "guarded", None) is None:
            return merge(self, url, proxies, stream, verify, cert)
        trusted, self.trust_env = self.trust_env, False
        try:
            return merge(self, url, proxies, stream, verify, cert)
        finally:
            self.trust_env = trusted

    requests.Session.merge_environment_settings = merge_environment_settings


@contextlib.contextmanager
def guarded(policy: safety.AddressPolicy, record: Guarded | None = None) -> Iterator[Guarded]:
    """Judge every connection this thread makes inside by ``policy``."""
    install()
    record = record if record is not None else Guarded(policy)
    previous = getattr(_local, "guarded", None)
    _local.guarded = record
    try:
        yield record
    finally:
        _local.guarded = previous


def is_guarded() -> bool:
    """True in a thread inside ``guarded()``."""
    return getattr(_local, "guarded", None) is not None
