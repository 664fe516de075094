"""[dsr_scenario] options: where the DSR scenario finds its client, members
and SE counters.  The test is skipped unless `enabled` is set.

The commands are run on the tempest host through a shell-less argv split
(shlex).  In the project's lab (`make test-tempest`) they enter network
namespaces; in a DevStack gate they are typically `sudo ip netns exec ...`
or `ssh ...` wrappers around the same programs (see docs/tempest.md).
"""

from oslo_config import cfg

group = cfg.OptGroup(name='dsr_scenario',
                     title='octavia-dsr traffic scenario')

opts = [
    cfg.BoolOpt('enabled', default=False,
                help='Run the DSR traffic scenario (needs the commands '
                     'below to reach a client, the SEs and the members).'),
    cfg.StrOpt('provider', default='dsr',
               help='Octavia provider name of the DSR driver.'),
    cfg.StrOpt('vip_subnet_id',
               help='Subnet of the scenario VIP (must be routed to the '
                    'SEs, which announce it by BGP).'),
    cfg.StrOpt('vip_address',
               help='VIP address.  The members must serve on it (DSR: '
                    'bound on their loopback).'),
    cfg.StrOpt('member_subnet_id',
               help='Subnet of the member addresses.'),
    cfg.ListOpt('member_addresses', default=[],
                help='Addresses of servers that answer HTTP on '
                     'protocol_port for the VIP address, with the DSR '
                     'member set-up (decapsulation, VIP on lo).'),
    cfg.PortOpt('protocol_port', default=80,
                help='Listener and member port (DSR keeps the port).'),
    cfg.StrOpt('client_command',
               help='Command printing the body of GET http://{vip}:{port}'
                    '{path} from a client outside the members, with '
                    '{vip}, {port} and {path} substituted; non-zero exit '
                    'on failure.'),
    cfg.StrOpt('member_name_regex', default=r'member=(\S+)',
               help='Regex whose first group names the member in the body '
                    'of GET / (the lab servers answer "member=<name>").'),
    cfg.MultiStrOpt('se_stats_command', default=[],
                    help='One per SE: prints the SE dataplane counters as '
                         'JSON, the format of `dsrctl stats --json` '
                         '({"se": {...}, "listeners": [{"listener", '
                         '"packets", "bytes", ...}]}).'),
    cfg.MultiStrOpt('member_stats_command', default=[],
                    help='One per member: prints its decapsulation '
                         'counters as JSON, the format of `dsrctl decap '
                         'stats --json` ({"ipip", "ip6ip", "gre", ...}).'),
    cfg.IntOpt('requests', default=20, min=2,
               help='Requests sent through the VIP.'),
    cfg.IntOpt('response_bytes', default=200000, min=1000,
               help='Size of each large response (GET /bytes/N): the SEs '
                    'must carry far fewer bytes than the client receives.'),
    cfg.IntOpt('connection_limit', default=-1, min=-1,
               help='connection_limit of the scenario\'s listener (-1: '
                    'unlimited).  Set it (above the test\'s concurrency) to '
                    'prove that traffic flows through a limited listener.'),
    cfg.ListOpt('allowed_cidrs', default=[],
                help='allowed_cidrs of the scenario\'s listener (empty: '
                     'any source).  Set it to prefixes holding the client '
                     'to prove that traffic flows through an allow list.'),
    cfg.IntOpt('timeout_client_data', min=0,
               help='timeout_client_data (ms) of the scenario\'s listener '
                    '(unset: Octavia\'s default).  Set it to prove that '
                    'the SEs apply it: each SE\'s stats must show it as '
                    'the listener\'s idle_timeout_ms.'),
    cfg.IntOpt('timeout', default=120,
               help='Seconds to wait for statuses and for traffic to flow.'),
]
