# shellcheck shell=bash
# Stand-ins for devstack's lib/rpc_backend, which stack.sh sources and
# unstack.sh does not. They build the URL from RABBIT_* as devstack does.

function _stub_rabbit_configured {
    is_service_enabled rabbit || { [[ -n "$RABBIT_HOST" ]] && [[ -n "$RABBIT_PASSWORD" ]]; }
}

function get_transport_url {
    _stub_record get_transport_url "$@"
    if _stub_rabbit_configured; then
        echo "rabbit://$RABBIT_USERID:$RABBIT_PASSWORD@$RABBIT_HOST:5672/${1:-}"
    fi
}

function get_notification_url {
    _stub_record get_notification_url "$@"
    if _stub_rabbit_configured; then
        echo "rabbit://$RABBIT_USERID:$RABBIT_PASSWORD@$RABBIT_HOST:5672/${1:-}"
    fi
}

# iniset_rpc_backend package file [section] [virtual_host]
function iniset_rpc_backend {
    _stub_record iniset_rpc_backend "$@"
    if _stub_rabbit_configured; then
        iniset "$2" "${3:-DEFAULT}" transport_url "$(get_transport_url "${4:-}")"
    fi
}
