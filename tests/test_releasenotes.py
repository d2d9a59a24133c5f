"""Release notes: ``reno lint`` is clean, run from the repository root.

reno reads the notes through git (dulwich) and, without a release tag, walks
the whole first-parent history: a shallow clone, or a copy that is not a git
checkout, cannot be scanned. There the lint runs on a one-commit repository
holding a copy of ``releasenotes/`` instead (what lint checks, the sections
and unique ids of the notes, needs no history).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import ROOT

NOTES = ROOT / "releasenotes" / "notes"
RENO = [sys.executable, "-c", "import sys; from reno.main import main; sys.exit(main())"]
SECTIONS = {
    "prelude",
    "features",
    "issues",
    "upgrade",
    "deprecations",
    "critical",
    "security",
    "fixes",
    "other",
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()


def full_checkout(root: Path) -> bool:
    try:
        return git(root, "rev-parse", "--is-shallow-repository") == "false"
    except (subprocess.CalledProcessError, FileNotFoundError):
        return False


def one_commit_copy(tmp_path: Path, extra: dict[str, str] | None = None) -> Path:
    """A new repository with releasenotes/ (and extra notes) in one commit."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "releasenotes", repo / "releasenotes")
    for name, text in (extra or {}).items():
        (repo / "releasenotes" / "notes" / name).write_text(text)
    git(repo.parent, "init", "-q", str(repo))
    git(repo, "add", "releasenotes")
    git(
        repo,
        "-c",
        "user.name=tests",
        "-c",
        "user.email=tests@example.org",
        "commit",
        "-q",
        "-m",
        "notes",
    )
    return repo


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(RENO + ["lint"], cwd=root, capture_output=True, text=True, timeout=120)


def test_reno_lint(tmp_path):
    root = ROOT if full_checkout(ROOT) else one_commit_copy(tmp_path)
    proc = lint(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_reno_lint_sees_a_mistake(tmp_path):
    bad = "---\nfeature:\n  - A misspelt section.\n"
    proc = lint(one_commit_copy(tmp_path, {"misspelt-0123456789abcdef.yaml": bad}))
    assert proc.returncode != 0
    assert "unrecognized section name feature" in proc.stdout + proc.stderr


def test_notes_use_known_sections_as_lists():
    notes = sorted(NOTES.glob("*.yaml"))
    assert len(notes) >= 6
    for path in notes:
        content = yaml.safe_load(path.read_text())
        assert isinstance(content, dict) and content, path.name
        assert set(content) <= SECTIONS, path.name
        for section, value in content.items():
            if section == "prelude":
                assert isinstance(value, str), path.name
            else:
                assert isinstance(value, list) and all(isinstance(v, str) for v in value)
