"""Fixtures: a RabbitMQ vhost of this run, webhook servers, TLS material, notifier processes."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import threading
import uuid

import pytest
import sqlalchemy as sa

from ceilo_notifier import cmd as _cmd  # noqa: F401 - selects oslo.service's threading backend
from ceilo_notifier import engine, events, journal
from ceilo_notifier.consumers import rpc as rpc_consumer
from tests import helpers

RABBIT_HOST = os.environ.get("CEILO_TEST_RABBIT_HOST", "127.0.0.1")
RABBIT_PORT = int(os.environ.get("CEILO_TEST_RABBIT_PORT", "5672"))
RABBIT_USER = os.environ.get("CEILO_TEST_RABBIT_USER", "guest")
RABBIT_PASSWORD = os.environ.get("CEILO_TEST_RABBIT_PASSWORD", "guest")
LOOPBACK = "127.0.0.0/8,::1/128"


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


# The test modules that start the real Keystone (and the Zaqar and Heat on it).
REAL_KEYSTONE_MODULES = frozenset(
    f"tests/{name}.py" for name in ("test_actions", "test_heat", "test_trust", "test_zaqar")
)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """With pytest-xdist's ``--dist loadfile`` (tools/run-tests.sh): each module runs
    whole in one worker, so its module fixtures are made once, and the modules of
    the real Keystone all in the same worker, so that a run starts one Keystone.
    Every session fixture is made once per worker: a vhost, a schema, a webhook
    of its own each."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "real-keystone" if module in REAL_KEYSTONE_MODULES else module

    return ByModule(config, log)


@pytest.fixture(scope="session")
def rabbit_url():
    """A vhost of this test run, removed at the end; its transport URL."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl not found: the tests need a RabbitMQ server (see README)")
    vhost = f"ceilo-test-{uuid.uuid4().hex[:12]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, RABBIT_USER, ".*", ".*", ".*")
        yield f"rabbit://{RABBIT_USER}:{RABBIT_PASSWORD}@{RABBIT_HOST}:{RABBIT_PORT}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def topic():
    return f"alarm_notifier_{uuid.uuid4().hex[:10]}"


def _install_zaqar_beside(request) -> threading.Thread | None:
    """When the run has Zaqar tests, make Zaqar's virtualenv while Keystone's is made
    (each install is mostly waiting on the network). A failure is left for the
    ``zaqar`` fixture, which tries again and skips with the reason."""
    if not any("zaqar" in item.fixturenames for item in request.session.items):
        return None

    def install():
        from tests import zaqar as zq

        try:
            zq.zaqar_venv()
        except Exception:
            pass

    thread = threading.Thread(target=install, name="zaqar-install", daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="session")
def real_keystone(request, tmp_path_factory):
    """The real Keystone (installed once into a virtualenv of its own), for this run.

    Installing it the first time takes a minute or two: tests that use it
    carry a longer timeout.
    """
    from tests import keystone as ks

    if os.environ.get("CEILO_TEST_KEYSTONE", "auto") == "fake":
        pytest.skip("real Keystone not wanted (CEILO_TEST_KEYSTONE=fake)")
    zaqar_install = _install_zaqar_beside(request)
    try:
        server = ks.RealKeystone(tmp_path_factory.mktemp("keystone"))
    except ks.Unavailable as exc:
        pytest.skip(f"real Keystone cannot be installed or run here: {exc}")
    finally:
        if zaqar_install is not None:  # no test runs beside an install
            zaqar_install.join()
    yield server
    server.close()


from tests.heat import heat_fixture  # noqa: E402
from tests.zaqar.fixture import zaqar  # noqa: E402, F401 - the session fixture

heat = pytest.fixture(scope="session")(heat_fixture)


@pytest.fixture(scope="session")
def webhook():
    server = helpers.Webhook()
    yield server
    server.close()


@pytest.fixture(scope="session")
def tls(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as files."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("ceilo-notifier-client@example.org")
    d = tmp_path_factory.mktemp("tls")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    client_cert.cert_chain_pems[0].write_to_path(str(d / "client.pem"))
    client_cert.private_key_pem.write_to_path(str(d / "client.key"))
    client_cert.private_key_and_cert_chain_pem.write_to_path(str(d / "client-combined.pem"))

    class Tls:
        ca_path = d / "ca.pem"
        client_cert_path = d / "client.pem"
        client_key_path = d / "client.key"
        client_combined_path = d / "client-combined.pem"

        @staticmethod
        def server_context(require_client_cert: bool = False) -> ssl.SSLContext:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server_cert.configure_cert(ctx)
            if require_client_cert:
                ca.configure_trust(ctx)
                ctx.verify_mode = ssl.CERT_REQUIRED
            return ctx

    return Tls


@pytest.fixture(scope="session")
def https_webhook(tls):
    server = helpers.Webhook(tls.server_context())
    yield server
    server.close()


@pytest.fixture(scope="session")
def mtls_webhook(tls):
    server = helpers.Webhook(tls.server_context(require_client_cert=True))
    yield server
    server.close()


def notifier_sections(
    rabbit_url: str,
    topic: str,
    name: str = "notifier",
    alarm: dict | None = None,
    default: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """The configuration of a test's service, before its journal is chosen."""
    return {
        "DEFAULT": {
            "transport_url": rabbit_url,
            "host": f"{name}-{uuid.uuid4().hex[:6]}",
            "shutdown_grace_period": 5,
            "graceful_shutdown_timeout": 20,
            **(default or {}),
        },
        "alarm": {
            "notifier_rpc_topic": topic,
            "rest_notifier_timeout": 2,
            "rest_notifier_retry_backoff": 0.05,
            # The webhooks of the tests live on loopback, denied by default.
            "rest_notifier_allowed_networks": LOOPBACK,
            **(alarm or {}),
        },
        **(extra or {}),
    }


