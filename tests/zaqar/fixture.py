"""The ``zaqar`` fixture: the real Zaqar of this test run, in Keystone's catalog.

Import it into a conftest (``from tests.zaqar.fixture import zaqar``). Its
first use in a run starts Zaqar against the run's real Keystone
(``real_keystone``); the very first on a machine also installs Zaqar into its
own virtualenv (kept under the tests' cache directory for later runs), which
can take a few minutes: tests that use it need a longer timeout, as the
Keystone ones do. Later runs start it in a few seconds.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def zaqar(real_keystone, tmp_path_factory):
    """Zaqar (API v2, Redis storage, Keystone auth), its URL in the catalog as
    service type ``messaging``; skips with the reason when it cannot run here."""
    from tests import zaqar as zq

    try:
        server = zq.start_zaqar(real_keystone, tmp_path_factory.mktemp("zaqar"))
    except zq.Unavailable as exc:
        pytest.skip(f"Zaqar cannot be installed or run here: {exc}")
    try:
        real_keystone.add_endpoint("messaging", server.url)
        yield server
    finally:
        server.close()
