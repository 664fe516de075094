#!/usr/bin/env bash
# DevStack plugin for octavia-dsr: the `dsr` Octavia provider, dsr-controller
# and (on an SE host) dsr-agent.

function install_octavia_dsr {
    install_package clang llvm libbpf-dev bpftool bird2 ethtool
    setup_develop $OCTAVIA_DSR_DIR
    (cd $OCTAVIA_DSR_DIR && make build)
}

function configure_octavia_dsr {
    sudo install -d -o $STACK_USER $OCTAVIA_DSR_CONF_DIR
    # The provider runs inside octavia-api: enable it there.
    local providers
    providers=$(iniget $OCTAVIA_CONF api_settings enabled_provider_drivers)
    iniset $OCTAVIA_CONF api_settings enabled_provider_drivers \
        "${providers:+$providers,}dsr:L3 Direct Server Return"
    iniset $OCTAVIA_CONF dsr_provider default_se_group $OCTAVIA_DSR_SE_GROUP
    iniset $OCTAVIA_CONF dsr_provider transport_url \
        "$(get_transport_url)"

    recreate_database octavia_dsr
    local conf=$OCTAVIA_DSR_CONF_DIR/dsr-controller.conf
    iniset $conf DEFAULT transport_url "$(get_transport_url)"
    iniset $conf dsr_controller database_connection \
        "$(database_connection_url octavia_dsr)"
    iniset $conf dsr_controller default_se_group $OCTAVIA_DSR_SE_GROUP
    iniset $conf dsr_controller octavia_status_socket \
        "$(iniget $OCTAVIA_CONF driver_agent status_socket_path)"
    iniset $conf dsr_controller octavia_stats_socket \
        "$(iniget $OCTAVIA_CONF driver_agent stats_socket_path)"
    iniset $conf dsr_controller octavia_get_socket \
        "$(iniget $OCTAVIA_CONF driver_agent get_socket_path)"
    # Message authentication (docs/security.md): the controller's key, its
    # public key trusted by the agents; private keys 0600, configs 0640.
    local keys=$OCTAVIA_DSR_CONF_DIR/keys
    install -d -m 0750 $keys $keys/controller
    if [[ ! -f $keys/controller.key ]]; then
        dsr-manage gen-key --private-key $keys/controller.key \
            --public-key $keys/controller/controller.pub
    fi
    iniset $conf dsr_controller signing_key $keys/controller.key
    chmod 0640 $conf

    if is_service_enabled dsr-agent; then
        conf=$OCTAVIA_DSR_CONF_DIR/dsr-agent.conf
        iniset $conf DEFAULT transport_url "$(get_transport_url)"
        iniset $conf agent se_id "$(hostname)"
        iniset $conf agent se_group $OCTAVIA_DSR_SE_GROUP
        iniset $conf agent tunnel_source4 $OCTAVIA_DSR_TUNNEL_SOURCE4
        iniset $conf dataplane interface $OCTAVIA_DSR_SE_INTERFACE
        if [[ ! -f $keys/se.key ]]; then
            dsr-manage gen-key --private-key $keys/se.key \
                --public-key $keys/se.pub
        fi
        iniset $conf auth private_key $keys/se.key
        iniset $conf auth controller_keys_dir $keys/controller
        dsr-manage --config-file $OCTAVIA_DSR_CONF_DIR/dsr-controller.conf \
            enrol-se --se-group $OCTAVIA_DSR_SE_GROUP --se-id "$(hostname)" \
            --public-key $keys/se.pub
        chmod 0640 $conf
        if [[ -n "$OCTAVIA_DSR_BGP_PEER" ]]; then
            iniset $conf bgp local_asn $OCTAVIA_DSR_BGP_LOCAL_ASN
            iniset $conf bgp peers "$OCTAVIA_DSR_BGP_PEER"
            # TCP-MD5 on by default (OCTAVIA_DSR_BGP_MD5=False: off): the
            # router needs the same key, kept 0600 in $keys/bgp-md5.key.
            if [[ "${OCTAVIA_DSR_BGP_MD5:-True}" == "True" ]]; then
                if [[ ! -f $keys/bgp-md5.key ]]; then
                    (umask 077; python3 -c 'import secrets; print(secrets.token_hex(20))' \
                        > $keys/bgp-md5.key)
                fi
                iniset $conf bgp md5_password "$(cat $keys/bgp-md5.key)"
            fi
        else
            iniset $conf bgp enabled False
        fi
    fi
}

function start_octavia_dsr {
    run_process dsr-controller \
        "$(which dsr-controller) --config-file $OCTAVIA_DSR_CONF_DIR/dsr-controller.conf"
    if is_service_enabled dsr-agent; then
        # Root: BPF, netlink, BGP port 179.  Not in the agent's cgroup
        # teardown: ExaBGP is detached on purpose (hitless restarts).
        run_process dsr-agent \
            "$(which dsr-agent) --config-file $OCTAVIA_DSR_CONF_DIR/dsr-agent.conf" \
            root root
    fi
}

function stop_octavia_dsr {
    stop_process dsr-controller
    stop_process dsr-agent
}

if [[ "$1" == "stack" ]]; then
    case "$2" in
        install) install_octavia_dsr ;;
        post-config) configure_octavia_dsr ;;
        extra) start_octavia_dsr ;;
    esac
elif [[ "$1" == "unstack" ]]; then
    stop_octavia_dsr
elif [[ "$1" == "clean" ]]; then
    sudo rm -rf $OCTAVIA_DSR_CONF_DIR
fi
