"""oslo.config options of the SE agent package, declared in one place.

Options with mutable=True take a new value on SIGHUP (``systemctl reload
dsr-agent``; the agent applies it, docs/operations.md "Reload"); the others
need a restart, which is hitless.
"""

from oslo_config import cfg

from amphora_agent.dataplane import maglev

dataplane_opts = [
    cfg.StrOpt('pin_dir', default='/sys/fs/bpf/octavia-dsr',
               help='bpffs directory holding the pinned SE program and maps; '
                    'an agent restart reuses them, so traffic is not '
                    'disturbed.'),
    cfg.StrOpt('interface',
               help='Interface the SE program is attached to (XDP).'),
    cfg.StrOpt('xdp_mode', default='auto',
               choices=['auto', 'native', 'generic'],
               help='XDP attach mode: native (driver) where supported, '
                    'generic (skb) otherwise; auto tries native first.'),
    cfg.IntOpt('max_listeners', default=256, min=1,
               help='Dataplane listener capacity: one per VIP address and '
                    'Octavia listener. Kernel memory for the rings is '
                    'ring_slots x 4 bytes, by default max_listeners x '
                    'ring_size x 4 (500 KiB per listener at the default '
                    'ring_size; all maps of the default SE: 164 MiB, see '
                    'docs/agent-protocol.md). '
                    'Listeners beyond it are rejected one by one and '
                    'reported. A pinned dataplane keeps the limits it was '
                    'created with: changing them needs "dsrctl reset".'),
    cfg.IntOpt('ring_size', default=maglev.DEFAULT_RING_SIZE, min=3,
               help='Largest Maglev ring (slots) of a listener; must be '
                    'prime. Each ring is sized by its pool: the smallest '
                    'prime >= 1000 x 2^k for pools of up to 2^k members '
                    '(4001 up to 4 members, 16001 up to 16; the default '
                    'is the ring of pools of up to 128), at most this. '
                    'A member holds at most its share plus 1% or 6.5 '
                    'slots, whichever is more: 655 slots per member keep '
                    'members within 1% of each other, 1000 keep the '
                    'removal of one member under 1.15 x its share. Every '
                    'SE of a group must use the same value.'),
    cfg.IntOpt('ring_slots', default=0, min=0,
               help='Slots of the rings map shared by all listeners\' '
                    'rings (4 bytes each); 0 = max_listeners x ring_size, '
                    'room for the largest ring on every listener. Set it '
                    'to the sum of the rings the SE is to hold (10,000 '
                    'pools of 16 members: 10,000 x 16001), plus room for '
                    'the rings being resized in one change; a listener '
                    'whose ring does not fit is rejected and reported. '
                    'Rings of listeners a change leaves alone are moved '
                    '(hitlessly) when the free slots would hold a ring '
                    'but no free run does.'),
    cfg.IntOpt('max_members', default=65535, min=1,
               help='Member capacity over all dataplane listeners (a member '
                    'of a load balancer with two VIP addresses counts '
                    'twice); members beyond it are rejected one by one and '
                    'reported.'),
    cfg.IntOpt('conn_table_size', default=262144, min=1024,
               help='Entries of each LRU connection table (one for IPv4 '
                    'flows, 104 bytes of kernel memory an entry, one for '
                    'IPv6 flows, 128) that keeps established flows on '
                    'their member; size it for the concurrent flows of the '
                    'SE. '
                    'Each table keeps one LRU list per CPU '
                    '(BPF_F_NO_COMMON_LRU): a CPU holds at most this '
                    'size / possible CPUs flows, so a NIC with fewer '
                    'queues than CPUs (or a VM with many hot-pluggable '
                    'CPUs) gets a smaller table (docs/dataplane.md).'),
    cfg.IntOpt('flood_guard_rate', mutable=True, default=125000, min=0,
               max=2 ** 32 - 1,
               help='New-flow flood guard: connection-table inserts per '
                    'second per CPU beyond which a new flow is steered by '
                    'its listener\'s ring without being remembered, so a '
                    'SYN (or any new-flow) flood neither evicts '
                    'established flows nor pays the insert (most of a new '
                    'flow\'s cost). Such a flow goes to the same member '
                    'while the ring is unchanged and is remembered by a '
                    'later packet once the rate drops; flows of listeners '
                    'with a connection_limit are always remembered. The '
                    'default is Katran\'s (125,000/s per CPU): far above '
                    'the new flows a CPU of an SE sees in normal service, '
                    'and it bounds inserts to under a tenth of a CPU. '
                    '0 = no limit. Counted per listener as flood_guarded '
                    '(docs/dataplane.md).'),
    cfg.StrOpt('decap_pin_dir', default='/sys/fs/bpf/octavia-dsr/decap',
               help='bpffs directory of the member-side decap program.'),
]


