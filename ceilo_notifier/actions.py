"""Action URLs as an alarm API sees them: validate, register, unregister.

An alarm API calls these when a user sets an alarm's actions, as aodh's API
does, so that a bad action is refused at once with its cause rather than
dropped later by the service:

``validate(conf, url)``
    raises ``InvalidAction`` (a ``ValueError``) naming the cause: not a
    string, too long, not parsable, an unknown scheme (the installed ones
    are listed), the scheme's own rules (``AlarmNotifier.validate``), a
    payload template (``ceilo-notifier-template``) that is not installed, or
    a ``trust+`` URL that already carries a trust id.
``register(conf, urls, auth)``
    creates one Keystone trust from the user of ``auth`` (a keystoneauth
    plugin of the requesting user) to the service user of
    ``[service_credentials]`` (impersonation, the user's roles in the
    project) for the ``trust+`` URLs, and returns the URLs rewritten to
    ``trust+http://TRUST_ID:delete@host/path`` (``:delete`` on the first only:
    that one owns the trust).
``unregister(conf, urls, auth)``
    deletes the trusts the URLs own; a trust already gone is fine.

Only the plugin classes are loaded (no connection is made), so the calls are
cheap inside an API process. The service checks every action with the same
``parse`` when an alarm arrives.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from urllib import parse as urlparse

from keystoneauth1 import exceptions as ka_exceptions
from keystoneauth1 import loading as ka_loading
from keystoneauth1 import plugin as ka_plugin
from keystoneauth1 import session as ka_session
from oslo_config import cfg

from ceilo_notifier import keystone, masking, notifiers, templates

TRUST_PREFIX = "trust+"
OWNER_MARK = "delete"


class InvalidAction(ValueError):
    """An action URL that cannot be delivered; the message says why."""


@functools.cache
def _defaults() -> dict[str, type[notifiers.AlarmNotifier]]:
    return notifiers.plugin_classes(None, on_load_failure=None)


def installed(conf: cfg.ConfigOpts | None = None) -> dict[str, type[notifiers.AlarmNotifier]]:
    """The installed notifier plugin classes, by scheme (none is instantiated):
    the ``ceilo_notifier.notifier`` plugins and the schemes plugin providers
    enable with ``conf`` (their defaults without it)."""
    if conf is None:
        return _defaults()
    return notifiers.plugin_classes(conf, on_load_failure=None)


def parse(action: object, max_length: int) -> urlparse.SplitResult:
    """The parsed URL of an action, with a scheme.

    :raises InvalidAction: not a string, longer than max_length, a NUL or a lone
        surrogate in it, a control character, unparsable or no scheme.
    """
    if not isinstance(action, str):
        raise InvalidAction(f"action is of type {type(action).__name__}, not a string")
    if len(action) > max_length:
        raise InvalidAction(f"action is {len(action)} characters long, more than {max_length}")
    bad = masking.unstorable(action)
    if bad:
        # The journal's database would refuse it (or, a surrogate, any UTF-8 encoder).
        raise InvalidAction(f"action contains {bad}, which the journal cannot store")
    if masking.has_control(action.strip()):
        # urlsplit would drop a newline or a tab silently and deliver elsewhere.
        raise InvalidAction("action contains control characters")
    try:
        url = urlparse.urlsplit(action.strip())
        url.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        # Not the parser's message: it quotes the authority (or what it took
        # for the port), password included.
        raise InvalidAction(f"unparsable URL: {masking.url_error(exc)}") from None
    if not url.scheme:
        raise InvalidAction("URL has no scheme")
    return url


def unknown_scheme(scheme: str, known: dict[str, object]) -> InvalidAction:
    """The error of a scheme no plugin serves: the plugins' schemes listed, a
    provider's (a few hundred Apprise services) counted."""
    return InvalidAction(
        f"unknown scheme {scheme!r} (installed: {notifiers.describe_schemes(known)})"
    )


def _register_opts(conf: cfg.ConfigOpts) -> None:
    from ceilo_notifier import opts

    opts.register_missing(conf, opts.ALARM_OPTS, "alarm")
    keystone.register_opts(conf)
    opts.register_missing(conf, opts.CATALOG_OPTS, keystone.GROUP)
    templates.register_opts(conf)


