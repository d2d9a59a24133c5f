"""Every option of ceilo-notifier, declared once.

``list_opts`` feeds ``oslo-config-generator`` (entry point ``oslo.config.opts``);
``register_opts`` is what the service, the CLI tools and the tests call.

Options flow one way: the modules that read options import this one, and this
one imports none of the project's modules (only oslo.config, and the
libraries whose options it registers: keystoneauth1 for
``[service_credentials]``, oslo.messaging for the transport). Those two are
imported inside the functions that need them, so that importing the options
costs no more than oslo.config. tests/test_config.py keeps it that way.
"""

from __future__ import annotations

import importlib
import socket

from oslo_config import cfg

# aodh's spellings of ceilo-notifier's options (an aodh.conf works as it is).
# oslo.config reads a deprecated spelling only when the option's own is unset.


def _aodh(name: str, group: str = "DEFAULT") -> list[cfg.DeprecatedOpt]:
    return [cfg.DeprecatedOpt(name, group=group)]


DEFAULT_OPTS = [
    cfg.StrOpt(
        "host",
        default=socket.gethostname(),
        sample_default="<server-hostname>",
        help="Name of this notifier instance. Casts with prepare(server=host) "
        "reach only this instance (queue <notifier_rpc_topic>.<host>).",
    ),
    cfg.IntOpt(
        "workers",
        deprecated_opts=_aodh("workers", "notifier"),
        default=1,
        min=1,
        help="Number of worker processes; each one is a full consumer of the notifier queues.",
    ),
    cfg.MultiStrOpt(
        "event_dispatchers",
        default=["database"],
        help="Where delivery events go: database (the journal), message "
        "(versioned notifications) or any dispatcher installed in the "
        "ceilo_notifier.dispatchers namespace. Repeat for several.",
    ),
    cfg.StrOpt(
        "state_path",
        default="/var/lib/ceilo-notifier",
        help="Directory for the service's own files (the default journal).",
    ),
    cfg.FloatOpt(
        "shutdown_grace_period",
        default=10.0,
        min=0.0,
        help="On SIGTERM, seconds that running deliveries get to finish after "
        "the service stops consuming. Keep it below graceful_shutdown_timeout.",
    ),
]

# What the client library (ceilo_notifier.rpc.RPCAlarmNotifier) reads besides
# oslo.messaging's options; it registers them on the evaluator's ConfigOpts.
CLIENT_OPTS = [
    cfg.StrOpt(
        "notifier_rpc_topic",
        default="alarm_notifier",
        help="RPC topic the alarm evaluators cast notify_alarm on.",
    ),
]