agent_opts = [
    cfg.StrOpt('se_id', required=True,
               help='Unique id of this service engine.'),
    cfg.StrOpt('se_group', default='default',
               help='SE group this engine serves; every SE of a group gets '
                    'the same configuration and builds the same rings.'),
    cfg.IPOpt('tunnel_source4', version=4,
              help='IPv4 source of tunnels to IPv4 members (this SE\'s '
                   'address on the member-facing network); also the BGP '
                   'IPv4 next hop.'),
    cfg.IPOpt('tunnel_source6', version=6,
              help='IPv6 source of tunnels to IPv6 members; also the BGP '
                   'IPv6 next hop.'),
    cfg.StrOpt('netns',
               help='Network namespace of the SE\'s data interfaces, if not '
                    'the one the agent starts in. The dataplane, health '
                    'probes and BGP speaker (an L7 SE: its HAProxies, UDP '
                    'tables, VIPs on lo and decap) run there; RPC and '
                    'coordination connections stay in the starting '
                    'namespace.'),
    cfg.StrOpt('role', default='tier1', choices=['tier1', 'tier2'],
               help='tier1: members are application servers; tier2: '
                    'members are L7 proxy SEs sharing the VIP.'),
    cfg.FloatOpt('stats_interval', mutable=True, default=10.0, min=0.5,
                 help='Seconds between statistics reports.'),
    cfg.FloatOpt('busy_heartbeat_max', mutable=True, default=60.0,
                 min=0.0,
                 help='While the worker is inside one step (applying a '
                      'large change) it cannot report; another thread '
                      'sends its last state again every stats_interval, '
                      'with busy_for, so that the controller does not take '
                      'a working SE for a silent one. That state is the '
                      'one from before the step: what changes meanwhile '
                      '(a member\'s health, a BGP session, the uplink) is '
                      'reported when the step ends, so this bounds how '
                      'long it may lag. Past this many seconds in one step '
                      'the worker is taken for stuck and the heartbeat '
                      'stops (the controller then sees the SE silent after '
                      'its agent_ttl). 0: no heartbeat while busy.'),
    cfg.FloatOpt('resync_interval', mutable=True, default=60.0, min=1.0,
                 help='Seconds between unsolicited get_config calls, in '
                      'case a config_changed cast was lost.'),
    cfg.IntOpt('rpc_retry', default=2, min=0,
               help='Times oslo.messaging tries again to reach the broker '
                    'for one message to the controller (get_config or a '
                    'report) before giving up on it. The worker never '
                    'waits for a report: each is sent from a separate '
                    'thread, only the newest of each kind is kept, and '
                    'one the broker did not take is sent again, with '
                    'back-off, until a newer one replaces it. get_config '
                    'is answered on that thread too, the worker taking the '
                    'answer when it comes; a failed one is asked again a '
                    'second later.'),
    cfg.FloatOpt('nexthop_refresh_interval', mutable=True, default=30.0,
                 min=1.0,
                 help='Seconds between re-resolutions of member next hops '
                      '(neighbour MACs change).'),
    cfg.FloatOpt('dataplane_check_interval', mutable=True, default=120.0,
                 min=1.0,
                 help='Seconds between full checks of the SE\'s BPF maps. '
                      'A change is applied from what the agent last wrote '
                      'to the maps, without reading them; this check reads '
                      'every map, logs a warning naming what another '
                      'writer (dsrctl, a second agent) changed, and repairs '
                      'it. The maps are also read in full after a failed '
                      'apply and at start.'),
    cfg.FloatOpt('drain_wait', mutable=True, default=2.0, min=0.0,
                 help='Seconds to keep forwarding after withdrawing the '
                      'VIPs on a drain, so routers converge first.'),
    cfg.StrOpt('state_dir', default='/run/octavia-dsr',
               help='Directory for runtime state (BGP speaker, pid files).'),
    cfg.FloatOpt('helper_restart_max_delay', default=30.0, min=0.0,
                 help='Longest wait between restarts of a helper that keeps '
                      'dying (ExaBGP, the health checker). The first restart '
                      'after a healthy period is immediate, the next ones '
                      'wait 1, 2, 4... seconds up to this.'),
    cfg.FloatOpt('helper_healthy_after', default=60.0, min=0.0,
                 help='Seconds a restarted helper must run before its '
                      'back-off starts again from an immediate restart.'),
    cfg.BoolOpt('check_serviceability', default=True,
                help='Announce a VIP only while this SE can forward to its '
                     'members: uplink ([dataplane] interface) up, tunnel '
                     'sources configured and usable (IPv6: not tentative or '
                     'dadfailed), routes to the members; watched with '
                     'netlink events.'),
]

