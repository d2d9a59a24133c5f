"""Payload templates: the body an action receives, chosen by name.

What a template is
    A Jinja2 file that turns one alarm transition into the body of a request.
    An action picks one with the control parameter
    ``ceilo-notifier-template=NAME`` in its URL's query
    (``https://hooks.slack.com/services/T/B/X?ceilo-notifier-template=slack``);
    the parameter is removed before the request, like ``aodh-alarm-ssl-verify``.
    ``NAME.json.j2`` is sent as ``application/json`` and must render valid
    JSON; ``NAME.txt.j2`` is sent as ``text/plain; charset=utf-8``. The
    ``cloudevents`` template is sent as ``application/cloudevents+json``.

Who writes one
    Operators only: the built-ins (``builtin/``: ``slack``, ``teams``,
    ``googlechat``, ``cloudevents``) and the files in ``[templates] path``,
    read once at start (a file with a built-in's name replaces it). Tenants
    choose among them by name and never supply template text; a name that is
    not installed is bad input when the alarm arrives and in
    ``actions.validate``. Names are ``[A-Za-z0-9_-]+``; other files are
    ignored with one warning.

The variables
    ``alarm_id``, ``alarm_name``, ``severity``, ``previous``, ``current``,
    ``reason`` (strings, or None), ``reason_data`` (a dict), ``request_id``
    (the delivery's id, as in ``X-OpenStack-Request-Id``, the same on every
    retry) and ``timestamp`` (when the delivery was accepted, ISO 8601 UTC,
    also the same on every retry). They are data, never template code: an
    alarm named ``{{ 7*7 }}`` arrives as those characters. In JSON templates
    write every value through ``|tojson`` (``"name": {{ alarm_name|tojson }}``)
    so that quotes, backslashes and newlines still give valid JSON. An
    undefined variable fails the render (``StrictUndefined``): test optional
    keys with ``reason_data.get("key")``, ``is defined`` or ``|default``.

The bounds
    Templates are parsed (not run) at load. They run in Jinja2's
    ``ImmutableSandboxedEnvironment`` (no attribute starting with ``_``, no
    change to the data, ``range`` up to 100000 items, repetitions and powers
    up to ``max_body_bytes``) inside ``render_workers`` processes of their
    own (new interpreters, not forks of the service), started on the first render. A render
    has ``render_timeout`` seconds, after which its worker is killed and
    replaced; its worker may map ``render_memory_mb`` MiB; its output may not
    exceed ``max_body_bytes``. Whatever goes wrong (an exception, the sandbox,
    the deadline, the memory, the size, invalid JSON) is a ``TemplateError``
    naming the cause, and the delivery fails without being retried.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from concurrent import futures
from importlib import resources
from pathlib import Path
from urllib import parse

from oslo_config import cfg
from oslo_log import log

from ceilo_notifier import masking, notifiers
from ceilo_notifier.notification import AlarmNotification, utc_timestamp
from ceilo_notifier.templates import sandbox, worker

LOG = log.getLogger(__name__)

PARAM = "ceilo-notifier-template"
GROUP = "templates"
NAME = re.compile(r"[A-Za-z0-9_-]+")
SUFFIXES = {".json.j2": "json", ".txt.j2": "txt"}
CONTENT_TYPES = {"json": "application/json", "txt": "text/plain; charset=utf-8"}
# Built-ins whose body has a media type of its own (an override keeps it).
SPECIAL_CONTENT_TYPES = {"cloudevents": "application/cloudevents+json"}
# How long a new worker may take to start (an import, a fork) before it is given up.
START_TIMEOUT = 30.0
# A template whose last renders were stopped this many times in a row fails at
# once for this long (seconds), rather than cost a worker each time.
STOPS_BEFORE_PAUSE = 3
STOPPED_PAUSE = 60.0


class TemplateError(Exception):
    """A render failed; the message says why, for the log and the journal."""


@dataclasses.dataclass(frozen=True)
class Rendered:
    body: bytes
    content_type: str


def name_of(action: parse.SplitResult) -> str | None:
    """The template an action names (``ceilo-notifier-template``), or None."""
    for key, value in parse.parse_qsl(action.query, keep_blank_values=True):
        if key == PARAM:
            return value
    return None


def strip(action: parse.SplitResult) -> parse.SplitResult:
    """The action without ``ceilo-notifier-template``; other parameters are kept as written."""
    if PARAM not in parse.unquote_plus(action.query):
        return action
    kept = [
        piece
        for piece in action.query.split("&")
        if parse.unquote_plus(piece.partition("=")[0]) != PARAM
    ]
    return action._replace(query="&".join(kept))


def variables(notification: AlarmNotification) -> dict[str, object]:
    """What a template sees."""
    return {
        **notification.body(),
        "request_id": notification.request_id,
        "timestamp": notification.timestamp or utc_timestamp(),
    }


def register_opts(conf: cfg.ConfigOpts) -> None:
    from ceilo_notifier import opts

    opts.register_missing(conf, opts.TEMPLATES_OPTS, GROUP)


def _read_builtins() -> dict[str, tuple[str, str]]:
    found = {}
    folder = resources.files(__package__).joinpath("builtin")
    for entry in folder.iterdir():
        for suffix, kind in SUFFIXES.items():
            if entry.name.endswith(suffix):
                found[entry.name[: -len(suffix)]] = (entry.read_text("utf-8"), kind)
    return found


# The names of the built-in templates.
BUILTINS = tuple(sorted(_read_builtins()))


def _read_folder(path: str) -> dict[str, tuple[str, str]]:
    """The templates of an operator's folder; other files are warned of once."""
    found: dict[str, tuple[str, str]] = {}
    ignored = []
    try:
        entries = sorted(Path(path).iterdir())
    except OSError as exc:
        LOG.error("[templates] path %s cannot be read (%s): built-in templates only", path, exc)
        return found
    for entry in entries:
        name = kind = None
        for suffix, k in SUFFIXES.items():
            if entry.name.endswith(suffix):
                name, kind = entry.name[: -len(suffix)], k
        if name is None or not NAME.fullmatch(name) or not entry.is_file():
            ignored.append(entry.name)
            continue
        if name in found:
            ignored.append(entry.name)  # NAME.txt.j2 beside NAME.json.j2
            continue
        try:
            found[name] = (entry.read_text("utf-8"), kind)
        except (OSError, UnicodeDecodeError) as exc:
            LOG.error("Template %s cannot be read: %s; not installed", entry, exc)
    if ignored:
        LOG.warning(
            "[templates] path %s: ignored %s (a template is NAME.json.j2 or NAME.txt.j2, "
            "NAME of A-Z, a-z, 0-9, _ and -, one file per name)",
            path,
            ", ".join(masking.escape_control(n) for n in ignored),
        )
    return found


