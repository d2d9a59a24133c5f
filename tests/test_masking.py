"""Credentials never reach a log line or an event."""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid

import pytest

from ceilo_notifier import masking
from tests.helpers import alarm, write_config


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://alice:s3cret@example.org/hook", "http://alice:***@example.org/hook"),
        # A password holding '/' (the parser takes the rest for a path) or '@'.
        ("http://admin:s3cr/t@hook.example.org/x", "http://***@hook.example.org/x"),
        (
            "zaqar://?topic=t&subscriber=http%3A//u%3Ap%40ss@h/",
            "zaqar://?topic=t&subscriber=http://u:***@h/",
        ),
        ("https://alice@example.org/", "https://alice@example.org/"),
        ("trust+https://abc123trust@example.org/x", "trust+https://***@example.org/x"),
        ("http://example.org/h?token=abc&team=db", "http://example.org/h?token=***&team=db"),
        (
            "http://example.org/h?api_key=k&password=p",
            "http://example.org/h?api_key=***&password=***",
        ),
        ("http://example.org/plain?x=1", "http://example.org/plain?x=1"),
    ],
)
def test_mask_url(url, expected):
    assert masking.mask_url(url) == expected


def test_filter_masks_urls_in_any_record():
    record = logging.LogRecord(
        "x", logging.DEBUG, __file__, 1, "POST %s failed", ("http://u:hunter2@h/p",), None
    )
    masking.MaskingFilter().filter(record)
    assert record.getMessage() == "POST http://u:***@h/p failed"


def test_mask_text_masks_key_value_secrets():
    assert "hunter2" not in masking.mask_text("login with password=hunter2 at http://a:b@c/")


def test_filter_masks_secret_query_values_as_urllib3_logs_them():
    record = logging.LogRecord(
        "urllib3",
        logging.DEBUG,
        __file__,
        1,
        '%s "POST /hook?team=db&access_token=abc123 HTTP/1.1" 200',
        ("http://h:80",),
        None,
    )
    masking.MaskingFilter().filter(record)
    assert record.getMessage() == 'http://h:80 "POST /hook?team=db&access_token=*** HTTP/1.1" 200'


# Passwords that urllib's parser quotes in its errors, or that stop the simple
# userinfo pattern: NFKC characters, blanks, quotes, brackets.
HOSTILE_PASSWORDS = {
    "http://bob:Nfkc7pw＃et／@h.example/x": ("Nfkc7pw",),
    "http://bob:Blank5 pw＃@h.example/": ("Blank5", "pw＃"),
    "http://bob:Quote3'pw＃@h.example/": ("Quote3",),
    "http://bob:Brack9[Et4]@h.example/": ("Brack9", "Et4"),
    "http://bob:Half2[Br@h.example/": ("Half2",),
    " http://bob:Lead1/Sp@h.example/": ("Lead1",),
}
SECRETS = [s for secrets in HOSTILE_PASSWORDS.values() for s in secrets]


@pytest.mark.parametrize("url", list(HOSTILE_PASSWORDS))
def test_urls_the_parser_refuses_are_masked(url):
    masked = masking.mask_url(url)
    assert "h.example" in masked
    assert not [s for s in HOSTILE_PASSWORDS[url] if s in masked], masked


@pytest.mark.parametrize("subscriber", ["http://bob:Blank5 pw@h/", "http://bob:Sl4sh/pw@h/"])
def test_a_subscriber_url_in_a_query_is_masked_as_a_url(subscriber):
    from urllib import parse

    masked = masking.mask_url("zaqar://?topic=t&subscriber=" + parse.quote(subscriber, safe=""))
    assert masked == "zaqar://?topic=t&subscriber=http://***@h/"


def test_urls_nested_in_urls_are_masked_without_recursing_without_end():
    url = "a://?x=" * 1200 + "http://bob:N3sted@h.example/"
    assert "N3sted" not in masking.mask_url(url)


def test_check_action_quotes_no_password_of_an_unparsable_url(tmp_path):
    from tests.test_actions import manage

    config = write_config(tmp_path / "manage.conf", {"DEFAULT": {}})
    result = manage("--config-file", str(config), "check-action", *HOSTILE_PASSWORDS)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(HOSTILE_PASSWORDS)
    assert all(line.startswith("invalid  ") and "unparsable URL" in line for line in lines), lines
    assert "NFKC normalization" in lines[0] and "not an IP address" in lines[3]
    assert not [s for s in SECRETS if s in result.stdout + result.stderr], result.stdout


def test_a_service_quotes_no_password_of_an_unparsable_url(
    start_notifier, topic, caster, webhook, rabbit_url
):
    """Cast over the real broker: the log, the journal and the notifications keep no password."""
    from tests.test_notifications import Collector

    versioned = f"versioned_{uuid.uuid4().hex[:8]}"
    collector = Collector(rabbit_url, [versioned])
    try:
        notifier = start_notifier(
            topic,
            default={"event_dispatchers": ["database", "message"]},
            extra={"notifications": {"versioned_notifications_topics": versioned}},
            debug=True,
        )
        good = webhook.url("ok")
        caster(topic).cast(alarm([*HOSTILE_PASSWORDS, good], alarm_id="hostile-passwords"))
        assert webhook.wait_for(good)
        assert notifier.wait_for_log(r"Alarm hostile-passwords: action .* dropped", 10, count=6)
        got = collector.wait(len(HOSTILE_PASSWORDS) + 1)
        assert notifier.wait_journaled("hostile-passwords")
    finally:
        collector.close()
    log = notifier.log()
    dropped = [line for line in log.splitlines() if "dropped: unparsable URL" in line]
    assert len(dropped) == len(HOSTILE_PASSWORDS), dropped
    notifications = json.dumps(got, ensure_ascii=False)
    assert len(got) == len(HOSTILE_PASSWORDS) + 1 and "unparsable URL" in notifications
    db = sqlite3.connect(notifier.journal_url.removeprefix("sqlite:///"))
    tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    journal = repr([db.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables])
    db.close()
    assert "unparsable URL" in journal
    for where, text in (("log", log), ("notifications", notifications), ("journal", journal)):
        assert not [s for s in SECRETS if s in text], where
