"""Notifier plugins: one class per URL scheme, loaded with stevedore.

A plugin only delivers. It knows nothing of the broker, the scheduler, the
journal or retries: it raises ``RetryableError`` and the engine decides when
(and whether) to try again. A plugin implements the blocking ``notify``
(run in a bounded thread pool) or the coroutine ``notify_async`` (run on the
engine's event loop, for plugins whose attempts mostly wait on the network).

Where plugins come from. Two entry-point namespaces, and the service knows
no plugin by name:

``ceilo_notifier.notifier``
    one plugin class per scheme (``http = ...:RestAlarmNotifier``), as
    aodh's notifiers are registered;
``ceilo_notifier.notifier_providers``
    *plugin providers*: callables ``provider(conf) -> {scheme: class}`` for
    a family of schemes too large or too variable to list one by one (every
    service a library knows). ``conf`` is None where there is no
    configuration (the scheme label of a metric): the provider's defaults
    then. Apprise is the first (``notifiers.destinations``).

``plugin_classes(conf)`` merges them, a scheme of the first namespace
winning over a provider's, and is what ``engine.load_plugins`` (one
instance per class), ``actions.installed`` (validation, metric labels) and
``ceilo-notifier-manage check-action`` use. A provider that fails to load is
one ERROR line; the other plugins serve.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from urllib import parse

from oslo_config import cfg
from oslo_log import log
from stevedore import extension

from ceilo_notifier import masking
from ceilo_notifier.notification import AlarmNotification

NAMESPACE = "ceilo_notifier.notifier"
PROVIDERS_NAMESPACE = "ceilo_notifier.notifier_providers"

LOG = log.getLogger(__name__)


class DeliveryError(Exception):
    """The delivery failed and trying again would not help."""

    def __init__(self, reason: str, status_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


class RetryableError(DeliveryError):
    """The delivery failed for now; ``retry_after`` is the receiver's wish, in seconds."""

    def __init__(
        self, reason: str, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason, status_code)
        self.retry_after = retry_after


class TimedOut(RetryableError):
    """No complete answer within the attempt's deadline: the receiver may be
    overloaded, so endpoint health also takes fewer attempts to it at once."""


class NotReached(RetryableError):
    """The attempt failed before anything reached the receiver (no token, no free
    thread): worth another attempt, but no sign of the receiver's health."""


# Answers worth another attempt besides 5xx: the receiver asks to come back.
RETRYABLE_STATUS = frozenset({408, 425, 429})


def status_error(summary: str, status: int, retry_after: float | None = None) -> DeliveryError:
    """The error for an HTTP answer that is not a success: retryable or final by its status."""
    if status in RETRYABLE_STATUS or status >= 500:
        return RetryableError(summary, status, retry_after)
    return DeliveryError(summary, status)


class Budget:
    """The time one attempt of a blocking plugin has for its several requests.

    A plugin that makes many requests in one attempt (a subscription per
    subscriber, a lookup per member) checks before each one, so that the
    attempt ends as retryable before the engine abandons it: an abandoned
    attempt is failed, and its thread runs on. The first request always goes.
    """

    def __init__(self, seconds: float, per_request: float) -> None:
        self.end = time.monotonic() + seconds
        self.per_request = per_request
        self.made = 0

    def check(self, what: str) -> None:
        """Before a request; raises RetryableError when it might not finish in time."""
        if self.made and time.monotonic() + self.per_request > self.end:
            raise RetryableError(
                f"attempt out of time before {what}, after {self.made} requests; retried"
            )
        self.made += 1


