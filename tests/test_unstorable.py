"""Code points the journal's database refuses (NUL, lone surrogates) stop at intake,
on both consumers, with the journal on PostgreSQL: one log line, acknowledged, and
the rest of the batch goes on."""

from __future__ import annotations

import re
import time
import uuid

from tests import helpers
from tests.conftest import empty_journal
from tests.helpers import alarm

REPLACED = "\ufffd"


def _start(start_notifier, topic, pg_schema_url, **alarm_opts):
    empty_journal(pg_schema_url)
    return start_notifier(
        topic,
        alarm={"batch_size": 10, "batch_timeout": 0.3, **alarm_opts},
        extra={"database": {"connection": pg_schema_url}},
    )


def _rejected_once(notifier, needle: str, rabbit_url: str, prefix: str) -> None:
    """The rejection is one line, and stays one: the message is not delivered again."""
    assert notifier.wait_for_log(re.escape(needle), timeout=5), notifier.log()
    time.sleep(1.5)  # longer than the listener's requeue delay
    log = notifier.log()
    helpers.assert_one_line_each(log, [needle])
    assert "requeued" not in log
    assert "refused" not in log  # neither a delivery's record nor an event
    assert "Logging error" not in log
    assert helpers.queues_drained(rabbit_url, prefix), helpers.queue_counts(rabbit_url, prefix)
    assert notifier.alive()


def test_a_nul_in_an_alarm_id_refuses_that_alarm_alone_on_the_listener(
    start_notifier, topic, aodh_evaluator, webhook, pg_schema_url, rabbit_url
):
    """PostgreSQL refused the NUL, and the whole batch was requeued every second."""
    aodh_topic = f"alarming_{uuid.uuid4().hex[:8]}"
    notifier = _start(
        start_notifier,
        topic,
        pg_schema_url,
        notification_listener=True,
        notifier_topic=aodh_topic,
    )
    bad_url, good_url = webhook.url("ok"), webhook.url("ok")
    send = aodh_evaluator(aodh_topic)
    send([bad_url], "bad\x00nul")
    send([good_url], "good-after-nul")

    (request,) = webhook.wait_for(good_url, timeout=5)
    assert request.json()["alarm_id"] == "good-after-nul"
    assert notifier.wait_journaled("good-after-nul", "delivered", timeout=5)
    _rejected_once(
        notifier,
        r"Alarm bad\x00nul: notification rejected: alarm_id contains U+0000 (NUL)",
        rabbit_url,
        aodh_topic,
    )
    assert webhook.requests_for(bad_url) == []


def test_a_lone_surrogate_in_an_alarm_id_refuses_that_cast_alone(
    start_notifier, caster, topic, webhook, pg_schema_url, rabbit_url
):
    """A free-text field with such code points is delivered and journaled, replaced."""
    notifier = _start(start_notifier, topic, pg_schema_url)
    bad_url, good_url, bad_action_url = (webhook.url("ok") for _ in range(3))
    client = caster(topic)
    client.cast(alarm([bad_url], alarm_id="bad-\ud800-id"))
    client.cast(
        alarm(
            [f"{bad_action_url}?x=\udfff", good_url],
            alarm_id="good-after-surrogate",
            alarm_name="cpu\x00high",
            reason="Transition\ud800",
            reason_data={"type\x00": ["a\udc00", {"b": "c\x00"}], "count": 3},
        )
    )

    (request,) = webhook.wait_for(good_url, timeout=5)
    body = request.json()
    assert body["alarm_id"] == "good-after-surrogate"
    assert body["alarm_name"] == f"cpu{REPLACED}high"
    assert body["reason"] == f"Transition{REPLACED}"
    assert body["reason_data"] == {
        f"type{REPLACED}": [f"a{REPLACED}", {"b": f"c{REPLACED}"}],
        "count": 3,
    }
    assert notifier.wait_journaled("good-after-surrogate", "delivered", timeout=5)
    _rejected_once(
        notifier,
        r"Alarm bad-\ud800-id: notification rejected: alarm_id contains U+D800 (a lone surrogate)",
        rabbit_url,
        topic,
    )
    log = notifier.log()
    helpers.assert_one_line_each(
        log, [r"dropped: action contains U+DFFF (a lone surrogate)", "field reason_data contains"]
    )
    assert webhook.requests_for(bad_url) == []
    assert webhook.requests_for(bad_action_url) == []
