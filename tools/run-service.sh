#!/usr/bin/env bash
# Quick start: bring up RabbitMQ if needed and run ceilo-notifier in the foreground.
# A local configuration is written to data/ceilo-notifier.conf on first use.
source "$(dirname "$0")/bootstrap.sh"

CONF=${CEILO_NOTIFIER_CONF:-$TOP/data/ceilo-notifier.conf}
if [ ! -f "$CONF" ]; then
    mkdir -p "$(dirname "$CONF")"
    cat > "$CONF" <<CONF
[DEFAULT]
transport_url = rabbit://guest:guest@127.0.0.1:5672/

# Durable queues: casts published while the broker restarts are kept.
# Whoever casts (ceilo-notifier-send --config-file this file, evaluators)
# must use the same two settings.
[oslo_messaging_rabbit]
rabbit_quorum_queue = true
rabbit_transient_quorum_queue = true

[database]
connection = sqlite:///$TOP/data/ceilo-notifier.sqlite

# Local testing posts to webhooks on this machine: loopback is allowed here,
# unlike the default. Everything else of the default deny list stays denied.
[alarm]
rest_notifier_denied_networks = 0.0.0.0/8,::/128,169.254.0.0/16,fe80::/10,fd00:ec2::254/128,100.100.100.200/32
CONF
    echo "run-service: wrote $CONF" >&2
fi
exec "$VENV/bin/ceilo-notifier" --config-file "$CONF" "$@"
