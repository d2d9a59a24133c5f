"""The documentation's third-party plugin example, installed from its own package and used."""

from __future__ import annotations

import concurrent.futures
import json
import re

import pytest

from tests.helpers import ROOT, complete_lines, install_package, wait_until

EXAMPLES = ROOT / "examples"


EXAMPLE_PACKAGES = ("ceilo-notifier-file", "ceilo-notifier-jsonlines")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, dict[str, str]]:
    """Each example pip-installed into a directory of its own, both builds side by
    side (each takes seconds); per example, the environment that sees it alone."""
    with concurrent.futures.ThreadPoolExecutor(len(EXAMPLE_PACKAGES)) as pool:
        envs = {
            example: pool.submit(
                install_package, EXAMPLES / example, tmp_path_factory.mktemp(example)
            )
            for example in EXAMPLE_PACKAGES
        }
        return {example: env.result() for example, env in envs.items()}


def written_records(path) -> list[dict]:
    return [json.loads(line) for line in complete_lines(path)]


def test_third_party_plugin_is_installed_and_used_by_the_service(
    tmp_path, installed, start_notifier, topic, caster, webhook
):
    notifier = start_notifier(topic, env=installed["ceilo-notifier-file"])
    assert re.search(r"with plugins: file, http, https, log, test\b", notifier.log())

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
    assert wait_until(lambda: written_records(out), 10)
    (record,) = written_records(out)
    assert record["alarm_id"] == "plugin-1" and record["reason"] == "disk full"
    assert record["request_id"].startswith("req-")
    assert webhook.wait_for(good)


def test_third_party_event_dispatcher_receives_every_event(
    tmp_path, installed, start_notifier, topic, caster, webhook
):
    out = tmp_path / "events.jsonl"
    notifier = start_notifier(
        topic,
        env=installed["ceilo-notifier-jsonlines"],
        default={"event_dispatchers": ["database", "jsonlines"]},
        alarm={"rest_notifier_max_retries": 1},
        extra={"jsonlines_dispatcher": {"path": out}},
    )
    good, bad = webhook.url("ok"), webhook.url("status/503")
    caster(topic).cast(
        {
            "alarm_id": "jsonl-1",
            "actions": [good, bad, "nope://x"],
            "previous": "ok",
            "current": "alarm",
            "reason": "r",
            "reason_data": {},
        }
    )
    assert notifier.wait_for_log(r"Alarm jsonl-1: delivery to .* failed after 2 attempt")

    assert wait_until(lambda: len(written_records(out)) >= 4, 10)
    seen = sorted((r["outcome"], r["attempt"], r["level"]) for r in written_records(out))
    assert seen == [
        ("delivered", 1, "INFO"),
        ("dropped", 0, "ERROR"),
        ("failed", 2, "ERROR"),
        ("retrying", 1, "WARNING"),
    ]
