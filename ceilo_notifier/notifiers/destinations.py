"""Apprise services as actions: ``slack://``, ``workflow://``, ``pagerduty://``,
``mailto://``, ``ntfy://``, ``json://`` and the few hundred others Apprise knows.

How the service knows them. ``provide`` is a *plugin provider* (the entry
point namespace ``ceilo_notifier.notifier_providers``, see
``ceilo_notifier.notifiers``): it returns ``{scheme: AppriseNotifier}`` for
every Apprise scheme that is an action. The plugin loader, ``actions.installed``
(validation, metric labels) and ``check-action`` merge it with the
``ceilo_notifier.notifier`` plugins, which win on a scheme both serve; the
service names no plugin. An action scheme is one Apprise has enabled (its
optional packages installed) and that sends to a remote server, restricted
by ``[apprise] schemes``. Never an action, whatever the option says:

* schemes acting on the notifier's own host: desktop notifications
  (``windows``, ``macosx``, ``dbus``/``kde``/``qt``, ``glib``/``gio``,
  ``gnome``), ``syslog`` (the local log), ``blink1`` (a USB light);
* ``rsyslog``: it does send to a remote host, but by UDP, so there is no
  answer to tell delivered from lost (no retry, no endpoint health can work),
  and its default host is the notifier's own (``localhost:514``);
* ``xmpp`` and ``mqtt``: their clients connect from threads of their own,
  where the guard below does not reach (the guard refuses a thread started
  from a guarded one, so they could not work anyway).

An action naming a local file (Apprise reads ``template=``, ``keyfile=``,
``pgppub=``... as attachments, from disk or a URL) is refused: a tenant may
not have the service read its files or fetch content for it.

Target safety. Apprise's services call requests, smtplib and sockets
themselves, so the check is below them: ``egress`` judges every
connection a thread running Apprise makes, on the peer address just before
the system call (an audit hook, thread-local), and every address a name
resolves to. Measured on this design (see doc/source/destinations.rst): the hook costs the
rest of the service 0.3 to 0.5 µs per audited event (a log record, a
connect; nothing measurable on a connection), and an Apprise ``json://``
attempt to a local receiver took 4.4 ms where a bare ``requests.post`` took
1.6 to 2.7 ms (Apprise's own work, the URL parse (0.2 ms) and a hop to a
thread). The alternatives were heavier: an egress proxy inside the service (a
second hop and a CONNECT for every request, and smtplib does not speak to
proxies) or a worker process (a fork and an IPC round trip per attempt, or
a second pool to size).

Deadline. ``notify_async`` runs each attempt in a thread of a pool of its
own (``[apprise] pool_size``), so a hung service holds those threads and no
other plugin's, and gives up at ``[alarm] rest_notifier_timeout``: a thread
not free by then (the attempt never started) is ``NotReached``, an attempt
still running is ``TimedOut``; both are retried by the engine. Apprise's
socket timeouts are set within the deadline, so the thread of a hung
attempt is freed soon after (a receiver dripping bytes can hold it longer:
requests' read timeout is per read). Apprise's own retries (``retry=``)
are off and redirects are not followed, whatever the URL says.

Outcome. Apprise's ``notify()`` says only True or False: its log says why.
Its records are captured per thread (never written to the service log as
they are: they may quote a token) and read: a refusal by the guard is
final; an HTTP status (``error=503``) is retried or final as for http; a
connection error or a timeout is retried; a failure before any connection
(a configuration Apprise refuses) is final. The cause is written with every
piece of the URL that Apprise's privacy form hides replaced by ``***``.

Secrets. ``masking.mask_url`` hands an Apprise URL to ``mask_action``:
Apprise's own privacy form (``url(privacy=True)``), or ``scheme://***`` for
one Apprise cannot read.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
import time
from concurrent import futures
from urllib import parse

from oslo_config import cfg
from oslo_log import log

from ceilo_notifier import masking, notifiers, templates
from ceilo_notifier.notification import AlarmNotification
from ceilo_notifier.notifiers import egress, rest, safety

LOG = log.getLogger(__name__)

# Apprise plugin modules whose schemes are never actions (see above).
LOCAL_MODULES = frozenset(
    {"windows", "macosx", "dbus", "glib", "gnome", "syslog", "rsyslog", "blink1"}
    # vapid:// reads the key file its URL names when it sends (keyfile=, subfile=):
    # a tenant could probe or use the notifier's own files.
    | {"vapid"}
)
OWN_THREAD_MODULES = frozenset({"xmpp", "mqtt"})

# What the alarm's state says to services that tell kinds apart (Opsgenie
# opens on failure and closes on success, colours in chat).
_NOTIFY_TYPES = {"alarm": "failure", "ok": "success", "insufficient data": "warning"}
_STATUS = re.compile(r"\berror=(\d{3})\b")
_PIECES = re.compile(r"[^/:@?&=#;,+]+")
MIN_SECRET = 3  # shorter pieces of a URL are not hunted for in messages


@functools.cache
def _apprise():
    import apprise

    logger = logging.getLogger("apprise")
    # Apprise's records may quote tokens: captured per attempt, never logged as they are.
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(_CAPTURE)
    # Neither urllib3's lines of an Apprise thread (they carry the request's path).
    logging.getLogger("urllib3").addFilter(_NotGuarded())
    logging.getLogger("urllib3.connectionpool").addFilter(_NotGuarded())
    return apprise


@functools.cache
def _asset():
    apprise = _apprise()
    # Nothing kept on disk between attempts (Apprise's persistent storage).
    return apprise.AppriseAsset(
        storage_mode=apprise.PersistentStoreMode.MEMORY, secure_logging=True
    )


class _NotGuarded(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not egress.is_guarded()


class _Capture(logging.Handler):
    """Keeps the records of Apprise's logger per thread, while a thread asks for them."""

    LIMIT = 50

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        records = getattr(self.local, "records", None)
        if records is not None and len(records) < self.LIMIT:
            records.append(record)

    def start(self) -> list[logging.LogRecord]:
        self.local.records = []
        return self.local.records

    def stop(self) -> None:
        self.local.records = None


