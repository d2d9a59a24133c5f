"""Credentials never reach a log line or an event."""

from __future__ import annotations

import logging

import pytest

from ceilo_notifier import masking


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
