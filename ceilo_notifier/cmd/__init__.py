"""Console scripts."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

# oslo.service imports eventlet even on its threading backend; eventlet's
# deprecation notice (which overrides warning filters) would greet every
# operator although eventlet is not in use.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        import eventlet  # noqa: F401
    except ImportError:
        pass

from oslo_service import backend

# oslo.messaging imports oslo_service.service, which fixes the backend at import
# time; threading must be chosen before that first import happens.
backend.register_backend_default_hook(lambda: backend.BackendType.THREADING)

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