def validate(conf: cfg.ConfigOpts, url: object) -> None:
    """Check one action URL as an alarm API registers it.

    :raises InvalidAction: with the cause.
    """
    _register_opts(conf)
    parsed = parse(url, conf.alarm.max_action_length)
    scheme = parsed.scheme.lower()
    plugins = installed(conf)
    plugin = plugins.get(scheme)
    if plugin is None:
        raise unknown_scheme(parsed.scheme, plugins)
    if scheme.startswith(TRUST_PREFIX) and "@" in parsed.netloc:
        raise InvalidAction("a trust+ action cannot carry a trust id: register() creates the trust")
    try:
        plugin.validate(parsed)
        if getattr(plugin, "supports_templates", False) is True:
            templates.get(conf).check_action(parsed)
    except ValueError as exc:
        raise InvalidAction(str(exc)) from None


def _needs_trust(url: str) -> bool:
    parsed = urlparse.urlsplit(url.strip())
    return parsed.scheme.lower().startswith(TRUST_PREFIX) and "@" not in parsed.netloc


def _identity(conf: cfg.ConfigOpts) -> dict[str, object]:
    options = conf[keystone.GROUP]
    return {
        "service_type": "identity",
        "interface": options.interface,
        "region_name": options.region_name,
        "version": (3, 0),
    }


def _session(conf: cfg.ConfigOpts, auth: ka_plugin.BaseAuthPlugin) -> ka_session.Session:
    return ka_loading.load_session_from_conf_options(conf, keystone.GROUP, auth=auth)


def create_trust(conf: cfg.ConfigOpts, auth: ka_plugin.BaseAuthPlugin) -> str:
    """A new trust from the user of ``auth`` to the service user; its id."""
    _register_opts(conf)
    trustee = _session(conf, keystone.load_service_auth(conf)).get_user_id()
    user = _session(conf, auth)
    access = auth.get_access(user)
    if not access.project_id:
        raise InvalidAction("the requesting user's token is not scoped to a project")
    body = {
        "trust": {
            "trustor_user_id": access.user_id,
            "trustee_user_id": trustee,
            "project_id": access.project_id,
            "impersonation": True,
            "roles": [{"name": name} for name in access.role_names],
        }
    }
    response = user.post("/OS-TRUST/trusts", json=body, endpoint_filter=_identity(conf))
    return response.json()["trust"]["id"]


def delete_trust(conf: cfg.ConfigOpts, trust_id: str, auth: ka_plugin.BaseAuthPlugin) -> None:
    """Delete a trust as the user of ``auth``; one already gone is fine."""
    _register_opts(conf)
    try:
        _session(conf, auth).delete(
            f"/OS-TRUST/trusts/{urlparse.quote(trust_id, safe='')}",
            endpoint_filter=_identity(conf),
        )
    except ka_exceptions.NotFound:
        pass


def register(
    conf: cfg.ConfigOpts, urls: Iterable[str], auth: ka_plugin.BaseAuthPlugin
) -> list[str]:
    """The URLs, validated, with a new trust in those ``trust+`` URLs that need one.

    :raises InvalidAction: for the first invalid URL (no trust is created then).
    :raises keystoneauth1.exceptions.ClientException: Keystone refused the trust.
    """
    urls = list(urls)
    for url in urls:
        try:
            validate(conf, url)
        except InvalidAction as exc:
            raise InvalidAction(f"{masking.mask_url(url)}: {exc}") from None
    if not any(_needs_trust(url) for url in urls):
        return urls
    trust = urlparse.quote(create_trust(conf, auth), safe="")
    rewritten, owner = [], True
    for url in urls:
        if _needs_trust(url):
            parsed = urlparse.urlsplit(url.strip())
            userinfo = f"{trust}:{OWNER_MARK}" if owner else trust
            owner = False
            url = urlparse.urlunsplit(parsed._replace(netloc=f"{userinfo}@{parsed.netloc}"))
        rewritten.append(url)
    return rewritten


def owned_trusts(urls: Iterable[str]) -> list[str]:
    """The trust ids that the URLs own (``trust+…://TRUST_ID:delete@…``)."""
    found = []
    for url in urls:
        try:
            parsed = urlparse.urlsplit(url.strip())
        except (AttributeError, ValueError):
            continue
        if not parsed.scheme.lower().startswith(TRUST_PREFIX) or "@" not in parsed.netloc:
            continue
        user, _, password = parsed.netloc.rpartition("@")[0].partition(":")
        if user and password == OWNER_MARK and urlparse.unquote(user) not in found:
            found.append(urlparse.unquote(user))
    return found


def unregister(conf: cfg.ConfigOpts, urls: Iterable[str], auth: ka_plugin.BaseAuthPlugin) -> None:
    """Delete the trusts the URLs own, as the user of ``auth``."""
    for trust in owned_trusts(urls):
        delete_trust(conf, trust, auth)
