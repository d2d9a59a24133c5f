"""``ceilo_notifier.actions``: action URLs as an alarm API registers them.

``validate`` runs on a bare ``ConfigOpts`` (as an alarm API has it),
``ceilo-notifier-manage check-action`` runs as a process, and
``register``/``unregister`` create and delete trusts in the real Keystone
(``keystone`` from PyPI, see ``tests/keystone``; skipped with the reason where
it cannot be installed), then a delivery goes through the rewritten URL.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from keystoneauth1.identity import v3
from oslo_config import cfg

from ceilo_notifier import actions, events
from tests import keystone as ks
from tests.helpers import ROOT, write_config

PRESIGNED = (
    "zaqar://?queue_name=q&project_id=p&paths=/v2/queues/q/messages&methods=POST"
    "&expires=2030-01-01T00:00:00&signature=topsecret"
)
OWN = "http, https, log, test, trust+heat, trust+http, trust+https, trust+zaqar, zaqar"
INSTALLED = f"{OWN}; and {len(actions.installed()) - 9} Apprise services"


def bare_conf(config_file: Path | None = None) -> cfg.ConfigOpts:
    """A ConfigOpts with nothing registered, parsed, as an alarm API has it."""
    conf = cfg.ConfigOpts()
    args = ["--config-file", str(config_file)] if config_file else []
    conf(args, project="ceilo-notifier", default_config_files=[])
    return conf


# -- validate ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "log://",
        "test://",
        "http://h/p",
        "HTTP://h/p",
        "https://h:8443/p?aodh-alarm-ssl-verify=0",
        "trust+http://h/p",
        "trust+https://h/p",
        "zaqar://?topic=t&subscriber=http://h/x",
        "zaqar://?topic=t&subscriber=http://h/x&ttl=600",
        PRESIGNED,
        "trust+zaqar://?queue_name=q",
        "trust+heat://",
    ],
)
def test_valid_actions_pass(url):
    assert actions.validate(bare_conf(), url) is None


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        (42, "of type int, not a string"),
        (None, "not a string"),
        (b"http://h/p", "bytes, not a string"),
        ("http://h/" + "a" * 4096, "characters long, more than 4096"),
        ("http://h:99999/", "unparsable URL: invalid port"),
        ("http://[::1/", "unparsable URL"),
        ("h/p", "URL has no scheme"),
        ("foo://h/p", f"unknown scheme 'foo' (installed: {INSTALLED})"),
        ("http:///p", "no host: expected http://host[:port]/path"),
        ("trust+https:///p", "no host: expected https://host[:port]/path"),
        ("https://h/p?aodh-alarm-ssl-verify=maybe", "aodh-alarm-ssl-verify='maybe' is neither"),
        ("trust+http://tid@h/p", "cannot carry a trust id"),
        ("trust+https://tid:delete@h/p", "cannot carry a trust id"),
        ("trust+zaqar://tid@?queue_name=q", "cannot carry a trust id"),
        ("trust+heat://tid@", "cannot carry a trust id"),
        ("zaqar://?subscriber=http://h/x", "no topic in the query"),
        ("zaqar://?topic=t&ttl=5", "ttl='5' is not a number of seconds"),
        (
            "zaqar://?queue_name=q&signature=s",
            "pre-signed queue data incomplete: no project_id, paths, methods, expires",
        ),
        ("trust+zaqar://", "no queue_name in the query"),
        ("trust+zaqar://?queue_name=bad%20name", "'bad name' is not a Zaqar queue name"),
        ("trust+heat://h", "trust+heat:// takes no host"),
        ("trust+heat:///stack", "trust+heat:// takes no host"),
        ("zaqar://?topic=a/b", "topic 'a/b' cannot make a Zaqar queue name"),
        ("zaqar://?topic=" + "t" * 28, "cannot make a Zaqar queue name"),
        (
            "zaqar://?topic=t" + "".join(f"&subscriber=http://h{i}/" for i in range(21)),
            "21 subscribers, more than 20",
        ),
        ("http://admin:s3cr/t@hook/x", "unparsable URL: invalid port"),
    ],
)
def test_invalid_actions_raise_with_the_cause(url, cause):
    with pytest.raises(actions.InvalidAction) as info:
        actions.validate(bare_conf(), url)
    assert isinstance(info.value, ValueError)
    assert cause in str(info.value)


def test_validate_in_an_api_that_defines_the_catalog_options_itself():
    """aodh's API has its own [service_credentials] region-name and interface:
    validate uses them instead of failing with DuplicateOptError."""
    conf = bare_conf()
    conf.register_opts(
        [
            cfg.StrOpt("region-name", help="the API's own"),
            cfg.StrOpt("interface", default="public", choices=("public", "internal", "admin")),
        ],
        group="service_credentials",
    )
    assert actions.validate(conf, "trust+http://h/p") is None
    with pytest.raises(actions.InvalidAction, match="unknown scheme"):
        actions.validate(conf, "foo://x")


def test_max_action_length_comes_from_the_configuration(tmp_path):
    conf = bare_conf(write_config(tmp_path / "api.conf", {"alarm": {"max_action_length": 20}}))
    actions.validate(conf, "http://h/" + "a" * 11)  # 20 characters
    with pytest.raises(actions.InvalidAction, match="21 characters long, more than 20"):
        actions.validate(conf, "http://h/" + "a" * 12)


def test_validate_on_a_conf_of_the_service_and_again(make_conf):
    """A conf with every option registered already, and repeated calls, are fine."""
    conf = make_conf()
    for _ in range(2):
        actions.validate(conf, "trust+http://h/p")
        with pytest.raises(actions.InvalidAction):
            actions.validate(conf, "foo://h")


# -- ceilo-notifier-manage check-action ------------------------------------------


def manage(*args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("ceilo-notifier-manage")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "ceilo_notifier.cmd.manage"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.fixture
def unreachable_config(tmp_path):
    """A config whose journal and broker are both unreachable: check-action needs neither."""
    return write_config(
        tmp_path / "manage.conf",
        {
            "DEFAULT": {"transport_url": "rabbit://u:p@127.0.0.1:1/"},
            "database": {"connection": "postgresql+psycopg2://u@127.0.0.1:1/x"},
        },
    )


def test_check_action_one_line_per_url_masked_and_escaped(unreachable_config):
    urls = [
        "http://user:secret@h/p",
        PRESIGNED,
        "http://h/a\nb",
        "http://h/c\x1b[31m",
        "foo://x",
        "trust+http://tid:delete@h/p",
        "http://user:secret@h:99999/",
        "zaqar://?subscriber=http://h/x",
    ]
    result = manage("--config-file", str(unreachable_config), "check-action", *urls)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        "ok  http://user:***@h/p",
        "ok  " + PRESIGNED.replace("signature=topsecret", "signature=***"),
        "invalid  http://h/a\\nb: action contains control characters",
        "invalid  http://h/c\\x1b[31m: action contains control characters",
        f"invalid  foo://x: unknown scheme 'foo' (installed: {INSTALLED})",
        "invalid  trust+http://***@h/p: a trust+ action cannot carry a trust id: "
        "register() creates the trust",
        "invalid  http://user:***@h:99999/: unparsable URL: invalid port",
        "invalid  zaqar://?subscriber=http://h/x: no topic in the query: expected "
        "zaqar://?topic=T&subscriber=URL or the pre-signed data of a queue",
    ]
    for secret in ("secret", "topsecret", "tid", "\x1b"):
        assert secret not in result.stdout


def test_check_action_exits_zero_when_all_are_valid(unreachable_config):
    urls = ["log://", "http://h/p", "trust+https://h/p", "trust+zaqar://?queue_name=q"]
    result = manage("--config-file", str(unreachable_config), "check-action", *urls)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"ok  {url}" for url in urls]


def test_check_action_wants_a_url(unreachable_config):
    result = manage("--config-file", str(unreachable_config), "check-action")
    assert result.returncode == 2 and "URL" in result.stderr


# -- register / unregister against the real Keystone -----------------------------


@pytest.fixture
def api_conf(real_keystone, tmp_path):
    """The conf of an alarm API: [service_credentials] from a file, nothing registered."""
    section = real_keystone.service_credentials()
    path = write_config(
        tmp_path / "api.conf",
        {"service_credentials": {k: v for k, v in section.items() if v is not None}},
    )
    return bare_conf(path)


@pytest.fixture
def owner_auth(real_keystone):
    """The requesting user's auth plugin: alarm-owner, scoped to its project."""
    return v3.Password(
        auth_url=real_keystone.auth_url,
        username=ks.TRUSTOR_USER,
        password=ks.TRUSTOR_PASSWORD,
        user_domain_id="default",
        project_id=real_keystone.project_id,
    )


