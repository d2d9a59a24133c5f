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
if [ ${#_missing_debs[@]} -gt 0 ]; then
    echo "bootstrap: installing ${_missing_debs[*]}" >&2
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${_missing_debs[@]}"
fi

_broker_up() {
    python3 - <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
except OSError:
    sys.exit(1)
PY
}

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
_want=$(cat setup.cfg requirements.txt test-requirements.txt tools/constraints.txt | sha256sum)
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if [ "$(cat "$_stamp" 2>/dev/null)" != "$_want" ]; then
    echo "bootstrap: installing ceilo-notifier and its test tools into $VENV" >&2
    _log=$(mktemp)
    if ! { "$VENV/bin/python" -m pip install -q --upgrade pip &&
           "$VENV/bin/python" -m pip install -q -c tools/constraints.txt -e ".[test]"; } \
           >"$_log" 2>&1; then
        cat "$_log" >&2
        rm -f "$_log"
        echo "bootstrap: installing into $VENV failed" >&2
        exit 1
    fi
    rm -f "$_log"
    echo "$_want" > "$_stamp"
fi
