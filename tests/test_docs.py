"""The documentation: it builds with warnings as errors, documents every option,
and the README stays a short front page that agrees with it."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT

DOC_SOURCE = ROOT / "doc" / "source"
README = ROOT / "README.rst"
README_LIMIT = 10_000
QUICK_START = ("    ./tools/run-service.sh\n", "    ./tools/run-tests.sh\n")


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    """The HTML documentation, built as the docs' own test command builds it."""
    out = tmp_path_factory.mktemp("html")
    doctrees = tmp_path_factory.mktemp("doctrees")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
         "-d", str(doctrees), str(DOC_SOURCE), str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    report = proc.stdout[-3000:] + proc.stderr[-6000:]
    assert proc.returncode == 0, report
    assert "WARNING:" not in proc.stderr and "ERROR:" not in proc.stderr, report
    return out


def test_docs_build_with_warnings_as_errors(html):
    for page in ("index", "install", "configuration/index", "configuration/sample",
                 "migrating", "security", "journal", "endpoint-health", "destinations",
                 "templates", "plugins", "notifications", "benchmarks",
                 "admin/monitoring", "admin/upgrade-check", "admin/systemd"):
        assert (html / f"{page}.html").is_file(), page


def test_docs_document_every_option_of_the_project(html):
    """Every option oslo-config-generator lists for the project has its entry."""
    proc = subprocess.run(
        [sys.executable, "-m", "oslo_config.generator", "--namespace", "ceilo_notifier",
         "--format", "json"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    groups = json.loads(proc.stdout)["options"]
    reference = (html / "configuration" / "index.html").read_text()
    anchors = set(re.findall(r'id="([^"]+)"', reference))
    assert "service_credentials" in groups and "alarm" in groups
    for group, data in groups.items():
        assert data["opts"], group
        for opt in data["opts"]:
            assert f"{group}.{opt['name'].replace('-', '_')}" in anchors, (group, opt["name"])


def test_docs_sample_is_the_generated_configuration(html):
    sample = (html / "configuration" / "sample.html").read_text()
    assert "rest_notifier_denied_networks" in sample
    assert "[oslo_messaging_rabbit]" in sample


def test_docs_benchmark_charts_are_drawn_from_the_results(html):
    page = (html / "benchmarks.html").read_text()
    for chart in ("throughput", "cpu", "p99", "rss"):
        assert f'src="_images/{chart}.png"' in page, chart
        assert (html / "_images" / f"{chart}.png").stat().st_size > 1000, chart
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import charts
    finally:
        sys.path.remove(str(ROOT / "bench"))
    path, _ = charts.newest_full_run()
    assert path.name in page


def test_docs_notification_samples_are_shown(html):
    page = (html / "notifications.html").read_text()
    for sample in sorted((ROOT / "doc" / "notification_samples").glob("*.json")):
        event = json.loads(sample.read_text())
        assert event["event_type"] in page, sample.name


def test_readme_is_short():
    size = len(README.read_text())
    assert size <= README_LIMIT, f"README.rst has {size} characters; at most {README_LIMIT}"


def test_readme_quick_start_matches_the_install_guide():
    readme = README.read_text()
    install = (DOC_SOURCE / "install.rst").read_text()
    for line in QUICK_START:
        assert line in readme and line in install, line
    # The README's links lead to pages that exist.
    for target in re.findall(r"<(doc/source/[^>]+\.rst)>`_", readme):
        assert (ROOT / target).is_file(), target
