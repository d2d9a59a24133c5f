"""The README's third-party plugin example, installed from its own package and used."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import ROOT, wait_until

EXAMPLE = ROOT / "examples" / "ceilo-notifier-file"


def test_third_party_plugin_is_installed_and_used_by_the_service(
    tmp_path, start_notifier, topic, caster, webhook
):
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
    )
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    notifier = start_notifier(topic, env={"PYTHONPATH": path})
    assert "plugins: file, http, https, log, test" in notifier.log()

    out = tmp_path / "alarms.jsonl"
    good = webhook.url("ok")
    caster(topic).cast(
        {
            "alarm_id": "plugin-1",
            "actions": [f"file://{out}", good],
            "previous": "ok",
            "current": "alarm",
            "reason": "disk full",
            "reason_data": {},
        }
    )
    assert wait_until(out.exists, 10)
    (line,) = out.read_text().splitlines()
    record = json.loads(line)
    assert record["alarm_id"] == "plugin-1" and record["reason"] == "disk full"
    assert record["request_id"].startswith("req-")
    assert webhook.wait_for(good)