_CAPTURE = _Capture()


def _module_of(cls: type) -> str:
    """``slack`` for apprise.plugins.slack, ``email`` for apprise.plugins.email.base."""
    parts = cls.__module__.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "plugins" else parts[-1]


@functools.cache
def _schemes() -> tuple[frozenset[str], frozenset[str]]:
    """(every scheme Apprise knows, those that are actions by default)."""
    from apprise.manager_plugins import NotificationManager

    _apprise()
    manager = NotificationManager()
    manager.load_modules()
    every, remote = set(), set()
    for scheme in manager.schemas():
        cls = manager[scheme]
        every.add(scheme.lower())
        module = _module_of(cls)
        if module in LOCAL_MODULES or module in OWN_THREAD_MODULES:
            continue
        if getattr(cls, "enabled", True):
            remote.add(scheme.lower())
    return frozenset(every), frozenset(remote)


def register_opts(conf: cfg.ConfigOpts) -> None:
    from ceilo_notifier import opts

    opts.register_missing(conf, opts.APPRISE_OPTS, "apprise")
    opts.register_missing(conf, opts.ALARM_OPTS, "alarm")


_warned: set[str] = set()


def provide(conf: cfg.ConfigOpts | None) -> dict[str, type[notifiers.AlarmNotifier]]:
    """The plugin provider: every Apprise scheme that is an action, to this class."""
    try:
        every, schemes = _schemes()
    except ImportError as exc:
        LOG.error("Apprise is not installed (%s): no Apprise service is an action", exc)
        return {}
    masking.register_scheme_mask(every, mask_action)
    if conf is not None:
        register_opts(conf)
        chosen = conf.apprise.schemes
        if chosen is not None:
            wanted = {s.strip().lower() for s in chosen if s.strip()}
            for scheme in sorted(wanted - schemes):
                if scheme not in _warned:
                    _warned.add(scheme)
                    why = "acts on this host" if scheme in every else "unknown to Apprise"
                    LOG.warning("[apprise] schemes: %s is not an action (%s)", scheme, why)
            schemes = schemes & wanted
    return {scheme: AppriseNotifier for scheme in sorted(schemes)}


# -- parsing, masking ------------------------------------------------------------


class _Invalid(ValueError):
    """Apprise refuses the URL; the message is Apprise's reason, masked."""


def _hider(url: str, shown: str | None):
    """A function that replaces, in a text, every piece of ``url`` that the
    privacy form ``shown`` does not show (tokens, passwords, keys)."""
    visible = set(_PIECES.findall(mask_action(url) if shown is not None else ""))
    body = url.split("://", 1)[-1]
    pieces = set()
    for piece in _PIECES.findall(body):
        for form in {piece, parse.unquote(piece), parse.unquote_plus(piece)}:
            if len(form) >= MIN_SECRET and form not in visible:
                pieces.add(form)
    ordered = sorted(pieces, key=len, reverse=True)

    def hide(text: str) -> str:
        for piece in ordered:
            text = text.replace(piece, masking.MASK)
        return masking.mask_text(text)

    return hide


