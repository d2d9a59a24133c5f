"""Deliveries that survive the process: kill -9, SIGTERM, and the manage tool."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

from tests.helpers import ROOT, alarm, wait_until


def manage(config, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ceilo_notifier.cmd.manage", "--config-file", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def cast(caster, topic, url, alarm_id):
    caster(topic).cast(alarm([url], alarm_id=alarm_id))


def test_a_retrying_delivery_survives_kill_9_and_resumes(start_notifier, topic, caster, webhook):
    host = {"host": "durable-host"}
    first = start_notifier(
        topic, default=host, name="durable", alarm={"rest_notifier_max_retries": 3}
    )
    url = webhook.url("retry-after/4")  # 503 + Retry-After: 4, then 200
    cast(caster, topic, url, "survivor")
    webhook.wait_for(url, 1)
    assert first.wait_for_log(r"Alarm survivor: attempt 1 .* retrying in 4\.\d s")
    assert first.wait_journaled("survivor", "retrying")
    first.stop(signal.SIGKILL)
    assert len(webhook.requests_for(url)) == 1

    second = start_notifier(
        topic, default=host, name="durable", alarm={"rest_notifier_max_retries": 3}
    )
    assert "Resumed 1 unfinished deliveries from the journal" in second.log()
    requests = webhook.wait_for(url, 2, timeout=10)
    assert len(requests) == 2
    assert (
        requests[0].headers["x-openstack-request-id"]
        == requests[1].headers["x-openstack-request-id"]
    )
    assert requests[1].received - requests[0].received >= 3.9  # the Retry-After still held
    assert second.wait_for_log(r"Alarm survivor delivered .* attempt 2")
    assert second.wait_journaled("survivor", "delivered")
    history = manage(second.config_path, "history", "--alarm-id", "survivor", "--events")
    assert re.search(r"survivor\s+http://\S+\s+delivered\s+2\s+200", history.stdout), history


def test_sigterm_lets_an_in_flight_delivery_finish_and_exits_zero(
    start_notifier, topic, caster, webhook
):
    notifier = start_notifier(
        topic, default={"shutdown_grace_period": 10}, alarm={"rest_notifier_timeout": 5}
    )
    url = webhook.url("slow/2")
    cast(caster, topic, url, "in-flight")
    webhook.wait_for(url, 1)
    assert notifier.stop(signal.SIGTERM) == 0
    log = notifier.log()
    assert re.search(r"Alarm in-flight delivered to .* \(status 200", log)
    assert log.index("Alarm in-flight delivered") < log.index("ceilo-notifier stopped")


def test_sigterm_journals_what_could_not_finish_and_the_next_start_resumes_it(
    start_notifier, topic, caster, webhook
):
    host = {"host": "graceful-host", "shutdown_grace_period": 0.5}
    first = start_notifier(
        topic, default=host, name="graceful", alarm={"rest_notifier_max_retries": 2}
    )
    url = webhook.url("retry-after/2")
    cast(caster, topic, url, "unfinished")
    webhook.wait_for(url, 1)
    assert first.stop(signal.SIGTERM) == 0
    assert "1 deliveries unfinished; they stay in the journal" in first.log()
    start_notifier(topic, default=host, name="graceful", alarm={"rest_notifier_max_retries": 2})
    assert len(webhook.wait_for(url, 2, timeout=10)) == 2


def test_manage_history_failed_replay_and_purge(start_notifier, topic, caster, webhook):
    notifier = start_notifier(topic, alarm={"rest_notifier_max_retries": 0})
    good, flaky = webhook.url("ok"), webhook.url("flaky/1/500")
    cast(caster, topic, good, "m-good")
    cast(caster, topic, flaky, "m-flaky")
    assert notifier.wait_for_log(r"Alarm m-flaky: delivery to .* failed after 1 attempt")
    assert notifier.wait_for_log(r"Alarm m-good delivered")
    assert notifier.wait_journaled("m-flaky", "failed")
    assert notifier.wait_journaled("m-good", "delivered")
    config = notifier.config_path

    history = manage(config, "history")
    assert history.returncode == 0, history.stderr
    header = history.stdout.splitlines()[0].split()
    assert header[:3] == ["ACCEPTED", "(UTC)", "ALARM"] and "REQUEST" in header
    assert re.search(r"m-good\s+http://\S+\s+delivered\s+1\s+200", history.stdout)
    assert re.search(r"m-flaky\s+http://\S+\s+failed\s+1\s+500", history.stdout)
    assert "2 deliveries" in history.stdout

    only_failed = manage(config, "failed")
    assert "m-flaky" in only_failed.stdout and "m-good" not in only_failed.stdout
    by_outcome = manage(config, "history", "--outcome", "delivered", "--since", "1h")
    assert "m-good" in by_outcome.stdout and "m-flaky" not in by_outcome.stdout
    assert "0 deliveries" in manage(config, "history", "--until", "1h").stdout

    replay = manage(config, "replay")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert re.search(r"\[1/1\] req-\S+ http://\S+ -> delivered \(200\)", replay.stdout)
    assert "replayed 1: 1 delivered, 0 not" in replay.stdout
    assert len(webhook.requests_for(flaky)) == 2
    assert "0 deliveries" in manage(config, "failed").stdout
    assert "nothing to replay" in manage(config, "replay").stdout

    assert "purged 0 finished" in manage(config, "purge", "--older-than", "1").stdout
    assert "purged 2 finished" in manage(config, "purge", "--older-than", "0").stdout
    assert wait_until(lambda: "0 deliveries" in manage(config, "history").stdout, 2)


def test_kill_9_in_a_burst_loses_no_acknowledged_cast(start_notifier, topic, caster, webhook):
    """1500 casts to a webhook that takes 0.2 s, kill -9 while they still arrive, then a
    restart: every alarm arrives, and only what was in flight may arrive twice."""
    settings = {
        "default": {"host": "burst-host", "shutdown_grace_period": 2},
        "alarm": {"per_host_concurrency": 40, "rest_notifier_timeout": 5},
        "name": "burst",
    }
    first = start_notifier(topic, **settings)
    url = webhook.url("slow/0.2")
    client = caster(topic)
    ids = [f"burst-{i:04d}" for i in range(1500)]
    sender = threading.Thread(
        target=lambda: [client.cast(alarm([url], alarm_id=a)) for a in ids], daemon=True
    )
    sender.start()
    time.sleep(0.7)
    first.stop(signal.SIGKILL)
    sender.join(60)
    assert len(webhook.requests_for(url)) < 1500  # the kill did land mid-burst

    second = start_notifier(topic, **settings)

    def arrived():
        return {r.json()["alarm_id"] for r in webhook.requests_for(url)}

    wait_until(lambda: arrived() >= set(ids), 60, 0.2)
    time.sleep(1)
    got = [r.json()["alarm_id"] for r in webhook.requests_for(url)]
    lost = set(ids) - set(got)
    repeated = len(got) - len(set(got))
    assert not lost, f"{len(lost)} acknowledged alarms lost: {sorted(lost)[:10]}"
    # In flight at the kill: at most per_host_concurrency, plus outcomes not yet
    # journaled (the event writer's lag: about a second's worth at 200 per second
    # on a loaded machine, the suite running in two workers).
    assert repeated <= 40 + 40, f"{repeated} alarms delivered twice"
    assert second.alive()


def test_a_cast_the_broker_delivers_again_is_not_delivered_again(
    start_notifier, topic, caster, webhook, monkeypatch
):
    """The broker hands a cast to another consumer when the one that had it died
    before acknowledging it (after the journal write): the cast's own id, which
    the broker keeps, says it is journaled already. Here the same message is
    sent twice, with the service restarted in between."""
    from oslo_messaging._drivers import amqp as rpc_amqp

    monkeypatch.setattr(
        rpc_amqp, "_add_unique_id", lambda msg: msg.update({rpc_amqp.UNIQUE_ID: "c0ffee" * 5})
    )
    host = {"host": "again-host"}
    url = webhook.url("ok")
    first = start_notifier(topic, default=host, name="again")
    cast(caster, topic, url, "redelivered")
    (request,) = webhook.wait_for(url)
    assert first.wait_journaled("redelivered", "delivered")
    first.stop()
    second = start_notifier(topic, default=host, name="again")
    cast(caster, topic, url, "redelivered")
    assert second.wait_for_log(
        r"Alarm redelivered: req-\S+ to http://\S+ is journaled already \(the broker "
        r"delivered its message again\); not accepted twice"
    ), second.log()
    time.sleep(1)
    assert webhook.requests_for(url) == [request]
    # The next cast, a message of its own, goes out.
    monkeypatch.undo()
    cast(caster, topic, url, "redelivered")
    assert len(webhook.wait_for(url, 2)) == 2
