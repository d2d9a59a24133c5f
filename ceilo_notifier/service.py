"""The notifier service: the consumers on the notifier topic feeding the delivery engine.

The class derives from oslo.service's backend-neutral ``ServiceBase`` so the
same service runs on the threading backend (default) and on eventlet.
"""

from __future__ import annotations

import threading

import oslo_messaging
from oslo_config import cfg
from oslo_log import log
from oslo_service.backend import base

from ceilo_notifier import dispatchers, engine, journal, metrics, notifiers, rpc, takeover
from ceilo_notifier.consumers import notifications
from ceilo_notifier.consumers import rpc as rpc_consumer
from ceilo_notifier.dispatchers import database

LOG = log.getLogger(__name__)


class NotifierService(base.ServiceBase):
    """Consumes the topic, host-topic and fanout queues of ``notifier_rpc_topic``."""

    def __init__(self, conf: cfg.ConfigOpts, executor: str = "threading") -> None:
        self.conf = conf
        self.executor = executor
        # Made before workers fork: all workers of one start share it, and a
        # later start resumes what this one left unfinished.
        self.launch = journal.new_launch()
        self.backends: list[dispatchers.EventBackend] = []
        self.engine: engine.Engine | None = None
        self.rpc_server: oslo_messaging.MessageHandlingServer | None = None
        self.listener: oslo_messaging.MessageHandlingServer | None = None
        self.transport: oslo_messaging.Transport | None = None
        self.listener_transport: oslo_messaging.Transport | None = None
        self._stopped = threading.Event()
        self.fanout_lock: rpc_consumer.FanoutLock | None = None
        self.takeover: takeover.Takeover | None = None
        self.lease: journal.Lease | None = None

    def start(self) -> None:
        """Build everything here, not in __init__: workers are forked after __init__."""
        self._stopped.clear()
        owner = journal.owner_tag(self.conf.host, self.launch)
        self.backends = dispatchers.load(self.conf)
        the_journal = None
        for backend in self.backends:
            if isinstance(backend, database.DatabaseBackend):
                backend.start(owner)
                the_journal = backend.journal
            else:
                backend.start()
        self.engine = engine.Engine(
            self.conf,
            sinks=[metrics.record, dispatchers.fan_out(self.backends)],
            journal=the_journal,
        )
        if the_journal is not None:
            # The lease first: this process is live in the journal before it
            # owns anything, and stays so whatever resuming waits for.
            self.lease = journal.Lease(
                the_journal,
                self.conf.host,
                self.conf.database.owner_lease,
                self.engine.owners,
                margin=max(self.conf.alarm.rest_notifier_timeout, self.conf.alarm.plugin_timeout),
            )
            try:
                self.lease.beat()
            except Exception as exc:
                LOG.warning("Journal heartbeat failed (%s); trying again", exc)
            self.lease.start()
            self.engine.lease = self.lease
            resumed = self.engine.resume(
                the_journal.claim_open(self.conf.host, self.launch, self.conf.database.owner_lease)
            )
            if resumed:
                LOG.info("Resumed %d unfinished deliveries from the journal", len(resumed))
            self.takeover = takeover.Takeover(self.conf, the_journal, self.engine)
            self.takeover.start()
        prefetch = rpc_consumer.intake_prefetch(self.conf)
        self.transport = rpc.get_transport(self.conf)
        target = rpc.get_target(self.conf, server=self.conf.host)
        the_endpoint = rpc_consumer.NotifierEndpoint(self.conf, self.engine)
        # One worker of this host consumes the fanout queue; a single
        # process always does.
        self.fanout_lock = rpc_consumer.FanoutLock(self.conf.state_path, self.conf.host)
        fanout = self.conf.workers == 1 or self.fanout_lock.acquire()
        self.rpc_server = rpc_consumer.get_server(
            self.transport, target, the_endpoint, executor=self.executor, fanout=fanout
        )
        self.rpc_server.start()
        if self.conf.alarm.notification_listener:
            self.listener_transport = oslo_messaging.get_notification_transport(self.conf)
            self.listener = notifications.get_listener(
                self.conf, self.listener_transport, the_endpoint, executor=self.executor
            )
            self.listener.start()
            LOG.info(
                "Listening for %s notifications on exchange %s, topic %s",
                notifications.EVENT_TYPE,
                self.conf.alarm.notifier_exchange,
                self.conf.alarm.notifier_topic,
            )
        LOG.info(
            "ceilo-notifier consuming topic %s (host %s, exchange %s, %s executor, "
            "prefetch %s) with plugins: %s",
            target.topic,
            self.conf.host,
            self.conf.control_exchange,
            self.executor,
            prefetch or "unlimited",
            notifiers.describe_schemes(self.engine.plugins),
        )

    def stop(self, graceful: bool = True) -> None:
        """Stop consuming first, then give running deliveries the grace period."""
        if self.engine is not None:
            self.engine.close_intake()  # consumers waiting for room let go
        if self.takeover is not None:
            self.takeover.stop()
            self.takeover = None
        for server in (self.rpc_server, self.listener):
            if server is None:
                continue
            try:
                server.stop()
                server.wait()
            except Exception:
                LOG.exception("Stopping %s failed", type(server).__name__)
        self.rpc_server = self.listener = None
        if self.fanout_lock is not None:
            self.fanout_lock.release()
        if self.engine is not None:
            unfinished = len(self.engine.stop(self.conf.shutdown_grace_period if graceful else 0))
            if self.engine.journal is not None:
                try:
                    unfinished += self.engine.journal.parked_count()
                except Exception as exc:
                    LOG.warning("Could not count the retries parked in the journal (%s)", exc)
            if unfinished:
                LOG.warning(
                    "Stopped with %d deliveries unfinished; they stay in the journal "
                    "and resume at the next start",
                    unfinished,
                )
            self.engine = None
        if self.lease is not None:
            self.lease.stop()  # after the engine: its last writes are a live owner's
            self.lease = None
        for backend in self.backends:
            try:
                backend.stop()
            except Exception:
                LOG.exception("Stopping event dispatcher %s failed", type(backend).__name__)
        self.backends = []
        for transport in (self.transport, self.listener_transport):
            if transport is not None:
                transport.cleanup()
        self.transport = self.listener_transport = None
        LOG.info("ceilo-notifier stopped")
        self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()

    def reset(self) -> None:
        """SIGHUP: options marked mutable are re-read by oslo.config; nothing to rebuild."""
