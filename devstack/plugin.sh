# shellcheck shell=bash
# devstack/plugin.sh - devstack plugin of ceilo-notifier
#
# To enable it, add to the [[local|localrc]] section of local.conf:
#
#   enable_plugin ceilo-notifier <git url of ceilo-notifier> [ref]
#
# devstack sources this file as "plugin.sh <mode> <phase>" into its own shell
# (stack.sh runs with errexit), after devstack/settings. Nothing here runs at
# file level except the lookup of the directory of the console scripts: all
# work happens in the phases at the bottom.

CEILO_NOTIFIER_BIN_DIR=${CEILO_NOTIFIER_BIN_DIR:-$(get_python_exec_prefix)}

# install_ceilo_notifier - install the package into devstack's environment
function install_ceilo_notifier {
    setup_develop "$CEILO_NOTIFIER_DIR"
    sudo install -d -o "$STACK_USER" -m 755 "$CEILO_NOTIFIER_CONF_DIR" "$CEILO_NOTIFIER_DATA_DIR"
}

# configure_ceilo_notifier - write the configuration file from scratch
function configure_ceilo_notifier {
    local conf=$CEILO_NOTIFIER_CONF
    local sample=$CEILO_NOTIFIER_DIR/etc/ceilo-notifier/ceilo-notifier.conf.sample
    local dispatchers=${CEILO_NOTIFIER_EVENT_DISPATCHERS//,/ }
    local notification_url

    # A new file on every stack, so that no option of an earlier run survives.
    rm -f "$conf"
    if [[ -f "$sample" ]]; then
        cp "$sample" "$conf"
    fi

    # [DEFAULT] transport_url from devstack's broker (its user and password).
    iniset_rpc_backend ceilo-notifier "$conf" DEFAULT
    iniset "$conf" DEFAULT debug "$ENABLE_DEBUG_LOG_LEVEL"
    iniset "$conf" DEFAULT workers "$CEILO_NOTIFIER_WORKERS"
    iniset "$conf" DEFAULT state_path "$CEILO_NOTIFIER_DATA_DIR"
    if [[ -n "$CEILO_NOTIFIER_HOST" ]]; then
        iniset "$conf" DEFAULT host "$CEILO_NOTIFIER_HOST"
    fi
    if [[ -n "$CEILO_NOTIFIER_CONTROL_EXCHANGE" ]]; then
        iniset "$conf" DEFAULT control_exchange "$CEILO_NOTIFIER_CONTROL_EXCHANGE"
    fi
    iniset "$conf" alarm notifier_rpc_topic "$CEILO_NOTIFIER_RPC_TOPIC"
    # A devstack cloud is one machine: its services and test webhooks answer
    # on loopback, which the default denies. The rest of the default stays.
    iniset "$conf" alarm rest_notifier_denied_networks "$CEILO_NOTIFIER_DENIED_NETWORKS"

    # Quorum queues survive a broker restart, so no cast is lost while the
    # service re-declares its queues. Evaluators must use the same settings.
    iniset "$conf" oslo_messaging_rabbit rabbit_quorum_queue "$CEILO_NOTIFIER_QUORUM_QUEUES"
    iniset "$conf" oslo_messaging_rabbit rabbit_transient_quorum_queue \
        "$CEILO_NOTIFIER_QUORUM_QUEUES"

    # The journal: devstack's database server if there is one, else SQLite.
    # shellcheck disable=SC2086  # DATABASE_BACKENDS is a list of services
    if is_service_enabled $DATABASE_BACKENDS; then
        iniset "$conf" database connection "$(database_connection_url ceilo_notifier)"
    else
        iniset "$conf" database connection \
            "sqlite:///$CEILO_NOTIFIER_DATA_DIR/ceilo-notifier.sqlite"
    fi

    # shellcheck disable=SC2086  # one value per word
    iniset_multiline "$conf" DEFAULT event_dispatchers $dispatchers
    if [[ " $dispatchers " == *" message "* ]]; then
        iniset "$conf" oslo_messaging_notifications driver messagingv2
        notification_url=$(get_notification_url)
        if [[ -n "$notification_url" ]]; then
            iniset "$conf" oslo_messaging_notifications transport_url "$notification_url"
        fi
    fi

    # bind_host takes the address without the brackets of an IPv6 SERVICE_HOST.
    iniset "$conf" metrics bind_host "${CEILO_NOTIFIER_METRICS_HOST//[][]/}"
    iniset "$conf" metrics port "$CEILO_NOTIFIER_METRICS_PORT"

    # Credentials of the trust+http(s) notifiers.
    if is_service_enabled keystone; then
        create_service_user ceilo-notifier
        configure_keystoneauth "$conf" ceilo-notifier service_credentials
        iniset "$conf" service_credentials region_name "$REGION_NAME"
        if is_service_enabled tls-proxy; then
            iniset "$conf" service_credentials cafile "$SSL_BUNDLE_FILE"
        fi
    fi

    setup_logging "$conf"
}

# init_ceilo_notifier - create an empty journal
function init_ceilo_notifier {
    # shellcheck disable=SC2086  # DATABASE_BACKENDS is a list of services
    if is_service_enabled $DATABASE_BACKENDS; then
        recreate_database ceilo_notifier
    else
        rm -f "$CEILO_NOTIFIER_DATA_DIR/ceilo-notifier.sqlite"
    fi
    "$CEILO_NOTIFIER_BIN_DIR/ceilo-notifier-manage" --config-file "$CEILO_NOTIFIER_CONF" upgrade
}

# start_ceilo_notifier - start the service as devstack@ceilo-notifier
# No LimitNOFILE in the unit: the service raises its soft open file limit to
# systemd's hard one (524288) at start, and shrinks its delivery pool (one
# WARNING) where the hard limit would not fit it.
function start_ceilo_notifier {
    run_process ceilo-notifier \
        "$CEILO_NOTIFIER_BIN_DIR/ceilo-notifier --config-file $CEILO_NOTIFIER_CONF"
    if [[ "$CEILO_NOTIFIER_METRICS_PORT" != "0" ]]; then
        echo "Waiting for ceilo-notifier to answer on /healthz..."
        if ! wait_for_service "$SERVICE_TIMEOUT" \
            "http://$CEILO_NOTIFIER_METRICS_HOST:$CEILO_NOTIFIER_METRICS_PORT/healthz"; then
            die $LINENO "ceilo-notifier did not start"
        fi
    fi
}

# stop_ceilo_notifier - stop the service; safe to call when it is not running
function stop_ceilo_notifier {
    stop_process ceilo-notifier
}

# cleanup_ceilo_notifier - remove the configuration and the service's files
function cleanup_ceilo_notifier {
    sudo rm -rf "$CEILO_NOTIFIER_CONF_DIR" "$CEILO_NOTIFIER_DATA_DIR"
}

if is_service_enabled ceilo-notifier; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing ceilo-notifier"
        install_ceilo_notifier
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring ceilo-notifier"
        configure_ceilo_notifier
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        echo_summary "Initializing and starting ceilo-notifier"
        init_ceilo_notifier
        start_ceilo_notifier
    fi

    if [[ "$1" == "unstack" ]]; then
        stop_ceilo_notifier
    fi

    if [[ "$1" == "clean" ]]; then
        cleanup_ceilo_notifier
    fi
fi