ALARM_OPTS = CLIENT_OPTS + [
    cfg.BoolOpt(
        "notification_listener",
        default=False,
        help="Also consume the alarm.update notifications aodh's evaluator "
        "emits, as aodh-notifier does (a drop-in replacement).",
    ),
    cfg.StrOpt(
        "notifier_exchange",
        default="aodh",
        help="Exchange of the alarm.update notifications (aodh publishes on "
        "its control exchange, aodh).",
    ),
    cfg.StrOpt(
        "notifier_topic",
        deprecated_opts=_aodh("notifier_topic"),
        default="alarming",
        help="Topic of the alarm.update notifications (aodh's notifier_topic).",
    ),
    cfg.StrOpt(
        "notification_listener_pool",
        help="Listener pool name. Listeners in one pool share the messages; "
        "each pool gets its own copy. Unset: the topic's default queue, "
        "shared with aodh-notifier if one still runs.",
    ),
    cfg.IntOpt(
        "batch_size",
        deprecated_opts=_aodh("batch_size", "notifier"),
        default=50,
        min=1,
        help="Most alarm notifications (and notify_alarm casts) handled "
        "and journaled together, in one transaction.",
    ),
    cfg.FloatOpt(
        "batch_timeout",
        deprecated_opts=_aodh("batch_timeout", "notifier"),
        default=0.1,
        min=0.0,
        help="Seconds to wait for a batch of notifications to fill before "
        "handling what came (casts wait at most 0.02 s). 0: do not wait "
        "(what came within 0.01 s is handled together).",
    ),
    cfg.IntOpt(
        "dispatch_pool_size",
        default=1024,
        min=1,
        help="Most delivery attempts in flight at once, all hosts together. "
        "An attempt waiting on a webhook costs a socket and a few kilobytes "
        "on the event loop, not a thread.",
    ),
    cfg.IntOpt(
        "per_host_concurrency",
        default=256,
        min=1,
        help="Attempts in flight at once to one share of the delivery "
        "capacity: every name of one registrable domain (hooks.example.org "
        "and a1.example.org share example.org, whatever the scheme and "
        "port), one IPv4 address, or one IPv6 /64. Further deliveries to "
        "that share wait in its own line; shares with deliveries waiting are "
        "served in turn, so a dead host, or a tenant writing thousands of "
        "subdomains, holds at most this many slots, each for at most "
        "rest_notifier_timeout. With the journal, a share with twice this many "
        "deliveries running or waiting for a slot (or half of "
        "max_pending_deliveries, if more) that is not answering has further "
        "ones wait in the journal, so that it cannot fill "
        "max_pending_deliveries. Keep it well "
        "below dispatch_pool_size.",
    ),
    cfg.IntOpt(
        "max_pending_deliveries",
        default=25000,
        min=1,
        help="Most deliveries accepted and not yet finished that are running "
        "or waiting for a slot. Beyond it the consumers wait, so the service "
        "consumes more slowly instead of growing; each one holds a few "
        "kilobytes. Deliveries waiting for a retry are not counted, so that "
        "one tenant's failing webhooks never stop intake for the others: with "
        "the journal, a retry due in more than 2 s (or any, once this many "
        "retries wait in memory) leaves memory and is read back from the "
        "journal when due; without it, up to this many more retries wait in "
        "memory, and a delivery that would need a retry beyond that fails.",
    ),
    cfg.IntOpt(
        "plugin_pool_size",
        default=32,
        min=1,
        help="Threads that run the attempts of blocking notifier plugins "
        "(those without notify_async), beside the event loop.",
    ),
    cfg.IntOpt(
        "keystone_pool_size",
        default=8,
        min=1,
        help="Threads that fetch Keystone tokens for trust+http(s) webhooks, "
        "beside the event loop. A fetch gets half of rest_notifier_timeout "
        "(the wait for a thread included); past it the attempt is retried, "
        "and a fetch that hangs holds one of these threads, no other.",
    ),
    cfg.IntOpt(
        "journal_pool_size",
        default=4,
        min=1,
        help="Threads that run the journal queries of the event loop (which "
        "transition of an alarm goes first, across processes). A query gets "
        "[database] timeout seconds, the wait for a thread included; past it "
        "the delivery waits and asks again, as when the journal cannot be asked "
        "(a stale send is worse than a late one).",
    ),
    cfg.FloatOpt(
        "plugin_timeout",
        default=30.0,
        min=0.1,
        help="Seconds an attempt of a blocking plugin without a timeout of "
        "its own may take, from when a thread of plugin_pool_size takes it up; "
        "past it the attempt is abandoned as failed (its thread runs on, so a "
        "retry could overtake it). An attempt that waits this long for a free "
        "thread is retried instead. The zaqar and trust+heat plugins end an "
        "attempt as retryable before this when another request might not fit.",
    ),
    cfg.IntOpt(
        "max_actions",
        default=100,
        min=1,
        help="Largest number of actions handled for one alarm; the rest are logged and dropped.",
    ),
    cfg.IntOpt(
        "max_action_length",
        default=4096,
        min=16,
        help="Longest action URL accepted, in characters.",
    ),
    cfg.IntOpt(
        "max_field_length",
        default=8192,
        min=64,
        help="Longest alarm_name, severity, previous, current or reason "
        "accepted, in characters; longer values are truncated and logged. "
        "An alarm_id longer than 255 characters (the journal's column) is "
        "refused, since a truncated one could name another alarm.",
    ),
    cfg.IntOpt(
        "max_reason_data_size",
        default=65536,
        min=2,
        help="Largest reason_data accepted, in bytes of JSON; larger "
        "reason_data is replaced by an empty dict and logged.",
    ),
    cfg.StrOpt(
        "rest_notifier_certificate_file",
        deprecated_opts=_aodh("rest_notifier_certificate_file"),
        default="",
        help="Client certificate (PEM) presented to HTTPS webhooks.",
    ),
    cfg.StrOpt(
        "rest_notifier_certificate_key",
        deprecated_opts=_aodh("rest_notifier_certificate_key"),
        default="",
        help="Private key of rest_notifier_certificate_file, when it is not "
        "in the certificate file itself.",
    ),
    cfg.StrOpt(
        "rest_notifier_ca_bundle_certificate_path",
        deprecated_opts=_aodh("rest_notifier_ca_bundle_certificate_path"),
        help="CA bundle used to verify HTTPS webhooks instead of the system trust store.",
    ),
    cfg.BoolOpt(
        "rest_notifier_ssl_verify",
        deprecated_opts=_aodh("rest_notifier_ssl_verify"),
        default=True,
        help="Verify the certificates of HTTPS webhooks. An action can "
        "override this with the query parameter "
        "ceilometer-alarm-ssl-verify=0|1 (or aodh-alarm-ssl-verify).",
    ),
    cfg.ListOpt(
        "rest_notifier_signing_keys",
        default=[],
        secret=True,
        help="Standard Webhooks secrets (whsec_<base64>). When set, every "
        "request carries webhook-id (the delivery id), webhook-timestamp and "
        "webhook-signature with one v1 signature per key, so a receiver can "
        "rotate keys without missing a notification.",
    ),
    cfg.ListOpt(
        "rest_notifier_denied_networks",
        # Loopback (the broker's management API answers there), unspecified,
        # link-local (where cloud metadata services live) and the metadata
        # addresses outside it (AWS over IPv6, Alibaba Cloud).
        default=[
            "127.0.0.0/8",
            "::1/128",
            "0.0.0.0/8",
            "::/128",
            "169.254.0.0/16",
            "fe80::/10",
            "fd00:ec2::254/128",
            "100.100.100.200/32",
        ],
        help="Networks (CIDR) webhooks may not reach: by default loopback, "
        "unspecified, link-local and cloud metadata addresses. Every address "
        "a name resolves to is checked, and an IPv6 address carrying an IPv4 "
        "one (mapped, compatible, NAT64, 6to4, Teredo) is judged by that "
        "address too. A refused delivery fails at once, without retries. "
        "Private ranges stay reachable; add a management network here to "
        "deny it.",
    ),
    cfg.ListOpt(
        "rest_notifier_allowed_networks",
        default=[],
        help="When set, webhooks may reach only these networks (CIDR). An "
        "address in an allowed network is permitted even if a denied network "
        "contains it.",
    ),
    cfg.FloatOpt(
        "rest_notifier_timeout",
        default=10.0,
        min=0.1,
        help="Seconds one attempt may take in all: name resolution, "
        "connect, TLS, request and the whole answer. A webhook that answers "
        "slowly, one byte at a time or never holds an attempt for at most "
        "this long.",
    ),
    cfg.ListOpt(
        "dns_nameservers",
        default=[],
        help="Nameservers (address[:port], an IPv6 one as [address]:port) "
        "that webhook names are resolved with. Empty: those of the system's "
        "resolv.conf. /etc/hosts, the search domains and ndots of resolv.conf "
        "apply either way.",
    ),
    cfg.FloatOpt(
        "dns_timeout",
        default=3.0,
        min=0.1,
        help="Seconds one lookup of a webhook's name may take, at most half "
        "of rest_notifier_timeout. A lookup that fails or takes longer fails "
        "the attempt as a name resolution failure (retried), without "
        "connecting anywhere. Lookups are asynchronous: one whose nameserver "
        "never answers costs no thread.",
    ),
    cfg.IntOpt(
        "dns_lookups_per_domain",
        default=4,
        min=1,
        help="Lookups in flight at once under one registrable domain (every "
        "name of example.org together, as per_host_concurrency counts them). "
        "Further ones wait for a slot within dns_timeout, then fail as a "
        "name resolution failure: a tenant writing many names under a "
        "domain whose nameservers never answer holds this many lookups.",
    ),
    cfg.StrOpt(
        "rest_notifier_proxy",
        secret=True,
        help="Proxy URL (http://[user:password@]host:port) for every "
        "webhook request; overrides HTTP_PROXY, HTTPS_PROXY and NO_PROXY of "
        "the environment, which are honoured otherwise. Through a proxy, "
        "target safety applies to webhooks given as address literals; the "
        "proxy's own policy applies to names.",
    ),
    cfg.IntOpt(
        "rest_notifier_max_retries",
        deprecated_opts=_aodh("rest_notifier_max_retries"),
        default=3,
        min=0,
        help="Retries of a delivery that failed with a connection error, a "
        "timeout, 408, 425, 429 or 5xx. Attempts = 1 + retries.",
    ),
    cfg.FloatOpt(
        "rest_notifier_retry_backoff",
        default=1.0,
        min=0.0,
        help="Base of the exponential backoff between retries, in seconds. "
        "Retry n waits a random time in [0, min(backoff_max, base * 2^n)] "
        "(full jitter), or longer if the webhook sent Retry-After.",
    ),
    cfg.FloatOpt(
        "rest_notifier_retry_backoff_max",
        default=60.0,
        min=0.0,
        help="Longest wait between two attempts of a delivery, in seconds.",
    ),
    cfg.FloatOpt(
        "rest_notifier_retry_after_max",
        default=300.0,
        min=0.0,
        help="Longest Retry-After honoured, in seconds: a webhook asking for "
        "more (an hour, a date years ahead) is retried after this long "
        "instead, so that no receiver can keep its deliveries waiting for "
        "longer than this between attempts.",
    ),
    cfg.FloatOpt(
        "rest_notifier_retry_max_age",
        default=3600.0,
        min=0.0,
        help="A delivery is not retried once this many seconds have passed "
        "since its first attempt (or when Retry-After would take it past "
        "this age); it is then failed.",
    ),
]

