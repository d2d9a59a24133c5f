"""The options and the sample configuration generated from them."""

from __future__ import annotations

import subprocess
import sys

from ceilo_notifier import opts
from tests.helpers import ROOT

GENERATOR = ROOT / "etc/ceilo-notifier/ceilo-notifier-config-generator.conf"
SAMPLE = ROOT / "etc/ceilo-notifier/ceilo-notifier.conf.sample"


def test_sample_config_is_generated_from_the_current_options(tmp_path):
    out = tmp_path / "sample.conf"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "oslo_config.generator",
            "--config-file",
            str(GENERATOR),
            "--output-file",
            str(out),
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    assert out.read_text() == SAMPLE.read_text(), (
        "the sample is out of date; regenerate it with: oslo-config-generator "
        "--config-file etc/ceilo-notifier/ceilo-notifier-config-generator.conf"
    )


def own_options():
    """The project's own options (keystoneauth's, in [service_credentials], are its own)."""
    return [(group or "DEFAULT", options) for group, options in opts.ALL_GROUPS]


def test_every_option_is_listed_and_documented():
    listed = {(group, opt.name) for group, options in opts.list_opts() for opt in options}
    assert ("alarm", "rest_notifier_max_retries") in listed
    assert ("DEFAULT", "host") in listed
    assert ("service_credentials", "auth_type") in listed
    for _, options in own_options():
        for opt in options:
            assert opt.help and len(opt.help) > 20, opt.name


def test_sample_documents_every_option_of_the_project():
    sample = SAMPLE.read_text()
    for group, options in opts.list_opts():
        assert f"[{group}]" in sample
        for opt in options:
            assert f"\n#{opt.dest} =" in sample, opt.dest


def test_entry_point_lists_the_options():
    from importlib import metadata

    (ep,) = [
        e for e in metadata.entry_points(group="oslo.config.opts") if e.name == "ceilo_notifier"
    ]
    assert ep.load() is opts.list_opts


def _project_imports(module: str) -> set[str]:
    """The ceilo_notifier modules a module's source imports, at any depth of its code."""
    import ast

    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if name.startswith("ceilo_notifier.")}


def test_options_flow_one_way():
    """opts imports none of the project's modules (not even inside a function): the
    modules that read options import it, never the other way round."""
    assert _project_imports("ceilo_notifier.opts") == set()
    assert "ceilo_notifier.opts" in _project_imports("ceilo_notifier.keystone")
    assert "ceilo_notifier.opts" in _project_imports("ceilo_notifier.rpc")


def test_opts_alone_loads_no_other_module_of_the_project():
    """In a fresh interpreter, listing and registering every option loads opts only."""
    code = (
        "import sys\n"
        "from oslo_config import cfg\n"
        "from ceilo_notifier import opts\n"
        "opts.list_opts()\n"
        "opts.register_opts(cfg.ConfigOpts())\n"
        "print(sorted(m for m in sys.modules if m.startswith('ceilo_notifier')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert out.split("\n")[-2] == "['ceilo_notifier', 'ceilo_notifier.opts']"
