"""oslo.config options of the Octavia provider driver, declared in one place.

The driver runs inside octavia-api, so its options live in that process's
global ``cfg.CONF`` under ``[dsr_provider]`` (a private ConfigOpts breaks
oslo.messaging, which looks up its own options on the object it is given).
"""

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

GROUP = 'dsr_provider'

ENCAPSULATIONS = ('ipip', 'gre')
TIERS = (1, 2)

dsr_provider_opts = [
    cfg.StrOpt('transport_url', secret=True,
               help='oslo.messaging URL of the broker the dsr-controller '
                    'listens on (notification topic octavia-dsr-changes). '
                    'Unset: '
                    '[DEFAULT] transport_url of the octavia-api '
                    'configuration.'),
    cfg.StrOpt('signing_key',
               help='Ed25519 private key (PEM, mode 0600, owned by '
                    'octavia-api\'s user; "dsr-manage gen-key") the driver '
                    'signs its change notifications with; its public key '
                    'goes in every controller\'s [dsr_controller] '
                    'provider_keys_dir.  The broker is not a trust '
                    'boundary: a controller with authentication on refuses '
                    'unsigned changes.  Unset: changes go unsigned (for a '
                    'controller with authentication off).'),
    cfg.StrOpt('default_se_group', default='default',
               help='SE group serving a load balancer whose flavor and '
                    'availability zone name none.'),
    cfg.ListOpt('se_groups', default=[],
                help='SE groups a flavor or availability zone may name. '
                     'Empty: any well-formed name is accepted (the '
                     'controller reports an unknown group as an error).'),
    cfg.StrOpt('default_encapsulation', default='ipip',
               choices=ENCAPSULATIONS,
               help='Encapsulation from SE to member when the flavor '
                    'does not choose one: ipip (IPIP / IPv6-in-IP by inner '
                    'family) or gre.'),
    cfg.IntOpt('default_tier', default=1, choices=TIERS,
               help='Tier of a load balancer whose flavor does not set '
                    '"tier" (or that has no flavor): 1, L4 DSR to the '
                    'members; 2, L4 DSR to the L7 service engines of the '
                    'group "<se_group>-l7" (HTTP, TLS, L7 policies, every '
                    'algorithm; docs/tier2.md). Read when the load '
                    'balancer is created and when its tier is looked up '
                    'again: change it only while no load balancer relies '
                    'on it, as the amphora driver\'s [controller_worker] '
                    'loadbalancer_topology.'),
    cfg.StrOpt('status_relay_socket',
               default='/var/run/octavia/dsr-status.sock',
               help='Unix socket the status relay (dsr_provider.'
                    'status_relay: octavia-driver-agent\'s status service '
                    'kept warm, a provider agent or its own process) serves; '
                    'point [dsr_controller] octavia_status_socket at it.'),
    cfg.StrOpt('stats_relay_socket',
               default='/var/run/octavia/dsr-stats.sock',
               help='Unix socket of the status relay\'s statistics '
                    'service; point [dsr_controller] octavia_stats_socket '
                    'at it.'),
    cfg.StrOpt('octavia_get_socket',
               help='Unix socket of octavia-driver-agent\'s "get" service, '
                    'used to look up a pool\'s listener port when a member '
                    'is created (DSR members must listen on the VIP '
                    'port). Unset: [driver_agent] get_socket_path of the '
                    'octavia-api configuration, else '
                    '/var/run/octavia/get.sock. When the socket is '
                    'missing (or this API worker\'s cache of listener '
                    'ports is stale) the controller checks instead: it '
                    'rejects (ERROR) a member on another port than its '
                    'pool\'s listener and refuses a listener whose pool has '
                    'such members.'),
    cfg.BoolOpt('neutron_enabled', default=False,
                help='Allocate VIP ports in Neutron from the driver '
                     '(create_vip_port, through openstacksdk). False: the '
                     'driver declines and Octavia\'s own network driver '
                     'allocates the VIP.'),
    cfg.StrOpt('neutron_cloud',
               help='clouds.yaml entry openstacksdk uses for Neutron when '
                    'neutron_enabled is set. Unset: openstacksdk\'s '
                    'default (OS_CLOUD / OS_* environment).'),
    cfg.ListOpt('se_addresses', default=[],
                help='Addresses of the service engines, put in the '
                     'allowed_address_pairs of the VIP ports the driver '
                     'creates (neutron_enabled).'),
]


