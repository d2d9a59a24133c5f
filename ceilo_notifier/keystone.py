"""Keystone service credentials and trust-scoped tokens, with keystoneauth1.

The ``[service_credentials]`` group holds the standard keystoneauth options
(``auth_type``, ``auth_url``, ``username``, ``password``, ``user_domain_name``,
``project_name``..., plus the session options ``cafile``, ``insecure``,
``timeout``...), as in every OpenStack service.

``TrustTokens`` keeps one auth plugin per trust id. keystoneauth caches the
token in the plugin and fetches a new one only when it is about to expire
(or after ``invalidate``), so a busy trust costs one Keystone authentication
per token lifetime, not one per notification. All plugins share one
keystoneauth session: one connection pool and one cached version discovery.
"""

from __future__ import annotations

import collections
import json
import re
import threading

from keystoneauth1 import exceptions as ka_exceptions
from keystoneauth1 import loading as ka_loading
from keystoneauth1 import plugin as ka_plugin
from keystoneauth1 import session as ka_session
from oslo_config import cfg

from ceilo_notifier import masking, opts
from ceilo_notifier.masking import MASK

GROUP = opts.KEYSTONE_GROUP

# Options that scope a token to something other than a trust. Keystone (and
# keystoneauth) refuse a token request scoped to two targets, so they are
# dropped when a token is requested for a trust.
_OTHER_SCOPES = (
    "project_id",
    "project_name",
    "project_domain_id",
    "project_domain_name",
    "domain_id",
    "domain_name",
    "system_scope",
)

# Most trusts whose auth plugin (and cached token) is kept; the least
# recently used one is forgotten beyond that.
MAX_CACHED_TRUSTS = 1024


# keystoneauth logs the body of every token it gets at DEBUG; a trust id
# is a credential, so it is masked there.
_KEYSTONEAUTH_TOKEN_LOGGER = "keystoneauth.identity.v3.base"
_TRUST_ID_IN_JSON = re.compile(r'("OS-TRUST:trust":\s*\{[^{}]*?"id":\s*")[^"]*(")')


def _mask_trust_ids(message: str) -> str:
    if "OS-TRUST:trust" not in message:
        return message
    try:
        body = json.loads(message)
        body["token"]["OS-TRUST:trust"]["id"] = MASK
        return json.dumps(body)
    except (ValueError, KeyError, TypeError):
        return _TRUST_ID_IN_JSON.sub(rf"\g<1>{MASK}\g<2>", message)


