#!/usr/bin/env bash
# The whole test suite: lint, then every test, against a real RabbitMQ
# (started if absent) and PostgreSQL when one is reachable on 127.0.0.1:5432.
source "$(dirname "$0")/bootstrap.sh"

"$VENV/bin/ruff" check --quiet .
# pytest exits non-zero when a test fails and also when no test was collected.
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