CONTROLLER_GROUP = 'dsr_controller'

controller_opts = [
    cfg.StrOpt('controller_id',
               help='Unique id of this controller (tooz member, RPC '
                    'server). Default: hostname plus a process token.'),
    cfg.StrOpt('database_connection', secret=True,
               default='sqlite:////var/lib/octavia-dsr-controller/'
                       'controller.db',
               help='SQLAlchemy URL of the controller\'s own database '
                    '(desired state); e.g. mysql+pymysql://user:pw@host/'
                    'octavia_dsr. Created and migrated by "dsr-db-manage '
                    'upgrade", never by the controller, which refuses to '
                    'start on another schema revision. A SQLite file '
                    '(the default: the unit\'s StateDirectory) suits a '
                    'single controller only.'),
    cfg.StrOpt('provider_exchange', default='octavia',
               help='Exchange the provider driver publishes its changes on: '
                    'octavia-api\'s [DEFAULT] control_exchange (Octavia '
                    'sets "octavia").'),
    cfg.StrOpt('default_se_group', default='default',
               help='SE group of load balancers whose flavor and '
                    'availability zone name none.'),
    cfg.StrOpt('coordination_url', secret=True,
               default='redis://127.0.0.1:6379?membership_timeout=1&'
                       'lock_timeout=1',
               help='tooz backend: leader election among controllers and '
                    'the SE groups\' membership (which agents are alive).'),
    cfg.StrOpt('leader_group', default='octavia-dsr-controllers',
               help='tooz group in which the controllers of one deployment '
                    'elect the leader that reports to Octavia.'),
    cfg.FloatOpt('apply_timeout', mutable=True, default=30.0, min=1.0,
                 help='Seconds the live SEs of a group have to apply a '
                      'generation before its objects are reported ERROR.'),
    cfg.FloatOpt('agent_ttl', mutable=True, default=30.0, min=1.0,
                 help='Seconds after its last report an SE stops voting in '
                      'operating statuses (its member health is unknown '
                      'from then; docs/operations.md "Silent SEs"). Agents '
                      'report at least every [agent] stats_interval (10 s '
                      'by default): 30 s is three missed heartbeats. It '
                      'still counts in provisioning verdicts: its dataplane '
                      'may still forward with its last generation. Also '
                      'which SEs count as live for capacity while the '
                      'coordination backend is down.'),
    cfg.FloatOpt('tombstone_ttl', mutable=True, default=7 * 86400.0,
                 min=3600.0,
                 help='Seconds the controller remembers a deleted object. '
                      'While it does, a redelivered create or update of '
                      'the object is ignored (RabbitMQ redelivers a change '
                      'whose controller died before acknowledging it) and '
                      'a second delete after a failed one waits for the '
                      'SEs again; after it, a delete of the id reports '
                      'DELETED at once. A week outlasts any redelivery and '
                      'leaves an operator a working week to retry a failed '
                      'delete; the table holds one small row per deleted '
                      'object meanwhile.'),
    cfg.IntOpt('report_workers', mutable=True, default=2, min=1,
               help='Status documents the leader sends to '
                    'octavia-driver-agent at the same time.  Each round '
                    'puts every ready load balancer in as few documents as '
                    'it can (each request forks a driver-agent child); '
                    'deletions fill several, and their children are CPU '
                    'bound: more than the host\'s cores only adds '
                    'contention.'),
    cfg.FloatOpt('stats_interval', mutable=True, default=5.0, min=0.5,
                 help='Seconds between listener statistics updates sent to '
                      'Octavia.'),
    cfg.FloatOpt('loop_interval', mutable=True, default=1.0, min=0.01,
                 help='Seconds between rounds of the leader\'s reporting '
                      'loop when nothing wakes it.  A stored change or an '
                      'agent\'s news (a generation applied, statuses that '
                      'moved) wakes the leader at once, from any '
                      'controller (a signed "wake" cast); this round is '
                      'for what nothing announces: apply_timeout, SEs '
                      'going silent or leaving their group.  A standby '
                      'tries the leadership lock every 0.1 s whatever this '
                      'is.'),
    cfg.StrOpt('octavia_status_socket',
               default='/var/run/octavia/status.sock',
               help='octavia-driver-agent status socket (DriverLibrary).'),
    cfg.StrOpt('octavia_stats_socket', default='/var/run/octavia/stats.sock',
               help='octavia-driver-agent statistics socket.'),
    cfg.StrOpt('octavia_get_socket', default='/var/run/octavia/get.sock',
               help='octavia-driver-agent get socket.'),
    cfg.BoolOpt('authentication', default=True,
                help='Sign snapshots and config_changed with signing_key '
                     'and accept agent messages only when signed by the key '
                     'enrolled for the SE they name, for its own group '
                     '("dsr-manage enrol-se"; docs/security.md).'),
    cfg.StrOpt('signing_key',
               default='/etc/octavia-dsr/keys/controller.key',
               help='The controller\'s Ed25519 private key (PEM, mode '
                    '0600, "dsr-manage gen-key"); re-read when the file '
                    'changes, so "dsr-manage rotate-controller-key '
                    'activate" switches keys without a restart.'),
    cfg.StrOpt('provider_keys_dir',
               default='/etc/octavia-dsr/keys/providers',
               help='Public keys (*.pub) of the provider drivers '
                    '(octavia-api\'s [dsr_provider] signing_key) whose '
                    'change notifications this controller applies when '
                    'authentication is on; re-read when a change is signed '
                    'by a key not in it.  A change signed by no key here is '
                    'refused (logged): anyone who can publish on the '
                    'broker could otherwise change any load balancer.'),
    cfg.BoolOpt('unsigned_changes', default=False,
                help='With authentication on, also apply change '
                     'notifications that carry no signature (drivers of '
                     'releases before signed changes, during an upgrade: '
                     'octavia-api first).  Anyone who can publish on the '
                     'provider exchange can then change any load '
                     'balancer: leave it off.'),
    cfg.FloatOpt('auth_window', default=60.0, min=1.0,
                 help='Seconds an agent message is valid either side of its '
                      'timestamp (replay window; clocks must agree within '
                      'it).'),
    cfg.FloatOpt('l7_flap_half_life', default=60.0, min=0.0,
                 help='Tier 2: seconds in which the flap penalty of an L7 '
                      'SE halves. An L7 SE that leaves the L4 pools without '
                      'draining first (it died, or stopped being ready) '
                      'earns a penalty of 1; at l7_flap_suppress it is kept '
                      'out of them when it rejoins, until the penalty has '
                      'decayed below l7_flap_reuse -- unless no other L7 SE '
                      'of its group serves (docs/tier2.md, "Flap '
                      'damping"). 0: no damping.'),
    cfg.FloatOpt('l7_flap_suppress', default=2.5, min=1.0, max=8.0,
                 help='Tier 2: the flap penalty at which an L7 SE is kept '
                      'out of the L4 pools (see l7_flap_half_life; 2.5: '
                      'three deaths within about half a minute; at most 8, '
                      'the most a penalty gets).'),
    cfg.FloatOpt('l7_flap_reuse', default=1.5, min=0.01,
                 help='Tier 2: the flap penalty below which a kept-out L7 '
                      'SE is let back into the L4 pools; below '
                      'l7_flap_suppress.'),
]