class NotConfigured(Exception):
    """``[service_credentials]`` cannot give a token for a trust."""


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register the base auth and session options (declared in opts); idempotent.

    The options of the chosen ``auth_type`` are registered by keystoneauth
    when the plugin is loaded, as in every OpenStack service.
    """
    opts.register_keystone_opts(conf)


def load_service_auth(conf: cfg.ConfigOpts) -> ka_plugin.BaseAuthPlugin:
    """The auth plugin of the service user itself, scoped as configured.

    :raises NotConfigured: no auth_type.
    """
    auth = ka_loading.load_auth_from_conf_options(conf, GROUP)
    if auth is None:
        raise NotConfigured(
            f"[{GROUP}] auth_type is not set: this action needs the service "
            "credentials of a Keystone user"
        )
    return auth


def _auth_group(conf: cfg.ConfigOpts) -> str:
    return conf[GROUP].auth_section or GROUP


def load_trust_auth(conf: cfg.ConfigOpts, trust_id: str) -> ka_plugin.BaseAuthPlugin:
    """An auth plugin of the service user, scoped to trust_id.

    :raises NotConfigured: no auth_type, or one that cannot use a trust.
    """
    group = _auth_group(conf)
    name = conf[group].auth_type
    if not name:
        raise NotConfigured(
            f"[{GROUP}] auth_type is not set: trust+ actions need the service "
            "credentials of a Keystone user"
        )
    loader = ka_loading.get_plugin_loader(name)
    dests = {opt.dest for opt in loader.get_options()}
    if "trust_id" not in dests:
        raise NotConfigured(f"[{GROUP}] auth_type {name} cannot be scoped to a trust")
    overrides = {dest: None for dest in _OTHER_SCOPES if dest in dests}
    auth = ka_loading.load_auth_from_conf_options(conf, GROUP, trust_id=trust_id, **overrides)
    if auth is None:  # pragma: no cover - auth_type was checked above
        raise NotConfigured(f"[{GROUP}] auth_type is not set")
    return auth


class TrustTokens:
    """Tokens of the service user for trusts (and for itself), each cached until
    shortly before it expires, and the catalog endpoints they carry.

    Thread-safe: keystoneauth serialises the authentication of one plugin, so
    many deliveries for one trust wait for a single token request.
    """

    def __init__(self, conf: cfg.ConfigOpts, default_timeout: float | None = None) -> None:
        register_opts(conf)
        opts.register_missing(conf, opts.CATALOG_OPTS, GROUP)
        opts.register_missing(conf, opts.SERVICE_TYPES_OPTS, "service_types")
        masking.mask_logger(_KEYSTONEAUTH_TOKEN_LOGGER, _mask_trust_ids)
        self.conf = conf
        self._default_timeout = default_timeout
        self._session: ka_session.Session | None = None
        self._plugins: collections.OrderedDict[str, ka_plugin.BaseAuthPlugin] = (
            collections.OrderedDict()
        )
        self._service_auth: ka_plugin.BaseAuthPlugin | None = None
        self._lock = threading.Lock()

    @property
    def session(self) -> ka_session.Session:
        with self._lock:
            if self._session is None:
                session = ka_loading.load_session_from_conf_options(self.conf, GROUP)
                if session.timeout is None and self._default_timeout:
                    # Keystone must not hang a delivery forever either.
                    session.timeout = float(self._default_timeout)
                self._session = session
            return self._session

    def auth(self, trust_id: str) -> ka_plugin.BaseAuthPlugin:
        """The cached auth plugin of a trust, for requests through ``session``.

        :raises NotConfigured: no auth_type, or one that cannot use a trust.
        """
        with self._lock:
            auth = self._plugins.get(trust_id)
            if auth is not None:
                self._plugins.move_to_end(trust_id)
                return auth
            auth = load_trust_auth(self.conf, trust_id)
            self._plugins[trust_id] = auth
            while len(self._plugins) > MAX_CACHED_TRUSTS:
                self._plugins.popitem(last=False)
            return auth

    def service_auth(self) -> ka_plugin.BaseAuthPlugin:
        """The service user's own auth plugin (one, cached like the trusts').

        :raises NotConfigured: no auth_type.
        """
        with self._lock:
            if self._service_auth is None:
                self._service_auth = load_service_auth(self.conf)
            return self._service_auth

    def endpoint(self, auth: ka_plugin.BaseAuthPlugin, service_type: str) -> str:
        """The URL of a service in the catalog that ``auth``'s token carries.

        :raises NotConfigured: the catalog has no such endpoint.
        """
        options = self.conf[GROUP]
        try:
            url = self.session.get_endpoint(
                auth=auth,
                service_type=service_type,
                interface=options.interface,
                region_name=options.region_name,
            )
        except ka_exceptions.EndpointNotFound:
            url = None
        if not url:
            region = f" in region {options.region_name}" if options.region_name else ""
            raise NotConfigured(
                f"no {options.interface} endpoint of service type {service_type!r}{region} "
                "in the Keystone catalog"
            )
        return url

    def headers(self, trust_id: str) -> dict[str, str]:
        """``{"X-Auth-Token": ...}`` for the trust, from the cache or from Keystone.

        :raises NotConfigured: and keystoneauth's exceptions, unchanged.
        """
        session = self.session
        auth = self.auth(trust_id)
        try:
            headers = session.get_auth_headers(auth=auth)
        except Exception:
            self.forget(trust_id, auth)
            raise
        if not headers:  # pragma: no cover - password plugins always give a token
            raise NotConfigured(f"[{GROUP}] auth plugin gave no token")
        return headers

    def invalidate(self, trust_id: str) -> None:
        """Drop the cached token of a trust: the next use fetches a new one."""
        with self._lock:
            auth = self._plugins.get(trust_id)
        if auth is not None:
            auth.invalidate()

    def forget(self, trust_id: str, auth: ka_plugin.BaseAuthPlugin | None = None) -> None:
        """Forget a trust's plugin (after Keystone refused it, say)."""
        with self._lock:
            if auth is None or self._plugins.get(trust_id) is auth:
                self._plugins.pop(trust_id, None)

    def cached(self) -> int:
        with self._lock:
            return len(self._plugins)

    def close(self) -> None:
        with self._lock:
            self._plugins.clear()
            self._service_auth = None
            session, self._session = self._session, None
        if session is not None:
            session.session.close()