def _child_env() -> dict[str, str]:
    """The environment of a worker: this process's, with this very package importable."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


class _Worker:
    """One render worker process (``worker.py``) and its pipes."""

    def __init__(self, setup: bytes, max_answer: int) -> None:
        # A new interpreter (fork and exec): the service's threads and locks stay here.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ceilo_notifier.templates.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            env=_child_env(),
            close_fds=True,
        )
        self.max_answer = max_answer
        try:
            self.send(setup)
            if self.receive(START_TIMEOUT) != worker.READY:
                raise OSError("no ready signal")
        except (OSError, TimeoutError) as exc:
            self.kill()
            raise TemplateError(f"no render worker started: {exc}") from None

    def send(self, payload: bytes) -> None:
        worker.write_frame(self.process.stdin.fileno(), payload)

    def receive(self, timeout: float) -> bytes:
        """One frame, within ``timeout`` seconds.

        :raises TimeoutError: not in time.
        :raises EOFError: the worker closed its end (it died).
        :raises OSError: a frame longer than a worker may write.
        """
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        header = self._read(fd, worker.HEADER.size, deadline)
        (size,) = worker.HEADER.unpack(header)
        if size > self.max_answer:
            raise OSError(f"an answer of {size} bytes")
        return self._read(fd, size, deadline)

    @staticmethod
    def _read(fd: int, size: int, deadline: float) -> bytes:
        data = bytearray()
        while len(data) < size:
            left = deadline - time.monotonic()
            # poll, not select: the service raises its open file limit, and
            # select cannot wait on a descriptor past 1023.
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if left <= 0 or not poller.poll(left * 1000):
                raise TimeoutError
            chunk = os.read(fd, size - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return bytes(data)

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass


class _Pool:
    """Render worker processes: at most ``size``, started when needed, replaced
    when killed."""

    def __init__(self, setup: bytes, size: int, max_answer: int) -> None:
        self.setup = setup
        self.size = size
        self.max_answer = max_answer
        self.cond = threading.Condition()
        self.idle: list[_Worker] = []
        self.count = 0
        self.pid = os.getpid()

    def acquire(self, timeout: float | None = None) -> _Worker:
        """An idle worker, or a new one; TemplateError when none is free within
        ``timeout`` (renders of one slow template must not queue every other)."""
        with self.cond:
            if self.pid != os.getpid():  # a forked copy: those workers are the parent's
                self.idle, self.count, self.pid = [], 0, os.getpid()
            free = lambda: self.idle or self.count < self.size  # noqa: E731
            if not self.cond.wait_for(free, timeout):
                raise TemplateError(
                    f"no render worker free within {timeout:g} s (all {self.size} busy)"
                )
            if self.idle:
                return self.idle.pop()
            self.count += 1
        try:
            return _Worker(self.setup, self.max_answer)
        except BaseException as exc:
            self.release(None)
            if isinstance(exc, TemplateError):
                raise
            raise TemplateError(f"no render worker started: {exc}") from None

    def release(self, used: _Worker | None) -> None:
        """Give a worker back; None when it was killed (or never started)."""
        with self.cond:
            if used is not None:
                self.idle.append(used)
            else:
                self.count -= 1
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            idle, self.idle = self.idle, []
            self.count -= len(idle)
        for w in idle:
            w.kill()


class Templates:
    """The installed templates of one process, and the workers that render them.

    Made once per process and configuration (``get``); loading reads and
    parses the files, and starts nothing: the workers start on the first render.
    """

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        register_opts(conf)
        opts = conf[GROUP]
        self.max_body_bytes = opts.max_body_bytes
        self.render_timeout = opts.render_timeout
        self._stops: dict[str, tuple[int, float]] = {}  # name: (stopped in a row, until)
        self._stops_lock = threading.Lock()
        sources = _read_builtins()
        if opts.path:
            sources.update(_read_folder(opts.path))
        env = sandbox.Environment(self.max_body_bytes)
        self.sources: dict[str, tuple[str, str]] = {}
        # Operator templates that do not parse: named in check() and in the log.
        self.broken: dict[str, str] = {}
        for name, (source, kind) in sorted(sources.items()):
            try:
                sandbox.parse_check(env, source)
            except Exception as exc:  # noqa: BLE001 - any parse failure keeps it out
                line = getattr(exc, "lineno", None)
                where = f" (line {line})" if line else ""
                message = getattr(exc, "message", None) or str(exc)
                self.broken[name] = masking.escape_control(
                    f"{type(exc).__name__}{where}: {message}"
                )
                LOG.error("Template %s does not parse: %s", name, self.broken[name])
                continue
            self.sources[name] = (source, kind)
        setup = {
            "sources": self.sources,
            "max_size": self.max_body_bytes,
            "memory": opts.render_memory_mb << 20,
        }
        self._pool = _Pool(
            json.dumps(setup).encode(), opts.render_workers, self.max_body_bytes + 1024
        )
        self._threads: tuple[int, futures.ThreadPoolExecutor] | None = None
        self._threads_lock = threading.Lock()
        LOG.info("Payload templates installed: %s", ", ".join(self.names) or "none")

    @property
    def names(self) -> list[str]:
        return sorted(self.sources)

    def content_type(self, name: str) -> str:
        return SPECIAL_CONTENT_TYPES.get(name) or CONTENT_TYPES[self.sources[name][1]]

    def check(self, name: str) -> None:
        """:raises ValueError: the name is not an installed template."""
        if name in self.sources:
            return
        shown = masking.escape_control(name[:100])
        if name in self.broken:
            raise ValueError(f"template '{shown}' does not parse: {self.broken[name]}")
        installed = ", ".join(self.names) or "none"
        raise ValueError(f"unknown template '{shown}'; installed: {installed}")

    def check_action(self, action: parse.SplitResult) -> str | None:
        """The template an action names, checked, or None.

        :raises ValueError: the parameter is given twice, or names no installed template.
        """
        given = [
            value
            for key, value in parse.parse_qsl(action.query, keep_blank_values=True)
            if key == PARAM
        ]
        if not given:
            return None
        if len(given) > 1:
            raise ValueError(f"{PARAM} is given {len(given)} times")
        self.check(given[0])
        return given[0]

    def render(self, name: str, notification: AlarmNotification) -> Rendered:
        """Render a template over a notification, in a worker (blocking).

        :raises TemplateError: with the cause.
        """
        if name not in self.sources:
            try:
                self.check(name)
            except ValueError as exc:
                raise TemplateError(str(exc)) from None
        try:
            request = json.dumps(
                {"name": name, "vars": variables(notification)}, default=str
            ).encode()
        except (ValueError, TypeError, RecursionError) as exc:
            raise TemplateError(f"the alarm's fields cannot be handed over: {exc}") from None
        self._not_stopped_lately(name)
        used = self._pool.acquire(self.render_timeout)
        status = None
        try:
            status, payload = self._ask(used, request)
        finally:
            if status in (worker.OK, worker.ERROR):
                self._pool.release(used)
            else:  # past its deadline, dead, exiting, or an answer no worker writes
                used.kill()
                self._pool.release(None)
            self._stopped_count(name, killed=status not in (worker.OK, worker.ERROR))
        if status == worker.OK:
            return Rendered(payload, self.content_type(name))
        raise TemplateError(payload.decode("utf-8", "replace"))

    def _not_stopped_lately(self, name: str) -> None:
        """A template whose last renders were all stopped (past their deadline, or
        out of memory) is not rendered for a while: each costs a worker killed
        and started again, and tenants choose the template."""
        with self._stops_lock:
            count, until = self._stops.get(name, (0, 0.0))
        if count >= STOPS_BEFORE_PAUSE and time.monotonic() < until:
            raise TemplateError(
                f"its last {count} renders were stopped; not rendered again for "
                f"{until - time.monotonic():.0f} s"
            )

    def _stopped_count(self, name: str, killed: bool) -> None:
        with self._stops_lock:
            if not killed:
                self._stops.pop(name, None)
                return
            count = self._stops.get(name, (0, 0.0))[0] + 1
            self._stops[name] = (count, time.monotonic() + STOPPED_PAUSE)
            if len(self._stops) > len(self.sources) + 16:  # names are checked: bounded
                self._stops.pop(next(iter(self._stops)))

    def _ask(self, used: _Worker, request: bytes) -> tuple[bytes, bytes]:
        """One render in a worker: (status, body or cause).

        :raises TemplateError: past the deadline, or the worker died.
        """
        try:
            used.send(request)
            answer = used.receive(self.render_timeout)
        except TimeoutError:
            raise TemplateError(
                f"render took longer than render_timeout ({self.render_timeout:g} s); stopped"
            ) from None
        except (EOFError, OSError) as exc:
            code = used.process.poll()
            raise TemplateError(
                f"the render worker died (exit code {code})"
                if code is not None
                else f"the render worker failed ({type(exc).__name__}: {exc})"
            ) from None
        return answer[:1], answer[1:]

    async def render_async(self, name: str, notification: AlarmNotification) -> Rendered:
        """``render`` from the event loop, in threads of its own (one per worker)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(), self.render, name, notification)

    async def payload_of(
        self, action: parse.SplitResult, notification: AlarmNotification
    ) -> Rendered | None:
        """The rendering of the template an action names, or None if it names none.

        :raises notifiers.DeliveryError: the render failed (final: it fails the
            same way again), naming the template.
        """
        name = name_of(action)
        if name is None:
            return None
        try:
            return await self.render_async(name, notification)
        except TemplateError as exc:
            shown = masking.escape_control(name[:100])
            raise notifiers.DeliveryError(
                f"template '{shown}' failed: {masking.escape_control(str(exc))}"
            ) from None

    def _executor(self) -> futures.ThreadPoolExecutor:
        """The render threads of this process (made on first use, again after a fork)."""
        with self._threads_lock:
            if self._threads is None or self._threads[0] != os.getpid():
                threads = futures.ThreadPoolExecutor(self._pool.size, thread_name_prefix="render")
                self._threads = (os.getpid(), threads)
            return self._threads[1]

    def close(self) -> None:
        """Stop the workers (new ones start if a render comes after)."""
        self._pool.close()


_LOCK = threading.Lock()
_INSTANCES: dict[int, tuple[cfg.ConfigOpts, Templates]] = {}


def get(conf: cfg.ConfigOpts) -> Templates:
    """The Templates of this configuration in this process, loaded on first use."""
    with _LOCK:
        found = _INSTANCES.get(id(conf))
        if found is None or found[0] is not conf:
            found = _INSTANCES[id(conf)] = (conf, Templates(conf))
        return found[1]