# Neutron integration of the controller (dsr_provider/controller/neutron_*,
# docs/members.md "Neutron").  The client: [neutron] keystoneauth adapter
# options (endpoint_override, region_name, valid_interfaces, ...) and
# [service_auth] credentials plus TLS, the sections Octavia itself uses.
NEUTRON_GROUP = 'neutron'
SERVICE_AUTH_GROUP = 'service_auth'
SE_PORT_MODES = ('address_pairs', 'port_security_off', 'unmanaged')

neutron_controller_opts = [
    cfg.BoolOpt('neutron_member_ports', default=False,
                help='Add the VIP addresses of every load balancer whose '
                     'pool holds a member to the allowed_address_pairs of '
                     'the Neutron port that has the member\'s address (found '
                     'by the member\'s subnet_id, else the VIP subnet, and '
                     'its fixed IP), and remove them when the last such '
                     'membership goes: a DSR member answers from the VIP, '
                     'which port security drops otherwise.  Only pairs the '
                     'controller added are ever removed.  A port it may not '
                     'update makes its members operating ERROR (reason in '
                     'the log and in neutron_member_ports).  The elected '
                     'leader reconciles; Neutron client from [neutron] and '
                     '[service_auth].'),
    cfg.ListOpt('neutron_se_ports', default=[],
                help='Neutron ports of the service engines, as '
                     'SE_GROUP:PORT_ID entries: they receive the traffic '
                     'for the VIPs of their group\'s load balancers and are '
                     'managed as neutron_se_port_mode says.'),
    cfg.StrOpt('neutron_se_port_mode', default='address_pairs',
               choices=[('address_pairs', 'the VIPs of the group\'s load '
                         'balancers in the ports\' allowed_address_pairs '
                         '(mind [DEFAULT] max_allowed_address_pair, 10 by '
                         'default, in Neutron)'),
                        ('port_security_off', 'port security disabled on '
                         'the ports (their security groups and pairs are '
                         'cleared, as Neutron requires); nothing to do per '
                         'VIP'),
                        ('unmanaged', 'the controller leaves the SE ports '
                         'alone')],
               help='How the SEs\' ports (neutron_se_ports) accept VIP '
                    'traffic.'),
    cfg.BoolOpt('neutron_tunnel_security_group', default=False,
                help='Create, in each project that has member ports, a '
                     'security group "octavia-dsr-tunnels" admitting the '
                     'SEs\' tunnels (IP protocols 4 and 47 from IPv4 '
                     'sources; 4, 41 and 47 from IPv6 sources) and attach '
                     'it to the member ports (neutron_member_ports); '
                     'detached when the last membership goes.'),
    cfg.ListOpt('neutron_tunnel_sources', default=[],
                help='Addresses or CIDRs the SEs send tunnelled packets '
                     'from (the rules\' remote_ip_prefix).  Empty: the '
                     'fixed IPs of neutron_se_ports.'),
    cfg.BoolOpt('neutron_tunnel_any_from_ipv4_sources', default=True,
                help='Also admit every protocol from IPv4 tunnel sources: '
                     'IPv6 VIPs tunnelled to IPv4 members are IP protocol '
                     '41 in IPv4, and Neutron refuses a protocol-41 rule '
                     'with ethertype IPv4 ("Invalid ethertype IPv4 for '
                     'protocol 41").  False: 6in4 is not admitted.'),
    cfg.FloatOpt('neutron_resync_interval', default=120.0, min=5.0,
                 help='Seconds between full reconciliations of the Neutron '
                      'ports (every member\'s port looked up again, '
                      'changes made behind the controller\'s back '
                      'repaired).  Changes of the desired state are '
                      'applied at once in between.'),
    cfg.FloatOpt('neutron_retry_interval', default=10.0, min=0.5,
                 help='Seconds before a port whose update failed is tried '
                      'again.'),
]