coordination_opts = [
    # membership_timeout=1 as the controller's default: tooz's own is 30 s,
    # and a dead L7 SE must leave the L4 rings within 2 s (docs/tier2.md).
    cfg.StrOpt('backend_url', secret=True,
               default='redis://127.0.0.1:6379?membership_timeout=1&'
                       'lock_timeout=1',
               help='tooz backend URL for SE group membership (the '
                    'controller\'s [dsr_provider] coordination_url), e.g. '
                    'redis://HOST:6379?membership_timeout=1&lock_timeout=1 '
                    'or file:///var/lib/octavia-dsr/coordination for a '
                    'single host. membership_timeout is how long a dead '
                    'agent stays listed (tooz: 30 s when not given). With '
                    '[auth] enabled, an L7 SE renews the seal of its '
                    'capabilities every second in place, which file:// '
                    'cannot do: tier 2 then needs redis:// '
                    '(docs/security.md).'),
]


auth_opts = [
    cfg.BoolOpt('enabled', default=True,
                help='Sign every message to the controller with this SE\'s '
                     'key and apply only snapshots signed by a trusted '
                     'controller key (docs/security.md). Off only for '
                     'tests of older controllers.'),
    cfg.StrOpt('private_key', default='/etc/octavia-dsr/keys/se.key',
               help='This SE\'s Ed25519 private key (PEM, "dsr-manage '
                    'gen-key"); the agent refuses to start when group or '
                    'others can read it. Its public key is enrolled on the '
                    'controller ("dsr-manage enrol-se").'),
    cfg.StrOpt('controller_keys_dir',
               default='/etc/octavia-dsr/keys/controller',
               help='Directory of trusted controller public keys (*.pub). '
                    'During a key rotation it holds the old and the new '
                    'key; re-read when a message names an unknown key.'),
    cfg.StrOpt('state_dir', default='/var/lib/octavia-dsr',
               help='Persistent directory where the agent keeps the newest '
                    'generation it applied, so that an older snapshot is '
                    'refused after a restart or reboot too.'),
    cfg.FloatOpt('window', default=60.0, min=1.0,
                 help='Seconds a signed notification is valid either side '
                      'of its timestamp (replay window; clocks must agree '
                      'within it).'),
]