DATABASE_OPTS = [
    cfg.StrOpt(
        "connection",
        default="sqlite:///$state_path/ceilo-notifier.sqlite",
        secret=True,
        help="SQLAlchemy URL of the journal: a SQLite file by default, "
        "postgresql+psycopg2://user:password@host/db for production.",
    ),
    cfg.FloatOpt(
        "retention_days",
        default=30.0,
        min=0.0,
        help="Finished deliveries (and their events) older than this many "
        "days are purged by the service itself, hourly; 0 keeps them for "
        "ever. ceilo-notifier-manage purge does the same on demand.",
    ),
    cfg.FloatOpt(
        "owner_lease",
        default=120.0,
        min=5.0,
        help="Every instance heartbeats in the journal every owner_lease / 4 "
        "seconds. When a host sharing the journal has been silent this long "
        "(a replaced VM, a renamed pod), a live host takes its unfinished "
        "deliveries over (exactly one, with conditional updates) and resumes "
        "them, stale ones excepted.",
    ),
    cfg.FloatOpt(
        "timeout",
        default=10.0,
        min=1.0,
        help="Seconds to connect to the journal's database, to wait for a "
        "pooled connection, and for one statement (PostgreSQL), so that no "
        "thread hangs on a dead database.",
    ),
    cfg.IntOpt(
        "max_pool_size",
        min=1,
        help="Connections to the journal each process keeps open. Unset: one "
        "for each thread that queries the journal besides the consumers "
        "([alarm] journal_pool_size and the service's own six). A full pool "
        "is an outage: nothing is acknowledged until a connection frees.",
    ),
    cfg.IntOpt(
        "max_overflow",
        min=0,
        help="Connections opened beyond max_pool_size while busy. Unset: one "
        "for each consumer thread (executor_thread_pool_size).",
    ),
]