def _instantiate(url: str):
    """Apprise's plugin object for ``url`` (no I/O); _Invalid with Apprise's reason."""
    apprise = _apprise()
    records = _CAPTURE.start()
    try:
        plugin = apprise.Apprise.instantiate(url, asset=_asset(), suppress_exceptions=False)
    except Exception as exc:  # noqa: BLE001 - Apprise's plugins raise what they like
        reason = str(exc) or type(exc).__name__
        raise _Invalid(f"Apprise refuses it: {_hider(url, None)(reason)}") from None
    finally:
        _CAPTURE.stop()
    if plugin is None:
        scheme = url.split(":", 1)[0]
        said = [r for r in records if r.levelno >= logging.WARNING]
        if said and "Unparseable" not in said[-1].getMessage():
            reason = _hider(url, None)(said[-1].getMessage())
            raise _Invalid(f"Apprise refuses it: {reason}")
        raise _Invalid(f"Apprise cannot read this {scheme}:// URL")
    local = _local_content(plugin)
    if local:
        raise _Invalid(
            f"it names content for the service to read ({local}): files and "
            "attachments are not allowed in actions"
        )
    return plugin


def _local_content(plugin, depth: int = 0) -> str | None:
    """The attribute of an Apprise object holding an attachment (a template,
    a key file...), or None. Looked for two objects deep (a PGP controller's)."""
    from apprise import AppriseAttachment
    from apprise.attachment.base import AttachBase

    for name, value in vars(plugin).items():
        if isinstance(value, AppriseAttachment):
            if len(value):
                return name.strip("_")
        elif isinstance(value, AttachBase):
            return name.strip("_")
        elif (
            depth < 1
            and hasattr(value, "__dict__")
            and type(value).__module__.startswith("apprise.")
        ):
            found = _local_content(value, depth + 1)
            if found:
                return found
    return None


@functools.lru_cache(maxsize=4096)
def _parsed(url: str):
    """A plugin object for reading (masking, endpoint), never for sending; or None."""
    try:
        return _instantiate(url)
    except _Invalid:
        return None


def mask_action(url: str) -> str:
    """Apprise's privacy form of an action URL (``slack://T...0/B...0/X...X/``);
    ``scheme://***`` when Apprise cannot read it."""
    text = str(url).strip()
    scheme = text.split(":", 1)[0].lower()
    plugin = _parsed(text)
    if plugin is None:
        return f"{scheme}://{masking.MASK}"
    try:
        shown = plugin.url(privacy=True)
    except Exception:  # noqa: BLE001 - a plugin's url() may fail; show nothing then
        return f"{scheme}://{masking.MASK}"
    # The privacy form keeps custom headers (+), query parameters (-) and
    # payload fields (:) of json://, form://, xml:// as written: an API key or
    # a bearer token is often one of them. Their values are not shown.
    base, sep, query = shown.partition("?")
    pairs = parse.parse_qsl(query, keep_blank_values=True)
    if not any(k[:1] in "+-:" for k, _ in pairs):
        return shown
    hidden = [(k, masking.MASK if k[:1] in "+-:" else v) for k, v in pairs]
    return f"{base}?{parse.urlencode(hidden, safe='*')}"


# -- where it connects ------------------------------------------------------------

_FIXED = {
    "discord": "https://discord.com:443",
    "telegram": "https://api.telegram.org:443",
}


def _http(
    host: str | None, port: int | None, secure: bool, scheme: str | None = None
) -> str | None:
    scheme = scheme or ("https" if secure else "http")
    port = port or (443 if scheme in ("https", "smtps") else 80)
    return rest.endpoint_name(scheme, host, port)


