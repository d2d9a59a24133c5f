# Sourced by run-service.sh and run-tests.sh: install and start what
# ceilo-notifier needs on a Debian machine, then the virtualenv in .venv.
# Safe to run again: it does only what is missing.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TOP=$PWD
VENV=${CEILO_NOTIFIER_VENV:-$TOP/.venv}

_as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

_missing_debs=()
command -v python3 >/dev/null || _missing_debs+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || _missing_debs+=(python3-venv)
command -v git >/dev/null || _missing_debs+=(git)
if ! command -v rabbitmq-server >/dev/null && ! command -v rabbitmqctl >/dev/null; then
    _missing_debs+=(rabbitmq-server)
fi
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    _missing_debs+=(postgresql)
fi
command -v shellcheck >/dev/null || _missing_debs+=(shellcheck)
# The systemd unit is checked with systemd-analyze (verify, security) and its
# user with systemd-sysusers; neither needs systemd running.
if ! command -v systemd-analyze >/dev/null || ! command -v systemd-sysusers >/dev/null; then
    _missing_debs+=(systemd)
fi
# Zaqar, which the zaqar:// tests run for real, keeps its queues in Redis.
command -v redis-server >/dev/null || _missing_debs+=(redis-server)
if [ ${#_missing_debs[@]} -gt 0 ]; then
    echo "bootstrap: installing ${_missing_debs[*]}" >&2
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${_missing_debs[@]}"
fi

_listening() {
    python3 - "$1" <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
except OSError:
    sys.exit(1)
PY
}

_broker_up() { _listening 5672; }

if ! _broker_up; then
    echo "bootstrap: starting RabbitMQ" >&2
    _as_root rabbitmq-server -detached
    for _ in $(seq 1 60); do
        _broker_up && break
        sleep 1
    done
    _broker_up || { echo "bootstrap: RabbitMQ did not start on 127.0.0.1:5672" >&2; exit 1; }
    _as_root rabbitmqctl -q await_startup >/dev/null 2>&1 || true
fi

_stamp="$VENV/.ceilo-notifier-installed"
_want=$(cat setup.cfg requirements.txt test-requirements.txt doc/requirements.txt \
    tools/constraints.txt | sha256sum)
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if [ "$(cat "$_stamp" 2>/dev/null)" != "$_want" ]; then
    echo "bootstrap: installing ceilo-notifier, its test tools and its docs' tools into $VENV" >&2
    _log=$(mktemp)
    if ! { "$VENV/bin/python" -m pip install -q --upgrade pip &&
           "$VENV/bin/python" -m pip install -q -c tools/constraints.txt -e ".[test]" \
               -r doc/requirements.txt; } \
           >"$_log" 2>&1; then
        cat "$_log" >&2
        rm -f "$_log"
        echo "bootstrap: installing into $VENV failed" >&2
        exit 1
    fi
    rm -f "$_log"
    echo "$_want" > "$_stamp"
fi

# promtool, which tests/test_monitoring.py runs on etc/prometheus's alerting
# rules: taken out of Debian's prometheus package into the virtualenv, not
# installed from it, since installing it would also install and start a
# Prometheus server. promtool is a static Go program needing only libc.
if [ ! -x "$VENV/bin/promtool" ]; then
    echo "bootstrap: installing promtool into $VENV/bin" >&2
    _debs=$(mktemp -d)
    if ! (cd "$_debs" && apt-get download -q prometheus) >/dev/null 2>&1; then
        _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
        (cd "$_debs" && apt-get download -q prometheus) >/dev/null
    fi
    dpkg-deb -x "$_debs"/prometheus_*.deb "$_debs/root"
    install -m 755 "$_debs/root/usr/bin/promtool" "$VENV/bin/promtool"
    rm -rf "$_debs"
fi

# The journal's production database. A machine with a PostgreSQL server on
# 127.0.0.1:5432 (trust for postgres, database "test") is used as it is;
# elsewhere a cluster of the project's own is made (in /var/tmp, which the
# postgres user can reach whoever owns this checkout) and started on that
# port, so that no journal test is skipped.
PGDATA_DIR=${CEILO_NOTIFIER_PGDATA:-/var/tmp/ceilo-notifier-test-pg}
if ! _listening 5432; then
    _pgbin=$(compgen -G "/usr/lib/postgresql/*/bin" | sort -V | tail -n 1)
    _pg() {
        if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
    }
    if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
        echo "bootstrap: creating a PostgreSQL cluster in $PGDATA_DIR" >&2
        mkdir -p "$PGDATA_DIR"
        [ "$(id -u)" -eq 0 ] && chown postgres: "$PGDATA_DIR"
        chmod 700 "$PGDATA_DIR"
        _pg "$_pgbin/initdb" -D "$PGDATA_DIR" -A trust -U postgres >/dev/null
    fi
    echo "bootstrap: starting PostgreSQL on 127.0.0.1:5432" >&2
    _pg "$_pgbin/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w -s \
        -o "-p 5432 -k $PGDATA_DIR -c listen_addresses=127.0.0.1" start
    _pg "$_pgbin/psql" -h 127.0.0.1 -U postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 ||
        _pg "$_pgbin/createdb" -h 127.0.0.1 -U postgres test
fi
