#!/usr/bin/env bash
# Install everything octavia-dsr needs to build, test, benchmark and demo on
# a Debian 12 machine, as root.  Idempotent and fast when nothing changed:
#   * Debian packages: installed only when `dpkg -s` says they are missing;
#   * .venv: created if missing; pip runs only when requirements.txt,
#     test-requirements.txt, setup.cfg or setup.py are newer than the stamp
#     file .venv/.deps-stamp;
#   * .tempest-venv built beside .venv (tools/tempest/venv.py);
#   * bpffs mounted on /sys/fs/bpf if it is not;
#   * start_services: hook for the services later tests need (see below).
#
# Environment knobs:
#   PYTHON=python3        interpreter used to create .venv
#   DSR_SKIP_APT=1        do not touch Debian packages
#   DSR_FORCE_PIP=1       install again even when the stamp is fresh
#   DSR_INSTALLER=pip     install with pip, not uv (tools/pyinstall.py)
#   DSR_SKIP_SERVICES=1   do not check/start MariaDB, Redis, RabbitMQ
#   DSR_SKIP_TEMPEST_VENV=1  do not build .tempest-venv beside .venv
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
STAMP="$VENV/.deps-stamp"
PYTHON=${PYTHON:-python3}

APT_PACKAGES=(
    clang llvm libbpf-dev bpftool bird2 haproxy ethtool iproute2 nftables tcpdump
    apache2-utils
    iputils-ping mariadb-server redis-server rabbitmq-server
    python3-venv curl
)

log() { printf '[install-deps] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        log "need root for: $*"
        return 1
    fi
}

install_apt_packages() {
    if [ "${DSR_SKIP_APT:-0}" = 1 ]; then
        log "DSR_SKIP_APT=1: not checking Debian packages"
        return 0
    fi
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        # dpkg -s succeeds for removed-but-configured packages too; check
        # the status line says "install ok installed".
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null \
                | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}"
}

setup_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating $VENV with $PYTHON"
        "$PYTHON" -m venv "$VENV"
        rm -f "$STAMP"
    fi
    local need=0 f
    if [ "${DSR_FORCE_PIP:-0}" = 1 ] || [ ! -e "$STAMP" ]; then
        need=1
    else
        for f in requirements.txt test-requirements.txt \
                upper-constraints.txt build-constraints.txt setup.cfg \
                setup.py pyproject.toml; do
            if [ -e "$f" ] && [ "$f" -nt "$STAMP" ]; then
                need=1
            fi
        done
    fi
    # A venv whose editable install is missing or points at another work
    # tree needs pip again too (checked from / so the cwd doesn't count).
    if [ $need = 0 ] && ! (cd / && "$VENV/bin/python" -c '
import sys, amphora_agent, dsr_provider
sys.exit(0 if amphora_agent.__file__.startswith(sys.argv[1] + "/") else 1)
' "$ROOT") >/dev/null 2>&1; then
        need=1
    fi
    if [ $need = 0 ]; then
        return 0
    fi
    log "installing Python requirements into $VENV"
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    # The installer's chatter goes to a log, shown only on failure.  One
    # run: resolving the requirements again for the editable install cost a
    # second start and resolution.  tools/pyinstall.py: uv where it can be
    # had (pip's sources passed on), else pip; DSR_INSTALLER=pip for pip.
    local pip_log="$VENV/.deps-pip.log"
    # upper-constraints.txt: the versions every checkout gets (tools/
    # constraints.py), not the index's newest of the day; build-
    # constraints.txt: the same for the editable install's build system.
    if ! "$PYTHON" -m tools.pyinstall --python "$VENV/bin/python" \
            --build-constraints build-constraints.txt \
            -c upper-constraints.txt \
            -r requirements.txt -r test-requirements.txt -e . \
            >"$pip_log" 2>&1; then
        cat "$pip_log" >&2
        log "installing the requirements failed (log: $pip_log)"
        return 1
    fi
    log "installed with $(tail -n 1 "$pip_log")"
    touch "$STAMP"
}

# The project's own modules compiled to bytecode (the installers compile
# only site-packages; the editable install is this tree).  Where
# PYTHONDONTWRITEBYTECODE is set (as on this project's development
# machines) no import ever writes a .pyc, so every agent, controller and
# CLI a test starts compiled each module it imported from source (docs/
# benchmarks.md, "Session 21").
# Up-to-date files are only stat'ed.
compile_sources() {
    "$VENV/bin/python" -m compileall -q -j0 amphora_agent dsr_provider \
        dsr_wire tools bench >/dev/null
}

mount_bpffs() {
    if [ ! -d /sys/fs/bpf ]; then
        log "/sys/fs/bpf does not exist; kernel without bpffs?"
        return 0
    fi
    if ! mountpoint -q /sys/fs/bpf; then
        log "mounting bpffs on /sys/fs/bpf"
        as_root mount -t bpf bpf /sys/fs/bpf
    fi
}

# Services the test suite needs: MariaDB (the local Octavia stack's
# database), Redis and RabbitMQ.  Debian's policy-rc.d keeps apt from
# starting daemons, so start them here, each idempotently: a real protocol
# check first (MariaDB handshake, Redis PING, AMQP header), start only what
# does not answer, then poll with a deadline (RabbitMQ: 60 s).  A service that
# already answers is never touched; nothing here stops one.  The logic lives
# in tools/lab/localstack/services.py (standard library only), which the tests
# call too.  DSR_SKIP_SERVICES=1 skips this.
start_services() {
    if [ "${DSR_SKIP_SERVICES:-0}" = 1 ]; then
        log "DSR_SKIP_SERVICES=1: not checking MariaDB/Redis/RabbitMQ"
        return 0
    fi
    "$VENV/bin/python" -m tools.lab.localstack.services mariadb redis rabbitmq
}

# The tempest stage's virtualenv (.tempest-venv, tools/tempest/venv.py:
# third-party code only, content-stamped, locked against concurrent
# builders), which make test needs too (test_neutron_ports).  It builds
# beside .venv: with pip the two installs took 86 + 85 s one after the
# other on a fresh 2-core machine, the second in the middle of make test
# (uv: a few seconds each).  Needs python3-venv: after the Debian packages.
# DSR_SKIP_TEMPEST_VENV=1 leaves it to its first user.
TEMPEST_VENV_PID=
TEMPEST_VENV_LOG=
start_tempest_venv() {
    if [ "${DSR_SKIP_TEMPEST_VENV:-0}" = 1 ]; then
        return 0
    fi
    TEMPEST_VENV_LOG=$(mktemp /tmp/dsr-tempest-venv.XXXXXX)
    "$PYTHON" -m tools.tempest.venv >"$TEMPEST_VENV_LOG" 2>&1 &
    TEMPEST_VENV_PID=$!
}

wait_tempest_venv() {
    if [ -z "$TEMPEST_VENV_PID" ]; then
        return 0
    fi
    if ! wait "$TEMPEST_VENV_PID"; then
        cat "$TEMPEST_VENV_LOG" >&2
        log "the tempest virtualenv failed (log: $TEMPEST_VENV_LOG)"
        return 1
    fi
    rm -f "$TEMPEST_VENV_LOG"
}

install_apt_packages
start_tempest_venv
setup_venv
compile_sources
wait_tempest_venv
mount_bpffs
start_services