NOTIFICATIONS_OPTS = [
    cfg.StrOpt(
        "notification_format",
        default="versioned",
        choices=[
            ("unversioned", "the event as a plain dict on oslo.messaging's notification topics"),
            ("versioned", "an oslo.versionedobjects payload on versioned_notifications_topics"),
            ("both", "both of the above"),
        ],
        help="Form of the notifications the message event dispatcher emits.",
    ),
    cfg.ListOpt(
        "versioned_notifications_topics",
        default=["versioned_notifications"],
        help="Topics versioned notifications are sent to.",
    ),
]

METRICS_OPTS = [
    cfg.HostAddressOpt(
        "bind_host",
        default="127.0.0.1",
        help="Address of the /metrics (Prometheus) and /healthz endpoint.",
    ),
    cfg.PortOpt(
        "port",
        default=0,
        help="Port of the /metrics and /healthz endpoint; 0 turns it off.",
    ),
]

# Endpoint health (ceilo_notifier.endpoints): hold, probe and drain in order.
ENDPOINT_HEALTH_OPTS = [
    cfg.BoolOpt(
        "enabled",
        default=True,
        help="Hold the deliveries of an endpoint (scheme, host and port) that keeps "
        "failing in the journal, probe it, and drain them in order once it "
        "answers; limit the attempts in flight to an endpoint that answers 429 "
        "or times out. false: every delivery retries on its own schedule.",
    ),
    cfg.IntOpt(
        "failure_threshold",
        default=5,
        min=1,
        help="Consecutive failed attempts (connection error, timeout, 408, 425, "
        "5xx; 429 once a single attempt at a time is refused) that open an endpoint.",
    ),
    cfg.FloatOpt(
        "open_seconds",
        default=30.0,
        min=0.1,
        help="Seconds an endpoint stays open before one probe (its oldest waiting "
        "delivery) goes; each failed probe doubles it, up to max_open_seconds.",
    ),
    cfg.FloatOpt(
        "max_open_seconds",
        default=900.0,
        min=0.1,
        help="Longest an endpoint stays open between probes, and the cap of a "
        "receiver's Retry-After, which quiets its whole endpoint.",
    ),
    cfg.FloatOpt(
        "sync_seconds",
        default=5.0,
        min=0.1,
        help="How often a process reads the endpoint states other processes "
        "sharing its journal wrote: an endpoint opened or paused by one is held "
        "by all within this long.",
    ),
]

