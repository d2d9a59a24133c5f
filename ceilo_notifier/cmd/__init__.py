"""Console scripts, and the choice of execution model they run on.

Threading is the default. ``CEILO_NOTIFIER_BACKEND=eventlet`` in the
environment selects oslo.service's eventlet backend and oslo.messaging's
eventlet executor instead. It is an environment variable, not an option,
because the choice must be made before oslo.messaging is first imported
(it fixes oslo.service's backend at import time), long before any
configuration file is read.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

BACKEND = os.environ.get("CEILO_NOTIFIER_BACKEND", "threading").strip().lower()
if BACKEND not in ("threading", "eventlet"):
    raise SystemExit(f"CEILO_NOTIFIER_BACKEND must be threading or eventlet, not {BACKEND!r}")

# oslo.service imports eventlet even on its threading backend; eventlet's
# deprecation notice (which overrides warning filters) would greet every
# operator although eventlet is not in use.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        import eventlet
    except ImportError:
        eventlet = None

if BACKEND == "eventlet":
    if eventlet is None:
        raise SystemExit("CEILO_NOTIFIER_BACKEND=eventlet needs eventlet installed")
    eventlet.monkey_patch()

from oslo_service import backend  # noqa: E402

backend.register_backend_default_hook(lambda: backend.BackendType(BACKEND))

EXECUTOR = BACKEND  # oslo.messaging's executor of the same name

from oslo_config import cfg  # noqa: E402
from oslo_log import log  # noqa: E402

from ceilo_notifier import masking, opts, version  # noqa: E402


def prepare(
    argv: Sequence[str] | None, conf: cfg.ConfigOpts | None = None, cli_opts: Sequence[cfg.Opt] = ()
) -> cfg.ConfigOpts:
    """Register options, parse the command line and config files, set up logging."""
    conf = cfg.CONF if conf is None else conf
    opts.register_opts(conf)
    log.register_options(conf)
    # alembic narrates every schema check at INFO; only its problems matter here.
    log.set_defaults(default_log_levels=[*log.get_default_log_levels(), "alembic=WARN"])
    # stdout is for a command's own output; logs go to stderr (and so to the
    # journal under systemd) unless a log file is configured.
    conf.set_default("use_stderr", True)
    if cli_opts:
        conf.register_cli_opts(cli_opts)
    conf(
        list(argv) if argv is not None else None,
        project="ceilo-notifier",
        version=version.version_string(),
    )
    log.setup(conf, "ceilo-notifier")
    masking.install_log_filter()
    return conf
