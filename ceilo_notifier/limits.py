"""File descriptors: the open file limit, and the delivery pool that fits under it.

``dispatch_pool_size`` attempts in flight are as many sockets, and as many
again may wait idle for keep-alive; systemd's default soft limit (1024) is
below that alone, and EMFILE would then break journal connections and
broker reconnects too. At start the service raises its soft limit to the
hard one (``raise_open_files``), and ``pool_size`` keeps the pool, with its
idle keep-alive connections (``KeepAliveConnector``), below what remains
after the journal, the broker, the plugin threads and the metrics take
theirs.
"""

from __future__ import annotations

import resource

import aiohttp
from oslo_config import cfg
from oslo_log import log

LOG = log.getLogger(__name__)

# Descriptors of the process itself: standard streams, log files, the event
# loop's selector and wake-up pipes, the fanout lock, imports, /proc reads.
BASE = 64
# Connections of one journal (SQLAlchemy pool_size + max_overflow), each up to
# three files with SQLite (database, WAL, shared memory); the service and its
# metrics may each have one.
JOURNAL = 2 * 3 * 15
# Threads resolving names beside the event loop (asyncio's default executor).
RESOLVERS = 32
# The /metrics and /healthz server's connections.
METRICS = 16

_warned = False


def raise_open_files() -> tuple[int, int]:
    """Raise the soft open file limit to the hard one; (before, now), logged once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or soft == resource.RLIM_INFINITY:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:  # an infinite hard limit above fs.nr_open
        LOG.warning("Could not raise the open file limit from %d to %s: %s", soft, hard, exc)
        return soft, soft
    LOG.info("Open file limit raised from %d to %d (the hard limit)", soft, hard)
    return soft, hard


def headroom(conf: cfg.ConfigOpts) -> int:
    """Descriptors kept for everything but webhook sockets."""
    try:
        connections = conf.oslo_messaging_rabbit.rpc_conn_pool_size
    except cfg.NoSuchOptError:  # a caller's ConfigOpts without oslo.messaging's options
        connections = 30
    broker = 2 * connections + 8  # listeners, heartbeats and the sending pool
    plugins = 2 * conf.alarm.plugin_pool_size  # a socket and a token session each
    return BASE + JOURNAL + broker + plugins + RESOLVERS + METRICS


def pool_size(conf: cfg.ConfigOpts, warn: bool = False) -> int:
    """``dispatch_pool_size``, or less when its sockets and as many idle keep-alive
    ones would not fit under the open file limit beside ``headroom``."""
    configured = conf.alarm.dispatch_pool_size
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    fits = max(1, (soft - headroom(conf)) // 2)
    if fits >= configured:
        return configured
    global _warned
    if warn and not _warned:
        _warned = True
        LOG.warning(
            "dispatch_pool_size %d does not fit under the open file limit (%d): %d "
            "attempts at most, with as many idle keep-alive connections, leave %d "
            "descriptors for the journal, the broker and the plugins. Raise the "
            "limit (LimitNOFILE= in the service's systemd unit) to use the whole pool",
            configured,
            soft,
            fits,
            soft - 2 * fits,
        )
    return fits


class KeepAliveConnector(aiohttp.TCPConnector):
    """A connector that keeps at most ``max_idle`` idle keep-alive connections:
    one released beyond that is closed instead, so that webhooks on many hosts
    answering fast cannot pile up sockets for ``keepalive_timeout``."""

    def __init__(self, *args, max_idle: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_idle = max_idle

    def _release(self, key, protocol, *args, should_close: bool = False, **kwargs) -> None:
        # aiohttp's own hook (3.10 to 3.14): the one place a connection becomes idle.
        if not should_close and sum(map(len, self._conns.values())) >= self.max_idle:
            should_close = True
        super()._release(key, protocol, *args, should_close=should_close, **kwargs)