@pytest.fixture
def start_notifier(tmp_path, rabbit_url):
    """Start ceilo-notifier processes; every one is stopped after the test."""
    started: list[helpers.NotifierProcess] = []

    def start(
        topic: str,
        alarm: dict | None = None,
        default: dict | None = None,
        extra: dict | None = None,
        debug: bool = False,
        ready: bool = True,
        env: dict | None = None,
        name: str = "notifier",
        preexec_fn=None,
    ) -> helpers.NotifierProcess:
        sections = notifier_sections(rabbit_url, topic, name, alarm, default, extra)
        sections.setdefault("database", {}).setdefault(
            "connection", f"sqlite:///{tmp_path}/{name}-journal.sqlite"
        )
        config = helpers.write_config(tmp_path / f"{name}-{len(started)}.conf", sections)
        proc = helpers.NotifierProcess(
            config,
            tmp_path / f"{name}-{len(started)}.log",
            debug=debug,
            env=env,
            preexec_fn=preexec_fn,
        )
        started.append(proc)
        proc.config_path = config
        proc.host = sections["DEFAULT"]["host"]
        proc.journal_url = sections["database"]["connection"]
        if ready:
            proc.wait_ready(workers=int(sections["DEFAULT"].get("workers", 1)))
        return proc

    yield start
    for proc in started:  # all stop at once: each takes a second or more
        proc.terminate()
    for proc in started:
        proc.stop(timeout=20)


@pytest.fixture
def make_conf(tmp_path):
    """A private ConfigOpts with every ceilo-notifier option registered."""
    from oslo_config import cfg

    from ceilo_notifier import opts

    def make(
        topic: str | None = None, alarm: dict | None = None, health: dict | None = None, **default
    ) -> cfg.ConfigOpts:
        conf = cfg.ConfigOpts()
        opts.register_opts(conf)
        conf([], project="ceilo-notifier", default_config_files=[])
        conf.set_override("state_path", str(tmp_path))
        if topic:
            conf.set_override("notifier_rpc_topic", topic, group="alarm")
        # The webhooks of the tests live on loopback, denied by default.
        conf.set_override("rest_notifier_allowed_networks", LOOPBACK.split(","), group="alarm")
        for key, value in (alarm or {}).items():
            conf.set_override(key, value, group="alarm")
        for key, value in (health or {}).items():
            conf.set_override(key, value, group="endpoint_health")
        for key, value in default.items():
            conf.set_override(key, value)
        return conf

    return make


@pytest.fixture
def caster(make_conf, rabbit_url):
    """Cast notify_alarm exactly as an alarm evaluator does."""
    from ceilo_notifier import rpc

    made = []

    def make(topic: str, **kw) -> rpc.RPCAlarmNotifier:
        client = rpc.RPCAlarmNotifier(make_conf(topic, transport_url=rabbit_url, **kw))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


class Run:
    """One in-process engine with the installed plugins; records every event it emits."""

    def __init__(self, conf, on_event=None):
        self.events: list[events.DeliveryEvent] = []
        self.on_event = on_event
        self.engine = engine.Engine(conf, sinks=[self._event])
        self.endpoint = rpc_consumer.NotifierEndpoint(conf, self.engine)

    def _event(self, event):
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def deliver(self, actions, timeout=15.0, **fields):
        deliveries = self.endpoint.handle(
            helpers.alarm(actions, **{"reason": "r", "reason_data": {}, **fields})
        )
        for d in deliveries:
            assert d.wait(timeout), f"{d.masked_action} unfinished"
        return deliveries

    def outcomes(self, delivery):
        return [e.outcome for e in self.events if e.request_id == delivery.request_id]


