# shellcheck shell=bash
# Stand-ins for the devstack functions that devstack/settings and
# devstack/plugin.sh use (functions, functions-common, inc/ini-config,
# inc/python, lib/database, lib/keystone). lib/rpc_backend is in
# rpc_backend.sh: unstack.sh and clean.sh's plugin phase must work without it.
#
# Every stand-in appends one line to $STUB_LOG: its name and its arguments,
# separated by the unit separator (0x1f). Inputs from the test:
#   STUB_LOG       the call log
#   STUB_DIR       this directory
#   STUB_PYTHON    the python interpreter that runs ini_edit.py
#   STUB_BIN_DIR   what get_python_exec_prefix prints
#   STUB_WAIT_RC   exit status of wait_for_service (default 0)

function _stub_record {
    local IFS=$'\x1f'
    printf '%s\n' "$*" >> "$STUB_LOG"
}

function define_plugin { _stub_record define_plugin "$@"; }
function echo_summary { _stub_record echo_summary "$@"; }
function warn { _stub_record warn "$@"; }

function die {
    _stub_record die "$@"
    echo "die: $*" >&2
    exit 1
}

# trueorfalse default varname, as devstack normalises booleans
function trueorfalse {
    local default=$1
    local value=${!2:-}
    case "$value" in
        1 | [yY]es | YES | [tT]rue | TRUE) echo True ;;
        0 | [nN]o | NO | [fF]alse | FALSE) echo False ;;
        *) echo "$default" ;;
    esac
}

function is_service_enabled {
    _stub_record is_service_enabled "$@"
    local service
    for service in "$@"; do
        if [[ ",$ENABLED_SERVICES," == *",$service,"* ]]; then
            return 0
        fi
    done
    return 1
}

function enable_service {
    _stub_record enable_service "$@"
    local service
    for service in "$@"; do
        if [[ ",$DISABLED_SERVICES," == *",$service,"* ]]; then
            continue
        fi
        if [[ ",$ENABLED_SERVICES," != *",$service,"* ]]; then
            ENABLED_SERVICES=${ENABLED_SERVICES:+$ENABLED_SERVICES,}$service
        fi
    done
}

function disable_service {
    _stub_record disable_service "$@"
    local service enabled=",$ENABLED_SERVICES,"
    for service in "$@"; do
        DISABLED_SERVICES=${DISABLED_SERVICES:+$DISABLED_SERVICES,}$service
        enabled=${enabled//,$service,/,}
    done
    enabled=${enabled#,}
    ENABLED_SERVICES=${enabled%,}
}

function get_python_exec_prefix {
    _stub_record get_python_exec_prefix "$@"
    echo "$STUB_BIN_DIR"
}

function setup_develop { _stub_record setup_develop "$@"; }
function pip_install { _stub_record pip_install "$@"; }

# sudo runs the command as the test's user: every path is in a temp dir.
function sudo {
    _stub_record sudo "$@"
    "$@"
}

function iniset {
    _stub_record iniset "$@"
    if [[ "$1" == "-sudo" ]]; then
        shift
    fi
    "$STUB_PYTHON" "$STUB_DIR/ini_edit.py" set "$1" "$2" "$3" "$4"
}

function iniset_multiline {
    _stub_record iniset_multiline "$@"
    if [[ "$1" == "-sudo" ]]; then
        shift
    fi
    "$STUB_PYTHON" "$STUB_DIR/ini_edit.py" multi "$@"
}

function setup_logging {
    _stub_record setup_logging "$@"
    iniset "$1" DEFAULT logging_context_format_string "%(levelname)s %(name)s %(message)s"
}

function database_connection_url {
    _stub_record database_connection_url "$@"
    echo "$BASE_SQL_CONN/$1?charset=utf8"
}

function recreate_database { _stub_record recreate_database "$@"; }

function run_process { _stub_record run_process "$@"; }
function stop_process { _stub_record stop_process "$@"; }

function wait_for_service {
    _stub_record wait_for_service "$@"
    return "${STUB_WAIT_RC:-0}"
}

function create_service_user { _stub_record create_service_user "$@"; }

# configure_keystoneauth conf_file admin_user section, as in lib/keystone
function configure_keystoneauth {
    _stub_record configure_keystoneauth "$@"
    iniset "$1" "$3" auth_type password
    iniset "$1" "$3" interface public
    iniset "$1" "$3" auth_url "$KEYSTONE_SERVICE_URI"
    iniset "$1" "$3" username "$2"
    iniset "$1" "$3" password "$SERVICE_PASSWORD"
    iniset "$1" "$3" user_domain_name "$SERVICE_DOMAIN_NAME"
    iniset "$1" "$3" project_name "$SERVICE_PROJECT_NAME"
    iniset "$1" "$3" project_domain_name "$SERVICE_DOMAIN_NAME"
}