bgp_opts = [
    cfg.BoolOpt('enabled', default=True,
                help='Advertise VIPs by BGP (next hop = this SE).'),
    cfg.IntOpt('local_asn', mutable=True, min=1, max=4294967295,
               help='AS number of the SE; the SEs of a group may share it.'),
    cfg.StrOpt('router_id', mutable=True,
               help='BGP router id; default: the SE\'s IPv4 next hop.'),
    cfg.MultiStrOpt('peers', mutable=True, default=[],
                    help='One per router: "ADDRESS ASN [hold_time=N] '
                         '[password=P] [local_address=A]". IPv4 peers carry '
                         'IPv4 VIPs, IPv6 peers (native IPv6 sessions) IPv6 '
                         'VIPs.'),
    cfg.StrOpt('md5_password', mutable=True, secret=True,
               help='TCP MD5 key for peers without their own password=.'),
    cfg.IntOpt('hold_time', mutable=True, default=9, min=0, max=65535,
               help='BGP hold time (0, or 3 and up) for peers without '
                    'hold_time=.'),
    cfg.StrOpt('nexthop_ipv4', mutable=True,
               help='Next hop of IPv4 VIPs; default: [agent] '
                    'tunnel_source4.'),
    cfg.StrOpt('nexthop_ipv6', mutable=True,
               help='Next hop of IPv6 VIPs; default: [agent] '
                    'tunnel_source6.'),
    cfg.StrOpt('state_dir', default='/run/octavia-dsr/bgp',
               help='ExaBGP config, pid, announced set and API socket (one '
                    'directory per SE; the socket path must stay <= 107 '
                    'bytes).'),
    cfg.StrOpt('exabgp_command', mutable=True,
               help='Command running ExaBGP 5 (split like a shell command); '
                    'default: the exabgp next to the agent\'s Python.'),
    cfg.StrOpt('exabgp_log_level', mutable=True, default='INFO',
               choices=['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'],
               help='ExaBGP log level (<state_dir>/exabgp.log).'),
    cfg.FloatOpt('restart_drain_time', mutable=True, default=1.0, min=0,
                 help='Pause between withdrawing everything and stopping '
                      'ExaBGP when a peer change forces a restart.'),
    cfg.FloatOpt('start_timeout', mutable=True, default=15.0, min=1,
                 help='Seconds for the ExaBGP API to come up.'),
    cfg.FloatOpt('command_timeout', mutable=True, default=10.0, min=0.1,
                 help='Seconds per ExaBGP API command.'),
]


metrics_opts = [
    cfg.BoolOpt('enabled', default=False,
                help='Serve Prometheus metrics over HTTP (traffic per '
                     'listener and member, drops, connection table, '
                     'generations, BGP, health checks, errors; '
                     'docs/observability.md).'),
    cfg.HostAddressOpt('bind_host', default='127.0.0.1',
                       help='Address of the metrics endpoint, in the '
                            'network namespace the agent starts in (not '
                            '[agent] netns). Anything but localhost '
                            'exposes the SE\'s load balancer and member '
                            'ids: firewall it or use TLS.'),
    cfg.PortOpt('port', default=9479,
                help='TCP port of the metrics endpoint.'),
    cfg.StrOpt('tls_cert_file',
               help='Serve HTTPS with this certificate (PEM); with '
                    'tls_key_file.'),
    cfg.StrOpt('tls_key_file',
               help='Private key (PEM) of tls_cert_file.'),
    cfg.BoolOpt('member_series', default=True,
                help='Expose the per-member series: traffic per member '
                     '(4 per member and VIP) and health state and probe '
                     'results (3 per member). false leaves only the '
                     'per-listener and per-pool series, for SEs with very '
                     'large pools (docs/observability.md, "Series per '
                     'member").'),
]