def trust_url(keystone: ks.RealKeystone, trust_id: str) -> str:
    return f"{keystone.auth_url}/OS-TRUST/trusts/{trust_id}"


def get_trust(keystone: ks.RealKeystone, trust_id: str):
    return keystone.admin.get(trust_url(keystone, trust_id), raise_exc=False)


def trusts_of_owner(keystone: ks.RealKeystone) -> set[str]:
    response = keystone.trustor.get(
        f"{keystone.auth_url}/OS-TRUST/trusts", params={"trustor_user_id": keystone.trustor_id}
    )
    return {t["id"] for t in response.json()["trusts"]}


@pytest.mark.timeout(900)
def test_register_deliver_unregister(real_keystone, api_conf, owner_auth, keystone_runs, webhook):
    hook = webhook.url("ok")
    trust_hook = "trust+" + hook
    before = trusts_of_owner(real_keystone)

    plain, first, second = actions.register(
        api_conf, ["http://h/a", trust_hook, "trust+https://h/y"], owner_auth
    )

    # Rewritten as aodh does: one trust, owned (:delete) by the first URL only.
    assert plain == "http://h/a"
    (trust_id,) = trusts_of_owner(real_keystone) - before
    assert first == trust_hook.replace("trust+http://", f"trust+http://{trust_id}:delete@")
    assert second == f"trust+https://{trust_id}@h/y"
    assert actions.owned_trusts([plain, first, second]) == [trust_id]

    # The trust in Keystone: alarm-owner to the service user, impersonation, its roles.
    response = get_trust(real_keystone, trust_id)
    assert response.status_code == 200
    trust = response.json()["trust"]
    assert trust["trustor_user_id"] == real_keystone.trustor_id
    assert trust["trustee_user_id"] == real_keystone.trustee_id
    assert trust["project_id"] == real_keystone.project_id
    assert trust["impersonation"] is True
    owner_token = real_keystone.validate(real_keystone.trustor.get_token())
    owner_roles = {role["name"] for role in owner_token["roles"]}
    assert ks.TRUST_ROLE in owner_roles
    assert {role["name"] for role in trust["roles"]} == owner_roles

    # Delivered through the rewritten URL with a token of that trust.
    (d,) = keystone_runs(real_keystone).deliver([first])
    assert d.outcome == events.DELIVERED, d.error
    (request,) = webhook.requests_for(hook)
    token = real_keystone.validate(request.headers["x-auth-token"])
    assert token is not None and token["OS-TRUST:trust"]["id"] == trust_id
    assert token["user"]["id"] == real_keystone.trustor_id

    # Unregistered: the trust is gone, a second time is fine.
    actions.unregister(api_conf, [plain, first, second], owner_auth)
    assert get_trust(real_keystone, trust_id).status_code == 404
    actions.unregister(api_conf, [plain, first, second], owner_auth)
    assert trusts_of_owner(real_keystone) == before

    # Keystone refuses a token for the deleted trust: the delivery fails at once.
    (d,) = keystone_runs(real_keystone).deliver([first])
    assert d.outcome == events.FAILED and d.attempt == 1
    assert "Keystone refused the token request for the trust" in d.error
    assert trust_id not in d.error
    assert len(webhook.requests_for(hook)) == 1