def endpoint_of(plugin) -> str | None:
    """``scheme://host:port`` of the server an Apprise plugin object sends to, or None."""
    module = _module_of(type(plugin))
    if module in _FIXED:
        return _FIXED[module]
    if module == "email":
        ssl = getattr(plugin, "secure_mode", None) == "ssl"
        port = getattr(plugin, "port", None) or (465 if ssl else 25)
        return _http(plugin.smtp_host or plugin.host, port, ssl, "smtps" if ssl else "smtp")
    if module == "slack":
        mode = getattr(plugin, "mode", "")
        if mode == "bot":
            return "https://slack.com:443"
        return "https://hooks.slack-gov.com:443" if "gov" in mode else "https://hooks.slack.com:443"
    if module == "pagerduty":
        eu = getattr(plugin, "region_name", "us") == "eu"
        return f"https://events.{'eu.' if eu else ''}pagerduty.com:443"
    if module == "opsgenie":
        eu = getattr(plugin, "region_name", "us") == "eu"
        return f"https://api.{'eu.' if eu else ''}opsgenie.com:443"
    if module == "ntfy" and getattr(plugin, "mode", "") == "cloud":
        return "https://ntfy.sh:443"
    if module == "workflows":  # always https
        return _http(plugin.host, plugin.port, True)
    if "host" in getattr(type(plugin), "template_tokens", {}):
        return _http(plugin.host, plugin.port, bool(plugin.secure))
    return None


# -- the plugin -------------------------------------------------------------------


def _line(value: object) -> str:
    return masking.escape_control(str(value)) if value not in (None, "") else ""


