"""Sphinx configuration of ceilo-notifier's documentation.

Built with warnings as errors by tests/test_docs.py:
``sphinx-build -W --keep-going -b html doc/source doc/build/html``.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "_exts"))

project = "ceilo-notifier"
copyright = "ceilo-notifier developers"  # noqa: A001
author = "ceilo-notifier developers"

extensions = [
    "oslo_config.sphinxext",
    "oslo_config.sphinxconfiggen",
    "stevedore.sphinxext",
    "benchcharts",
]

# oslo_config.sphinxconfiggen: the sample file, generated at every build
# from the same generator configuration as etc/ceilo-notifier's sample.
config_generator_config_file = os.path.join(
    ROOT, "etc", "ceilo-notifier", "ceilo-notifier-config-generator.conf"
)
# Generated files go to _generated/ (ignored by git), made here so that a
# fresh checkout builds.
os.makedirs(os.path.join(HERE, "_generated"), exist_ok=True)
sample_config_basename = "_generated/ceilo-notifier"

# benchcharts: the benchmark's charts, drawn from these results at every build.
benchcharts_results = os.path.join(ROOT, "bench", "results")
benchcharts_output = "_generated/bench"

root_doc = "index"
exclude_patterns = ["_build", "_generated/**/*.rst"]
templates_path = []
pygments_style = "sphinx"
nitpicky = False

html_theme = "alabaster"
html_theme_options = {
    "description": "Alarm notifier service for OpenStack-style clouds",
    "fixed_sidebar": True,
}
html_last_updated_fmt = None
