"""Draw the benchmark's charts at every build, from bench/results.

The charts and their summary (``bench/charts.py``) are written under
``benchcharts_output`` in the source directory before any document is read,
so the benchmark page can never show older numbers than the results hold.
"""

import importlib.util
import os

from sphinx.util import logging

LOG = logging.getLogger(__name__)


def _charts_module(results_dir):
    path = os.path.join(os.path.dirname(os.path.abspath(results_dir)), "charts.py")
    spec = importlib.util.spec_from_file_location("ceilo_notifier_bench_charts", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate(app):
    from pathlib import Path

    results = app.config.benchcharts_results
    if not results:
        return
    charts = _charts_module(results)
    out = Path(app.srcdir) / app.config.benchcharts_output
    summary = charts.generate(out, Path(results), "/" + app.config.benchcharts_output)
    LOG.info("benchmark charts: %s", summary)


def setup(app):
    app.add_config_value("benchcharts_results", None, "env")
    app.add_config_value("benchcharts_output", "_generated/bench", "env")
    app.connect("builder-inited", generate)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
