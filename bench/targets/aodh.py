"""aodh-notifier itself, fed as aodh's evaluator feeds it.

aodh is installed with pip into a virtualenv of its own, ``bench/.aodh-venv``
(ignored by git), created on first use: ``--aodh-version`` (default
23.0.0) from PyPI. ``aodh-notifier --config-file F`` runs as a cotyledon
master with ``[notifier] workers`` (1) worker processes, each a batch
notification listener on topic ``alarming`` of exchange ``aodh`` whose REST
notifier POSTs with requests. Its config: the broker, the queue settings of
the run, and whatever ``--aodh-set`` adds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common import BENCH, CHILD_ENV, NOTIFICATION_TOPIC, expand_dir, log, merge, parse_overrides

from targets import Target

VENV = BENCH / ".aodh-venv"
DEFAULT_VERSION = "23.0.0"


def _installed(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not (venv / "bin" / "aodh-notifier").exists() or not python.exists():
        return None
    res = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('aodh'))"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return res.stdout.strip() or None


class Aodh(Target):
    name = "aodh"
    title = "aodh-notifier"
    order = 40
    stop_timeout = 15.0
    version: str | None = None

    @classmethod
    def prepare(cls, bench) -> str | None:
        wanted = bench.args.aodh_version or DEFAULT_VERSION
        have = _installed(VENV)
        if have != wanted:
            log(f"installing aodh=={wanted} into {VENV.relative_to(BENCH.parent)} "
                "(once; a few minutes)")  # fmt: skip
            if not (VENV / "bin" / "python").exists():
                subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True,
                               capture_output=True, timeout=300)  # fmt: skip
            pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
            res = subprocess.run([*pip, f"aodh=={wanted}"], capture_output=True, text=True,
                                 timeout=1800)  # fmt: skip
            if res.returncode != 0:
                return f"pip install aodh=={wanted} failed: {res.stderr.strip()[-500:]}"
            have = _installed(VENV)
        cls.version = have
        return None if have else "aodh-notifier not found in its virtualenv"

    def config(self, broker, extra: dict) -> dict:
        sections = merge(
            {
                "DEFAULT": {"transport_url": broker.url, "notifier_topic": NOTIFICATION_TOPIC},
                "notifier": {"workers": 1},
            },
            extra,
            parse_overrides(self.bench.args.aodh_set or []),
        )
        return expand_dir(sections, self.d)

    def command(self, config: Path) -> list[str]:
        return [str(VENV / "bin" / "aodh-notifier"), "--config-file", str(config)]

    def proc_kwargs(self) -> dict:
        # nothing of the project's environment (PYTHONPATH of --rev) leaks into aodh's
        env = {k: v for k, v in CHILD_ENV.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return {"env": env}

    def settings(self) -> dict:
        out = {"version": self.version, "notifier.workers": 1, "batch_size": 1,
               "executor threads": 64, "rest_notifier_max_retries": 0,
               "request timeout": "none"}  # fmt: skip
        for section, values in parse_overrides(self.bench.args.aodh_set or []).items():
            for k, v in values.items():
                out[f"{section}.{k}"] = f"{v} (--aodh-set)"
        return out