def neutron_client_opts():
    """[neutron] adapter and [service_auth] session + auth options
    (keystoneauth's own definitions, so every keystone plugin works;
    auth_type none with [neutron] endpoint_override for a noauth
    Neutron)."""
    auth = ks_loading.get_auth_common_conf_options() + \
        ks_loading.get_auth_plugin_conf_options('password')
    return [(NEUTRON_GROUP, ks_loading.get_adapter_conf_options(
                include_deprecated=False)),
            (SERVICE_AUTH_GROUP, ks_loading.get_session_conf_options() +
             auth)]


def register_neutron_opts(conf):
    conf.register_opts(neutron_controller_opts, group=CONTROLLER_GROUP)
    ks_loading.register_adapter_conf_options(conf, NEUTRON_GROUP,
                                             include_deprecated=False)
    ks_loading.register_session_conf_options(conf, SERVICE_AUTH_GROUP)
    ks_loading.register_auth_conf_options(conf, SERVICE_AUTH_GROUP)
    return conf


def register_controller_opts(conf=None):
    conf = cfg.CONF if conf is None else conf
    conf.register_opts(controller_opts, group=CONTROLLER_GROUP)
    register_neutron_opts(conf)
    return conf


def register_opts(conf=None):
    """Register the options on conf (default: the global cfg.CONF)."""
    conf = cfg.CONF if conf is None else conf
    conf.register_opts(dsr_provider_opts, group=GROUP)
    return conf


def list_opts():
    """Entry point of oslo-config-generator (octavia_dsr.dsr_provider)."""
    return [(GROUP, dsr_provider_opts),
            (CONTROLLER_GROUP, controller_opts + neutron_controller_opts)
            ] + neutron_client_opts()
