"""Shares of the delivery capacity: what one tenant cannot multiply for free."""

from __future__ import annotations

import pytest

from ceilo_notifier import shares


@pytest.mark.parametrize(
    ("host", "share"),
    [
        ("a1.evil.example", "evil.example"),
        ("A2.Evil.Example.", "evil.example"),
        ("hooks.example.co.uk", "example.co.uk"),
        ("other.co.uk", "other.co.uk"),
        # Two sites under a private public suffix are two tenants.
        ("alice.github.io", "alice.github.io"),
        ("x.alice.github.io", "alice.github.io"),
        ("localhost", "localhost"),
        ("192.0.2.7", "192.0.2.7"),
        ("[2001:db8:1:2::5]", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("", ""),
        (None, ""),
    ],
)
def test_share_of(host, share):
    assert shares.share_of(host) == share


def test_addresses_in_other_ipv6_sites_are_other_shares():
    assert shares.share_of("2001:db8:1:2::1") != shares.share_of("2001:db8:1:3::1")


def test_actions_without_a_host_share_by_scheme_not_all_together():
    """zaqar://, trust+heat:// and log:// call services the operator chose: a slow
    Heat must not take the slots of every Zaqar or log action."""
    from urllib import parse

    from ceilo_notifier.delivery import Delivery
    from ceilo_notifier.notification import AlarmNotification

    def share(action):
        return Delivery(AlarmNotification(alarm_id="a"), action, parse.urlsplit(action), None).share

    assert share("trust+heat://t@") == "trust+heat:"
    assert share("zaqar://?topic=x&subscriber=http://h.example/") == "zaqar:"
    assert share("log://") == "log:"
    assert share("http://hooks.example.org/x") == "example.org"