@pytest.mark.timeout(900)
def test_register_without_trust_urls_creates_no_trust(real_keystone, api_conf, owner_auth):
    before = trusts_of_owner(real_keystone)
    urls = ["http://h/a", "log://", "zaqar://?topic=t&subscriber=http://h/x"]
    assert actions.register(api_conf, iter(urls), owner_auth) == urls
    assert actions.register(api_conf, [], owner_auth) == []
    assert trusts_of_owner(real_keystone) == before


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("bad", "cause"),
    [
        ("http://user:secret@h:99999/", "http://user:***@h:99999/: unparsable URL"),
        ("trust+http://tid:delete@h/p", "trust+http://***@h/p: a trust+ action cannot carry"),
        ("foo://h", "unknown scheme 'foo'"),
    ],
)
def test_register_with_an_invalid_url_creates_no_trust(
    real_keystone, api_conf, owner_auth, bad, cause
):
    before = trusts_of_owner(real_keystone)
    with pytest.raises(actions.InvalidAction) as info:
        actions.register(api_conf, ["trust+http://h/a", bad, "trust+https://h/b"], owner_auth)
    assert cause in str(info.value)
    assert "secret" not in str(info.value) and "tid" not in str(info.value)
    assert trusts_of_owner(real_keystone) == before


def test_owned_trusts_are_the_delete_ones():
    urls = [
        "trust+http://t1:delete@h/a",
        "trust+https://t1@h/b",
        "trust+zaqar://t2:delete@?queue_name=q",
        "trust+heat://t3@",
        "http://user:delete@h/c",
        "trust+http://t1:delete@h/d",
        "trust+http://h/e",
        "trust+http://t%2F4:delete@h/f",
        42,
    ]
    assert actions.owned_trusts(urls) == ["t1", "t2", "t/4"]
