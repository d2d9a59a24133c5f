"""Console scripts."""

from __future__ import annotations

from collections.abc import Sequence

from oslo_config import cfg
from oslo_log import log

from ceilo_notifier import masking, opts, version


def prepare(argv: Sequence[str] | None, conf: cfg.ConfigOpts | None = None,
            cli_opts: Sequence[cfg.Opt] = ()) -> cfg.ConfigOpts:
    """Register options, parse the command line and config files, set up logging."""
    conf = cfg.CONF if conf is None else conf
    opts.register_opts(conf)
    log.register_options(conf)
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
