#!/usr/bin/env bash
# DevStack plugin for octavia-dsr: the `dsr` Octavia provider (api role),
# dsr-controller (controller role) and dsr-agent (se role).  DSR_NODE and
# the other variables: devstack/settings; local.conf examples:
# devstack/README.rst.

OCTAVIA_DSR_XTRACE=$(set +o | grep xtrace)
set -o xtrace

source $(dirname "${BASH_SOURCE[0]}")/lib/octavia-dsr

if [[ "$1" == "stack" ]]; then
    case "$2" in
        install)
            echo_summary "Installing octavia-dsr"
            install_octavia_dsr
            ;;
        post-config)
            echo_summary "Configuring octavia-dsr ($DSR_NODE)"
            configure_octavia_dsr
            ;;
        extra)
            echo_summary "Starting octavia-dsr"
            start_octavia_dsr
            ;;
    esac
elif [[ "$1" == "unstack" ]]; then
    stop_octavia_dsr
elif [[ "$1" == "clean" ]]; then
    # clean.sh runs unstack.sh first: the services are stopped.
    clean_octavia_dsr
fi

$OCTAVIA_DSR_XTRACE