class AppriseNotifier(notifiers.AlarmNotifier):
    """Every Apprise service: one instance serves all the schemes ``provide`` gives."""

    provider = "Apprise"
    supports_templates = True

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        register_opts(conf)
        opts = conf.alarm
        self.policy = safety.AddressPolicy(
            opts.rest_notifier_denied_networks, opts.rest_notifier_allowed_networks
        )
        self.timeout = opts.rest_notifier_timeout
        # The engine's deadline sits past ours, which reports in our words.
        self.attempt_timeout = self.timeout + 1.0
        self.threads = conf.apprise.pool_size
        self.pool = futures.ThreadPoolExecutor(self.threads, thread_name_prefix="apprise")
        self.templates = templates.get(conf)
        egress.install()
        _apprise()

    # -- at registration and intake, no I/O

    @classmethod
    def validate(cls, action: parse.SplitResult) -> None:
        try:
            _instantiate(action.geturl())
        except _Invalid as exc:
            raise ValueError(str(exc)) from None

    def endpoint(self, action: parse.SplitResult) -> str | None:
        plugin = _parsed(action.geturl())
        return endpoint_of(plugin) if plugin is not None else None

    # -- an attempt

    @staticmethod
    def message(notification: AlarmNotification) -> tuple[str, str]:
        """(title, body) of a transition. The title is a mail's subject."""
        n = notification
        name = _line(n.alarm_name) or _line(n.alarm_id)
        change = f"{_line(n.previous) or '?'} → {_line(n.current) or '?'}"
        severity = _line(n.severity)
        title = f"{name}: {change}" + (f" [{severity}]" if severity else "")
        lines = [
            f"Alarm {name} ({_line(n.alarm_id)}) went {change}.",
            f"Severity: {severity or 'unknown'}",
            f"Reason: {_line(n.reason) or '-'}",
        ]
        return title, "\n".join(lines)

    async def _prepare(
        self, action: parse.SplitResult, n: AlarmNotification
    ) -> tuple[str, str, str]:
        """(Apprise URL, title, body) of an attempt: the body is the rendering of
        the template the action names, if it names one (its control parameter
        never reaches Apprise)."""
        title, body = self.message(n)
        rendered = await self.templates.payload_of(action, n)
        if rendered is None:
            return action.geturl(), title, body
        return templates.strip(action).geturl(), title, rendered.body.decode("utf-8")

    async def notify_async(
        self, action: parse.SplitResult, notification: AlarmNotification
    ) -> None:
        url, title, body = await self._prepare(action, notification)
        kind = _NOTIFY_TYPES.get((notification.current or "").lower(), "info")
        deadline = time.monotonic() + self.timeout
        guard = egress.Guarded(self.policy)
        running = self.pool.submit(self._attempt, url, title, body, kind, deadline, guard)
        waited = asyncio.wrap_future(running)
        # Read whatever it ends in, even after we have given up on it.
        waited.add_done_callback(lambda f: f.cancelled() or f.exception())
        done, _ = await asyncio.wait([waited], timeout=self.timeout)
        if not done:
            # Its sockets are shut: a receiver dripping bytes, or one that never
            # answers, cannot keep the thread past the attempt.
            guard.cut()
            raise self._overdue(running)
        return waited.result()

    def notify(self, action: parse.SplitResult, notification: AlarmNotification) -> None:
        """Blocking form, for callers without the engine's loop."""
        url, title, body = asyncio.run(self._prepare(action, notification))
        kind = _NOTIFY_TYPES.get((notification.current or "").lower(), "info")
        guard = egress.Guarded(self.policy)
        running = self.pool.submit(
            self._attempt, url, title, body, kind, time.monotonic() + self.timeout, guard
        )
        try:
            return running.result(self.timeout)
        except futures.TimeoutError:
            guard.cut()
            raise self._overdue(running) from None

    def _overdue(self, running: futures.Future) -> notifiers.RetryableError:
        if running.cancel():
            return notifiers.NotReached(
                f"all {self.threads} Apprise threads busy for {self.timeout:g} s"
            )
        return notifiers.TimedOut(f"no complete answer within {self.timeout:g} s")

    def _attempt(
        self, url: str, title: str, body: str, kind: str, deadline: float, guard: egress.Guarded
    ) -> None:
        """In a thread of the pool: one Apprise notification, guarded."""
        left = deadline - time.monotonic()
        if left < 0.2:
            raise notifiers.NotReached("no Apprise thread free before the attempt's deadline")
        try:
            plugin = _instantiate(url)
        except _Invalid as exc:
            raise notifiers.DeliveryError(f"invalid Apprise URL: {exc}") from None
        hide = _hider(url, self._shown(plugin))
        # Apprise's retries off, no redirects, its socket timeouts within ours.
        plugin.retry = 0
        plugin.wait = 0.0
        plugin.redirects = False
        seconds = max(0.1, 0.9 * left)
        plugin.socket_connect_timeout = seconds
        plugin.socket_read_timeout = seconds
        records = _CAPTURE.start()
        error: BaseException | None = None
        try:
            with egress.guarded(self.policy, guard):
                try:
                    sent = plugin.notify(body=body, title=title, notify_type=kind)
                except Exception as exc:  # noqa: BLE001 - whatever Apprise's plugin raised
                    sent, error = False, exc
        finally:
            _CAPTURE.stop()
        if guard.refusal is not None:
            raise notifiers.DeliveryError(f"target refused: {guard.refusal}")
        if sent:
            return None
        raise self._failure(records, guard, error, hide)

    @staticmethod
    def _shown(plugin) -> str | None:
        try:
            return plugin.url(privacy=True)
        except Exception:  # noqa: BLE001
            return None

    @staticmethod
    def _failure(
        records: list[logging.LogRecord],
        guard: egress.Guarded,
        error: BaseException | None,
        hide,
    ) -> notifiers.DeliveryError:
        """The error an unsuccessful Apprise notification ends in, from what it logged."""
        said = [hide(_message(r)) for r in records if r.levelno >= logging.WARNING]
        detail = [
            hide(_message(r).split(":", 1)[1].strip())
            for r in records
            if r.levelno < logging.WARNING and _message(r).startswith("Socket Exception:")
        ]
        if error is not None:
            detail.append(hide(f"{type(error).__name__}: {error}"))
        summary = "; ".join(said[-2:]) or "Apprise reported a failure"
        for text in reversed(said):
            match = _STATUS.search(text)
            if match:
                status = int(match.group(1))
                return notifiers.status_error(f"HTTP {status}: {summary}", status)
        cause = _socket_cause(detail[-1]) if detail else None
        if cause is not None and "timed out" in cause.lower():
            return notifiers.TimedOut(f"timed out: {summary} ({cause})")
        if guard.networked:
            return notifiers.RetryableError(
                f"connection error: {summary}" + (f" ({cause})" if cause else "")
            )
        return notifiers.DeliveryError(summary + (f" ({cause})" if cause else ""))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.templates.close()


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001
        return str(record.msg)


_URLISH = re.compile(r"(with url: )\S+|[A-Za-z][A-Za-z0-9+.-]*://\S+")


def _socket_cause(text: str) -> str:
    """The innermost words of a requests/smtplib error, without the URL it quotes."""
    text = _URLISH.sub(lambda m: (m.group(1) or "") + masking.MASK, text)
    for pattern in (r"\[Errno -?\d+\][^'\")]*", r"[Rr]ead timed out[^'\")]*", r"timed out"):
        found = re.findall(pattern, text)
        if found:
            return found[-1].strip().rstrip(".")
    return text[:200]
