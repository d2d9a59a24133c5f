#!/usr/bin/env bash
# The whole test suite: lint, then every test, against a real RabbitMQ and
# a real PostgreSQL (installed and started by bootstrap.sh when absent).
source "$(dirname "$0")/bootstrap.sh"

"$VENV/bin/ruff" check --quiet .
# pytest exits non-zero when a test fails and also when no test was collected.
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
