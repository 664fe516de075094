#!/bin/bash
#
# Runs one phase of a DevStack plugin the way stack.sh / unstack.sh /
# clean.sh do -- settings sourced, then plugin.sh sourced with the mode and
# phase, errexit on -- with the few DevStack functions the octavia-dsr
# plugin calls, provided here against this machine's services:
#
#   harness.sh PLUGIN_DIR MODE [PHASE]      e.g.  harness.sh ./devstack stack install
#
# The iniset family is DevStack's own (ini-config, vendored verbatim).  The
# rest stands in for DevStack + systemd (no systemd PID 1 here):
#   run_process     writes DevStack's unit file, then does what systemd
#                   would with it and its drop-ins: ExecStartPre=+ as root,
#                   the command as User=/Group= with the drop-ins'
#                   AmbientCapabilities= / CapabilityBoundingSet= /
#                   NoNewPrivileges= (setpriv), a clean environment; the
#                   PID is recorded (pids/<service>) and the output goes to
#                   logs/<service>.log.  An unknown directive fails.
#   stop_process    ExecStop= lines with the unit's credentials while a
#                   stand-in `systemctl list-jobs` answers "stop", then
#                   SIGTERM to that PID (DevStack's units: KillMode=process),
#                   SIGKILL after 90 s.
#   setup_develop   pip install -e into $DEVSTACK_VENV, nothing downloaded
#   install_package a no-op for installed packages, apt-get otherwise
#   recreate_database, database_connection_url: MariaDB on 127.0.0.1, root
#   get_transport_url: $HARNESS_TRANSPORT_URL (the test's own vhost)
#
# Every other DevStack variable the plugin reads comes from the caller's
# environment (DEST, DATA_DIR, STACK_USER, HOST_IP, SYSTEMD_DIR, ...).

set -o errexit
set -o pipefail

HARNESS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PLUGIN_DIR=$(cd "$1" && pwd)
MODE=$2
PHASE=${3:-}
: "${HARNESS_STATE:?HARNESS_STATE (pids/ and logs/) must be set}"
mkdir -p "$HARNESS_STATE/pids" "$HARNESS_STATE/logs"

source "$HARNESS_DIR/ini-config"

SYSTEMCTL=harness_systemctl

# ------------------------------------------------------------ functions-common

function die {
    local line=$1
    shift
    echo "[ERROR] line $line: $*" >&2
    exit 1
}

function warn {
    local line=$1
    shift
    echo "WARNING line $line: $*" >&2
}

function echo_summary {
    echo ">>> $*"
}

function trueorfalse {
    local default=$1
    local testval=${!2:-}
    case "$testval" in
        "1" | [yY]es | "YES" | [tT]rue | "TRUE" ) echo "True" ;;
        "0" | [nN]o | "NO" | [fF]alse | "FALSE" ) echo "False" ;;
        * )                                       echo "$default" ;;
    esac
}

function is_fedora {
    [[ -f /etc/redhat-release ]]
}

function is_ubuntu {
    [[ -f /etc/debian_version ]]
}

# The harness runs as root: sudo only switches users when asked to.
function sudo {
    local user=""
    while [[ $# -gt 0 ]]; do
        case "$1" in
            -u) user=$2; shift 2 ;;
            -E|-H) shift ;;
            --) shift; break ;;
            -*) die $LINENO "harness sudo: unsupported option $1" ;;
            *) break ;;
        esac
    done
    if [[ -n "$user" && "$user" != root ]]; then
        runuser -u "$user" -- "$@"
    elif [[ "$1" == useradd || "$1" == userdel || "$1" == groupdel ]]; then
        _harness_user_admin "$@"
    else
        "$@"
    fi
}

# Other tests on this shared machine manage users too: /etc/passwd may be
# locked for a moment ("cannot lock /etc/passwd; try again later").
function _harness_user_admin {
    local attempt rc err
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        rc=0
        err=$("$@" 2>&1) || rc=$?
        if [[ $rc -eq 0 || "$err" != *"cannot lock"* ]]; then
            [[ -z "$err" ]] || echo "$err" >&2
            return $rc
        fi
        sleep 0.5   # back-off while another process holds the lock
    done
    echo "$err" >&2
    return $rc
}