# The L7 (tier-2) service engine (amphora_agent/l7/, docs/tier2.md).
l7_opts = [
    cfg.StrOpt('state_dir', default='/var/lib/octavia-dsr/l7',
               help='Directory of the L7 engine\'s files: per load balancer '
                    'the HAProxy configuration, its stats and master '
                    'sockets, server state and TLS certificates.'),
    cfg.StrOpt('haproxy', default='haproxy',
               help='HAProxy executable (2.6 or later) the L7 engine runs '
                    'in master-worker mode, one process per load '
                    'balancer.'),
    cfg.FloatOpt('drain_timeout', mutable=True, default=50.0, min=0.0,
                 help='Seconds a draining L7 SE (stopped with SIGTERM) '
                      'waits, after [agent] drain_wait, for its HAProxy '
                      'connections to finish before it leaves its group '
                      '-- leaving takes it out of the L4 rings, and a '
                      'connection still open then would be steered to '
                      'another L7 SE and reset. Cut to [DEFAULT] '
                      'graceful_shutdown_timeout minus drain_wait minus '
                      '5 s (the time to leave), which ends the worker.'),
    cfg.StrOpt('cert_manager', default='local_cert_manager',
               help='Octavia certificate manager driver (stevedore '
                    'namespace octavia.cert_manager: local_cert_manager, '
                    'barbican_cert_manager, castellan_cert_manager) the '
                    'L7 SE fetches TERMINATED_HTTPS certificates with, by '
                    'the container references of the L7 document (no key '
                    'material crosses the message bus). The driver reads '
                    'Octavia\'s own options from this file, as in '
                    'octavia.conf: [certificates] (storage_path; '
                    'barbican_auth, region_name, endpoint_type, '
                    'ca_certificates_file, insecure), [service_auth] '
                    '(keystoneauth) and castellan\'s [key_manager] and '
                    '[barbican].'),
    cfg.IPOpt('snat_source4', version=4,
              help='Source address of the L7 engine\'s connections to IPv4 '
                   'members (SNAT). Default: the tunnel address of the '
                   'same family.'),
    cfg.IPOpt('snat_source6', version=6,
              help='Source address of the L7 engine\'s connections to IPv6 '
                   'members (SNAT). Default: the tunnel address of the '
                   'same family.'),
    cfg.StrOpt('interface',
               help='Interface the L4 tier\'s tunnelled packets arrive on. '
                    'Default: the interface of the default route.'),
    cfg.ListOpt('tunnel_addresses', default=[],
                help='Addresses the L4 SEs tunnel to (one per family), '
                     'published as this L7 SE\'s tunnel addresses. '
                     'Default: the first global address per family of '
                     'the interface.'),
    cfg.ListOpt('encaps', default=['ipip', 'gre'],
                help='Encapsulations decapsulated: ipip and/or gre.'),
    cfg.StrOpt('decap', default='auto', choices=['auto', 'kernel', 'ebpf'],
               help='Tunnel termination: kernel tunnel devices, the '
                    'project\'s eBPF decap program, or auto (kernel when '
                    'the tunnel drivers exist).'),
    cfg.StrOpt('log_socket', default='/dev/log',
               help='Syslog socket HAProxy logs to.'),
    cfg.BoolOpt('connection_logging', default=True,
                help='Log every connection (Octavia\'s user log format).'),
    cfg.FloatOpt('reload_timeout', default=10.0, min=0.5,
                 help='Seconds to wait for HAProxy to start or for a reload '
                      'to bring up the new worker before the load balancer '
                      'is reported ERROR.'),
]


# UDP listeners of the L7 engine (amphora_agent/l7/udp.py).
l7_udp_opts = [
    cfg.StrOpt('nft', default='nft',
               help='nft executable (nftables 1.0 or later) the L7 engine '
                    'installs the UDP listeners\' DNAT/SNAT rules with, one '
                    'table per load balancer.'),
]


def register_l7_opts(conf):
    conf.register_opts(l7_opts, group='l7')
    conf.register_opts(l7_udp_opts, group='l7')


def register_opts(conf):
    conf.register_opts(dataplane_opts, group='dataplane')


def register_agent_opts(conf):
    register_opts(conf)
    conf.register_opts(agent_opts, group='agent')
    conf.register_opts(coordination_opts, group='coordination')
    conf.register_opts(bgp_opts, group='bgp')
    conf.register_opts(auth_opts, group='auth')
    conf.register_opts(metrics_opts, group='metrics')
    register_l7_opts(conf)


def list_opts():
    return [('dataplane', dataplane_opts), ('agent', agent_opts),
            ('coordination', coordination_opts), ('bgp', bgp_opts),
            ('auth', auth_opts), ('metrics', metrics_opts),
            ('l7', l7_opts + l7_udp_opts)]