# Payload templates (ceilo_notifier.templates): operators' Jinja2, rendered in
# worker processes with a deadline and a memory cap.
TEMPLATES_OPTS = [
    cfg.StrOpt(
        "path",
        help="Directory of the operator's payload templates: NAME.json.j2 (sent as "
        "application/json, must render valid JSON) and NAME.txt.j2 (sent as "
        "text/plain). Read once at start; a template with the name of a built-in "
        "(slack, teams, googlechat, cloudevents) replaces it. Unset: the built-ins only.",
    ),
    cfg.IntOpt(
        "max_body_bytes",
        default=65536,
        min=1,
        help="Largest rendered body, in bytes; a render that makes more fails its "
        "delivery (not retried).",
    ),
    cfg.FloatOpt(
        "render_timeout",
        default=1.0,
        min=0.01,
        help="Seconds a render may take; past it the render worker is killed and "
        "replaced, and the delivery fails (not retried).",
    ),
    cfg.IntOpt(
        "render_workers",
        default=2,
        min=1,
        help="Render worker processes per service process, started on the first "
        "render; renders beyond them wait for a free one.",
    ),
    cfg.IntOpt(
        "render_memory_mb",
        default=256,
        min=64,
        help="Address space a render worker may map, in MiB (RLIMIT_AS); a render "
        "that needs more fails its delivery and the worker is replaced.",
    ),
]

# Where the trust+ and zaqar plugins find services in the Keystone catalog,
# beside keystoneauth's own [service_credentials] options (as in aodh).
CATALOG_OPTS = [
    cfg.StrOpt(
        "region_name",
        help="Region of the service endpoints taken from the Keystone catalog.",
    ),
    cfg.StrOpt(
        "interface",
        default="public",
        choices=("public", "internal", "admin", "publicURL", "internalURL", "adminURL"),
        help="Interface of the service endpoints taken from the Keystone catalog.",
    ),
]

SERVICE_TYPES_OPTS = [
    cfg.StrOpt(
        "zaqar",
        default="messaging",
        help="Service type of Zaqar in the Keystone catalog (zaqar:// and trust+zaqar://).",
    ),
    cfg.StrOpt(
        "heat",
        default="orchestration",
        help="Service type of Heat in the Keystone catalog (trust+heat://).",
    ),
]