class AlarmNotifier(abc.ABC):  # noqa: B024 - notify or notify_async, either one
    """Base class of notifier plugins.

    Plugins are instantiated once, with the service configuration; ``notify``
    is called from many threads at once. An attempt that takes longer than
    ``attempt_timeout`` seconds (default ``[alarm] plugin_timeout``) is
    abandoned and retried.
    """

    attempt_timeout: float | None = None
    # True when the plugin renders the payload template an action names
    # (``ceilo-notifier-template=NAME``, ``ceilo_notifier.templates``): the
    # name is then checked at intake and in ``actions.validate``.
    supports_templates: bool = False
    # Set by the classes a plugin provider gives (its name, for people): the
    # schemes of a provider are counted, not listed, in "unknown scheme".
    provider: str | None = None

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf

    def budget(self, per_request: float) -> Budget:
        """A Budget for one attempt, a second short of the engine's deadline."""
        seconds = self.attempt_timeout or self.conf.alarm.plugin_timeout
        return Budget(max(seconds - 1.0, 0.0), per_request)

    @classmethod  # noqa: B027 - optional hook, not abstract
    def validate(cls, action: parse.SplitResult) -> None:
        """Check the shape of an action of this scheme, without any I/O.

        Called when an alarm API registers the action (``ceilo_notifier.actions``)
        and by plugins before an attempt.

        :raises ValueError: whose message says what is wrong, for a person.
        """

    def endpoint(self, action: parse.SplitResult) -> str | None:
        """Where this action's attempts go, as ``scheme://host:port``, or None.

        Endpoint health (``ceilo_notifier.endpoints``) holds the deliveries of
        an endpoint that keeps failing and limits the attempts in flight to
        it; a plugin that reports no endpoint is never held. Called at
        intake, without I/O.
        """
        return None

    def notify(self, action: parse.SplitResult, notification: AlarmNotification) -> int | None:
        """Deliver one notification to one action (blocking).

        Implement this or the coroutine ``notify_async(action, notification)``,
        which the engine prefers when a plugin has it.

        :returns: a status code where the transport has one, else None.
        :raises RetryableError: for a failure worth another attempt.
        :raises DeliveryError: for a failure that is final.
        """
        raise NotImplementedError(f"{type(self).__name__} has neither notify nor notify_async")

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release connections; called once when the service stops."""


def describe_schemes(known: dict[str, object]) -> str:
    """The schemes of plugins (classes or instances), for people: the
    ``ceilo_notifier.notifier`` ones listed, a provider's counted
    (``http, https, log; and 244 Apprise services``)."""
    own, provided = [], {}
    for name, plugin in known.items():
        provider = getattr(plugin, "provider", None)
        if provider is None:
            own.append(name)
        else:
            provided[provider] = provided.get(provider, 0) + 1
    listed = ", ".join(sorted(own))
    for provider, count in sorted(provided.items()):
        listed += f"; and {count} {provider} services"
    return listed


def _load_failed(_manager, entrypoint, exc) -> None:
    LOG.error("Notifier plugin %s could not be loaded: %s", entrypoint, exc)


def plugin_classes(
    conf: cfg.ConfigOpts | None = None,
    on_load_failure: Callable | None = _load_failed,
) -> dict[str, type[AlarmNotifier]]:
    """Every notifier plugin class by scheme: providers' first, then the
    ``ceilo_notifier.notifier`` plugins, which win on a scheme both serve."""
    classes: dict[str, type[AlarmNotifier]] = {}
    providers = extension.ExtensionManager(
        PROVIDERS_NAMESPACE, invoke_on_load=False, on_load_failure_callback=on_load_failure
    )
    for ext in sorted(providers, key=lambda e: e.name):
        try:
            provided = ext.plugin(conf)
        except Exception as exc:  # noqa: BLE001 - a third party's provider
            LOG.error("Notifier plugin provider %s failed: %s", ext.name, exc)
            continue
        classes.update({str(scheme).lower(): cls for scheme, cls in dict(provided).items()})
    plugins = extension.ExtensionManager(
        NAMESPACE, invoke_on_load=False, on_load_failure_callback=on_load_failure
    )
    classes.update({ext.name: ext.plugin for ext in plugins})
    # A provider masks its schemes' URLs (masking.register_scheme_mask), not these.
    masking.unregister_scheme_masks([ext.name for ext in plugins])
    return classes