function enable_service {
    local service
    for service in "$@"; do
        if ! is_service_enabled "$service"; then
            ENABLED_SERVICES="${ENABLED_SERVICES:+$ENABLED_SERVICES,}$service"
        fi
    done
}

function disable_service {
    local service kept="" s
    for s in ${ENABLED_SERVICES//,/ }; do
        for service in "$@"; do
            [[ "$s" == "$service" ]] && continue 2
        done
        kept="${kept:+$kept,}$s"
    done
    ENABLED_SERVICES=$kept
}

function is_service_enabled {
    local service
    for service in "$@"; do
        [[ ",$ENABLED_SERVICES," == *",$service,"* ]] && return 0
    done
    return 1
}

function install_package {
    local package missing=()
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed'; then
            missing+=("$package")
        fi
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    fi
}

function uninstall_package {
    DEBIAN_FRONTEND=noninteractive apt-get remove -y "$@"
}

function start_service {
    service "$1" start
}

function stop_service {
    service "$1" stop
}

function harness_systemctl {
    [[ "$1" == daemon-reload ]] || die $LINENO "harness systemctl: only daemon-reload: $*"
}

# ------------------------------------------------------------------ inc/python

function get_python_exec_prefix {
    echo "$DEVSTACK_VENV/bin"
}

function setup_develop {
    # DevStack: pip install -e with upper-constraints.  Here nothing is
    # downloaded: every requirement must already be installed.
    "$DEVSTACK_VENV/bin/python" -m pip install --no-index \
        --no-build-isolation -e "$1"
}

# ---------------------------------------------------- lib/database, rpc_backend

function recreate_database {
    mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $1; CREATE DATABASE $1 CHARACTER SET utf8;"
}

function database_connection_url {
    echo "mysql+pymysql://root@127.0.0.1:3306/$1?charset=utf8"
}

function get_transport_url {
    echo "$HARNESS_TRANSPORT_URL"
}

# ---------------------------------------------------- run_process under "systemd"

function _harness_caps {
    # "CAP_BPF CAP_NET_ADMIN" -> "-all,+bpf,+net_admin" (setpriv's spelling)
    local caps="-all" cap
    for cap in $1; do
        cap=${cap#CAP_}
        caps="$caps,+${cap,,}"
    done
    echo "$caps"
}

# The unit DevStack wrote plus the drop-ins, into UNIT_* variables; a
# directive this emulation does not play fails the phase.
function _harness_read_unit {
    local service=$1 line key value file
    UNIT_NAME=devstack@$service.service
    UNIT_USER="" UNIT_GROUP="" UNIT_EXEC="" UNIT_AMBIENT="" UNIT_BOUNDING=""
    UNIT_NNP="" UNIT_PRE=() UNIT_STOP=()
    for file in "$SYSTEMD_DIR/$UNIT_NAME" "$SYSTEMD_DIR/$UNIT_NAME.d"/*.conf; do
        [[ -f "$file" ]] || continue
        while IFS= read -r line; do
            [[ -z "$line" || "$line" == "#"* || "$line" == "["*"]" ]] && continue
            key=${line%%=*}
            value=${line#*=}
            case "$key" in
                Description|KillMode) ;;
                User) UNIT_USER=$value ;;
                Group) UNIT_GROUP=$value ;;
                ExecStart) UNIT_EXEC=$value ;;
                AmbientCapabilities) UNIT_AMBIENT=$value ;;
                CapabilityBoundingSet) UNIT_BOUNDING=$value ;;
                NoNewPrivileges) [[ "$value" == yes ]] && UNIT_NNP=--no-new-privs ;;
                ExecStartPre)
                    [[ "$value" == +* ]] || die $LINENO "only ExecStartPre=+ is emulated: $line"
                    UNIT_PRE+=("${value#+}") ;;
                ExecStop) UNIT_STOP+=("${value//%n/$UNIT_NAME}") ;;
                *) die $LINENO "harness: unit directive not emulated: $line" ;;
            esac
        done < "$file"
    done
    UNIT_SETPRIV=(setpriv --reuid="$UNIT_USER" --regid="${UNIT_GROUP:-$UNIT_USER}")
    UNIT_SETPRIV+=(--init-groups --inh-caps="$(_harness_caps "$UNIT_AMBIENT")")
    UNIT_SETPRIV+=(--ambient-caps="$(_harness_caps "$UNIT_AMBIENT")")
    UNIT_SETPRIV+=(--bounding-set="$(_harness_caps "$UNIT_BOUNDING")")
    if [[ -n "$UNIT_NNP" ]]; then
        UNIT_SETPRIV+=("$UNIT_NNP")
    fi
}

function run_process {
    local service=$1 command=$2 group=$3 user=${4:-$STACK_USER}
    is_service_enabled "$service" || return 0
    local xtrace
    xtrace=$(set +o | grep xtrace)
    set +o xtrace
    [[ "$command" == /* ]] || die $LINENO "run_process: $command is not an absolute path"
    # DevStack's write_user_unit_file, in short.
    mkdir -p "$SYSTEMD_DIR"
    printf '%s\n' "[Unit]" "Description=Devstack devstack@$service.service" \
        "[Service]" "User=$user" ${group:+"Group=$group"} "ExecStart=$command" \
        "KillMode=process" > "$SYSTEMD_DIR/devstack@$service.service"
    _harness_read_unit "$service"
    local cmd
    for cmd in "${UNIT_PRE[@]}"; do
        bash -c "$cmd"
    done
    # A clean environment, as systemd gives (DevStack adds PATH).  setsid:
    # its own session, like a unit; no fd of this shell is kept open.
    # shellcheck disable=SC2086
    setsid "${UNIT_SETPRIV[@]}" -- env -i PATH="$PATH" LANG=C.UTF-8 $UNIT_EXEC \
        < /dev/null >> "$HARNESS_STATE/logs/$service.log" 2>&1 &
    echo $! > "$HARNESS_STATE/pids/$service"
    echo "run_process $service: pid $!, user $user, capabilities '$UNIT_AMBIENT'"
    $xtrace
}

function _harness_alive {
    # Running and not a zombie (PID 1 here does not reap orphans).
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n "$state" && "$state" != Z ]]
}

function stop_process {
    # DevStack: systemctl stop + disable.  systemd: ExecStop= (the unit's
    # credentials, $MAINPID) while the unit's job is "stop", then SIGTERM
    # to the main process only (KillMode=process), SIGKILL at the timeout.
    local service=$1 pid
    is_service_enabled "$service" || return 0
    [[ -f "$HARNESS_STATE/pids/$service" ]] || return 0
    pid=$(cat "$HARNESS_STATE/pids/$service")
    local xtrace
    xtrace=$(set +o | grep xtrace)
    set +o xtrace
    _harness_read_unit "$service"
    # systemctl list-jobs, as systemd answers it during this stop.
    local bin=$HARNESS_STATE/bin
    mkdir -p "$bin"
    printf '%s\n' '#!/bin/sh' \
        "[ \"\$1\" = list-jobs ] && echo '1 $UNIT_NAME stop running'" > "$bin/systemctl"
    chmod 0755 "$bin" "$bin/systemctl"
    local cmd
    for cmd in "${UNIT_STOP[@]}"; do
        echo "stop_process $service: ExecStop=$cmd"
        # shellcheck disable=SC2086
        "${UNIT_SETPRIV[@]}" -- env -i PATH="$bin:$PATH" LANG=C.UTF-8 MAINPID=$pid $cmd \
            < /dev/null >> "$HARNESS_STATE/logs/$service.log" 2>&1
    done
    echo "stop_process $service: SIGTERM to $pid"
    if kill -TERM "$pid" 2>/dev/null; then
        local deadline
        deadline=$((SECONDS + 90))
        while _harness_alive "$pid"; do
            if ((SECONDS > deadline)); then
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1   # polling for the exit, bounded by the deadline
        done
    fi
    rm -f "$HARNESS_STATE/pids/$service"
    $xtrace
}

# ------------------------------------------------------------------- the phase

set -o xtrace
source "$PLUGIN_DIR/settings"
source "$PLUGIN_DIR/plugin.sh" "$MODE" "$PHASE"