@pytest.fixture
def run(make_conf):
    runs = []

    def make(health: dict | None = None, **alarm_opts):
        alarm_opts.setdefault("rest_notifier_timeout", 2)
        alarm_opts.setdefault("rest_notifier_retry_backoff", 0.01)
        r = Run(make_conf(alarm=alarm_opts, health=health))
        runs.append(r)
        return r

    yield make
    for r in runs:
        r.engine.stop()


PG_URL = os.environ.get("CEILO_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_schema_url():
    """A schema of this test run in the PostgreSQL database, dropped at the end."""
    db = sa.create_engine(PG_URL)
    try:
        with db.connect():
            pass
    except sa.exc.OperationalError as exc:
        pytest.fail(f"no PostgreSQL at {PG_URL} (tools/run-tests.sh starts one): {exc.orig}")
    schema = f"ceilo_test_{uuid.uuid4().hex[:10]}"
    with db.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with db.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/journal.sqlite"
    url = request.getfixturevalue("pg_schema_url")
    empty_journal(url)
    return url


def empty_journal(url: str) -> None:
    """Drop every table of the journal (the schema of this run is shared by its tests)."""
    tables = "delivery_events, deliveries, endpoints, instances, journal_keys, alembic_version, "
    tables += journal.VERSION_TABLE
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {tables}"))


class KeystoneRun(Run):
    """An in-process Run waiting longer: Keystone (and Zaqar or Heat) are in the loop."""

    def deliver(self, actions, timeout=30.0, **fields):
        return super().deliver(actions, timeout, **fields)


@pytest.fixture
def keystone_runs(tmp_path):
    """Make KeystoneRuns whose [service_credentials] come from a config file, as in production.

    ``make(identity, credentials=None, on_event=None, sections=None, **alarm_opts)``:
    ``credentials`` override the identity's service credentials, ``sections``
    add config sections ([service_types]...).
    """
    from oslo_config import cfg

    from ceilo_notifier import opts

    runs = []

    def make(identity, credentials=None, on_event=None, sections=None, **alarm_opts):
        alarm_opts.setdefault("rest_notifier_timeout", 5)
        alarm_opts.setdefault("rest_notifier_retry_backoff", 0.01)
        alarm_opts.setdefault("rest_notifier_max_retries", 2)
        alarm_opts.setdefault("rest_notifier_allowed_networks", LOOPBACK)
        section = identity.service_credentials(**(credentials or {}))
        config = {
            "DEFAULT": {"state_path": tmp_path},
            "alarm": alarm_opts,
            "service_credentials": {k: v for k, v in section.items() if v is not None},
            **(sections or {}),
        }
        path = helpers.write_config(tmp_path / f"keystone-run-{len(runs)}.conf", config)
        conf = cfg.ConfigOpts()
        opts.register_opts(conf)
        conf(["--config-file", str(path)], project="ceilo-notifier", default_config_files=[])
        r = KeystoneRun(conf, on_event)
        runs.append(r)
        return r

    yield make
    for r in runs:
        r.engine.stop()


@pytest.fixture
def aodh_evaluator(rabbit_url):
    """Publishes exactly as aodh's evaluator does (aodh/queue.py).

    ``aodh_evaluator(topic)(actions, alarm_id, previous, current)`` emits one
    ``alarm.update`` and returns its payload.
    """
    import oslo_messaging
    from oslo_config import cfg

    made = []

    def make(topic):
        conf = cfg.ConfigOpts()
        conf([], default_config_files=[])
        oslo_messaging.set_transport_defaults("aodh")
        transport = oslo_messaging.get_notification_transport(conf, url=rabbit_url)
        conf.set_override("control_exchange", "aodh")
        notifier = oslo_messaging.Notifier(
            transport, driver="messagingv2", publisher_id="alarming.evaluator", topics=[topic]
        )
        made.append(transport)

        def notify(actions, alarm_id, previous="ok", current="alarm"):
            payload = {
                "actions": actions,
                "alarm_id": alarm_id,
                "alarm_name": "cpu-high",
                "severity": "moderate",
                "previous": previous,
                "current": current,
                "reason": "Transition to alarm",
                "reason_data": {"type": "threshold"},
            }
            notifier.sample({}, "alarm.update", payload)
            return payload

        return notify

    yield make
    for transport in made:
        transport.cleanup()
    oslo_messaging.set_transport_defaults("openstack")