# Apprise services as actions (ceilo_notifier.notifiers.destinations).
APPRISE_OPTS = [
    cfg.ListOpt(
        "schemes",
        help="The Apprise URL schemes that are actions (slack, workflow, pagerduty, "
        "mailto...). Unset: every Apprise service that sends to a remote server. "
        "Schemes that act on the notifier's own host (desktop notifications, "
        "syslog, rsyslog, devices) are never actions, whatever this lists; a "
        "ceilo_notifier.notifier plugin of the same scheme wins over Apprise.",
    ),
    cfg.IntOpt(
        "pool_size",
        default=16,
        min=1,
        help="Threads that run Apprise's blocking requests; an attempt that finds "
        "them all busy until rest_notifier_timeout is retried, so that a hung "
        "service holds these threads and no other plugin's.",
    ),
]

ALL_GROUPS = (
    (None, DEFAULT_OPTS),
    ("alarm", ALARM_OPTS),
    ("database", DATABASE_OPTS),
    ("notifications", NOTIFICATIONS_OPTS),
    ("metrics", METRICS_OPTS),
    ("endpoint_health", ENDPOINT_HEALTH_OPTS),
    ("templates", TEMPLATES_OPTS),
    ("service_credentials", CATALOG_OPTS),
    ("service_types", SERVICE_TYPES_OPTS),
    ("apprise", APPRISE_OPTS),
)


# [service_credentials]: keystoneauth1's own options, as in every OpenStack
# service: the auth and session options, and those of the auth plugin chosen
# by auth_type (registered by keystoneauth when the plugin is loaded).
KEYSTONE_GROUP = "service_credentials"

# The auth plugin whose options the sample configuration shows; operators may
# pick another auth_type that can be scoped to a trust (password, v3password...).
SAMPLE_AUTH_TYPE = "password"


def keystone_opts() -> list[cfg.Opt]:
    """The ``[service_credentials]`` options keystoneauth1 defines, for the sample."""
    from keystoneauth1 import loading as ka_loading

    return (
        ka_loading.get_auth_common_conf_options()
        + ka_loading.get_session_conf_options()
        + ka_loading.get_auth_plugin_conf_options(SAMPLE_AUTH_TYPE)
    )


def register_keystone_opts(conf: cfg.ConfigOpts) -> None:
    """Register keystoneauth1's base auth and session options; safe to call more than once."""
    from keystoneauth1 import loading as ka_loading

    ka_loading.register_auth_conf_options(conf, KEYSTONE_GROUP)
    ka_loading.register_session_conf_options(conf, KEYSTONE_GROUP)


def register_messaging_opts(conf: cfg.ConfigOpts) -> None:
    """Register oslo.messaging's options on conf, private ConfigOpts included.

    Some oslo.messaging releases register their tracing and metrics options on
    the global ``cfg.CONF`` only; clients built on any other ConfigOpts then
    fail with NoSuchOptError unless they are registered here too.
    """
    import oslo_messaging.opts

    for group, options in oslo_messaging.opts.list_opts():
        conf.register_opts(options, group=group)
    for module, name in (
        ("oslo_messaging._tracing.client", "oslo_messaging_tracing"),
        ("oslo_messaging._metrics.client", "oslo_messaging_metrics"),
    ):
        try:
            options = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        try:
            conf.register_opts(options, group=name)
        except cfg.DuplicateOptError:
            pass


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Options of this project, grouped, for oslo-config-generator."""
    groups: dict[str, list[cfg.Opt]] = {}
    for group, opts in [*ALL_GROUPS, (KEYSTONE_GROUP, keystone_opts())]:
        groups.setdefault(group or "DEFAULT", []).extend(opts)
    return list(groups.items())


def register_missing(conf: cfg.ConfigOpts, options: list[cfg.Opt], group: str) -> None:
    """Register options on a caller's ConfigOpts, keeping those it already has.

    An alarm API or an evaluator may define the same option itself (aodh has
    its own ``[service_credentials] region-name`` and ``interface``); its
    definition then serves, as the value means the same.
    """
    for opt in options:
        try:
            conf.register_opt(opt, group=group)
        except cfg.DuplicateOptError:
            pass


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register every option of this project (and oslo.messaging's) on conf."""
    for group, opts in ALL_GROUPS:
        conf.register_opts(opts, group=group)
    register_keystone_opts(conf)
    register_messaging_opts(conf)
