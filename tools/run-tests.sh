#!/usr/bin/env bash
# The whole test suite: lint, then every test, against a real RabbitMQ and
# a real PostgreSQL (installed and started by bootstrap.sh when absent).
source "$(dirname "$0")/bootstrap.sh"

"$VENV/bin/ruff" check --quiet .
# pytest exits non-zero when a test fails and also when no test was collected
# (with its workers too). Two workers (pytest-xdist): most of the suite waits on
# services and timers, not on a CPU. A module runs whole in one of them (see
# pytest_xdist_make_scheduler in tests/conftest.py), in the order of collection;
# "-n 0" after these runs the tests in this process instead.
exec "$VENV/bin/python" -m pytest -p no:cacheprovider -n 2 --dist loadfile \
    --no-loadscope-reorder "$@"
