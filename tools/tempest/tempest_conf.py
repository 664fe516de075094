"""tempest.conf for octavia-tempest-plugin's API tests against provider dsr.

The feature flags say exactly what the DSR provider does at the tier the
plugin's load balancers get (tier 1, Layer 4; or tier 2, HAProxy on the L7
SEs, when octavia-api's [dsr_provider] default_tier is 2),
the way ovn-octavia-provider's gate jobs describe theirs; docs/tempest.md
explains each one.  Octavia runs with the keystone default roles
(enforce_new_defaults, enforce_scope): RBAC_test_type keystone_default_roles.
"""

import configparser

# [loadbalancer-feature-enabled] for provider dsr.
FEATURES = {
    # Refusals (HTTP 501 UnsupportedOptionError) skip the test with the
    # provider's message instead of failing it: the provider refuses what
    # tier 1 cannot do by design (L7, TLS, cookies); connection_limit,
    # allowed_cidrs and monitors with timeout > delay are accepted and
    # enforced by the SEs, so their tests run.
    'not_implemented_is_error': False,
    'health_monitor_enabled': True,      # TCP, UDP-CONNECT, PING, HTTP(S)?
    'terminated_tls_enabled': False,     # no TLS: the SEs never terminate
    'l7_protocol_enabled': False,        # tier 1 is L4: no HTTP listeners/L7
    'pool_algorithms_enabled': False,    # SOURCE_IP(_PORT) only (Maglev)
    'l4_protocol': 'TCP',
    'session_persistence_enabled': False,  # SOURCE_IP only, no cookies
    'spare_pool_enabled': False,
    'log_offload_enabled': False,
    'prometheus_listener_enabled': False,  # PROMETHEUS is an L7 listener
}

# ...and at tier 2 (docs/tier2.md): HTTP/HTTPS listeners, L7 policies and
# rules, every algorithm, SOURCE_IP / HTTP_COOKIE / APP_COOKIE persistence.
TIER2_FEATURES = dict(
    FEATURES,
    l7_protocol_enabled=True,
    pool_algorithms_enabled=True,
    session_persistence_enabled=True,
    # TERMINATED_HTTPS is served, but the plugin's TLS tests need Barbican
    # (certificates as secrets), which this gate does not run.
)
TIER_FEATURES = {1: FEATURES, 2: TIER2_FEATURES}

# The test networks (created in Neutron by the plugin).  Only documentation
# and benchmarking ranges, away from the lab's own links (docs/tempest.md).
NETWORKS = {
    'vip_subnet_cidr': '198.18.200.0/24',
    'vip_ipv6_subnet_cidr': '2001:db8:a0::/64',
    'member_1_ipv4_subnet_cidr': '198.19.201.0/24',
    'member_1_ipv6_subnet_cidr': '2001:db8:a1::/64',
    'member_2_ipv4_subnet_cidr': '198.19.202.0/24',
    'member_2_ipv6_subnet_cidr': '2001:db8:a2::/64',
}


def config(*, workspace, auth_url, admin_password, provider='dsr',
           provider_description='DSR', flavor_capability=None,
           az_capability=None, scenario=None, timeout=60, tier=1,
           http_timeout=None):
    """{section: {option: value}}.

    tier: the tier of the load balancers the plugin creates (feature flags
    TIER_FEATURES[tier]).
    http_timeout: seconds a request to a service may take (tempest's
    [service-clients] http_timeout; None: tempest's 60).
    flavor_capability / az_capability: (name, description) the provider
    lists (octavia-tempest-plugin checks one of each).  scenario: options of
    [dsr_scenario] (dsr_provider/tempest/config.py), None: disabled.
    """
    lb = {
        'provider': provider,
        'enabled_provider_drivers': f'{provider}:{provider_description}',
        'test_with_noop': 'false',
        'test_with_ipv6': 'true',
        'RBAC_test_type': 'keystone_default_roles',
        'build_interval': '0.5',
        'check_interval': '0.5',
        'lb_build_interval': '0.5',
        'build_timeout': str(timeout),
        'check_timeout': str(timeout),
        'lb_build_timeout': str(timeout),
        'default_ipv6_subnetpool': '',
        'log_user_roles': 'false',
        **NETWORKS,
    }
    if flavor_capability:
        lb['expected_flavor_capability'] = '%s:%s' % flavor_capability
    if az_capability:
        lb['expected_availability_zone_capability'] = '%s:%s' % az_capability
    cfg = {
        'DEFAULT': {'log_file': f'{workspace}/tempest.log',
                    'debug': 'true'},
        'auth': {'use_dynamic_credentials': 'true',
                 'admin_username': 'admin',
                 'admin_password': admin_password,
                 'admin_project_name': 'admin',
                 'admin_domain_name': 'Default',
                 'default_credentials_domain_name': 'Default'},
        'identity': {'uri_v3': auth_url, 'auth_version': 'v3',
                     'region': 'RegionOne', 'v3_endpoint_type': 'public',
                     'disable_ssl_certificate_validation': 'true'},
        'identity-feature-enabled': {'api_v2': 'false'},
        # octavia-tempest-plugin's API tests skip unless compute and image
        # are "available" when test_with_noop is off; they call neither.
        'service_available': {'load_balancer': 'true', 'neutron': 'true',
                              'nova': 'true', 'glance': 'true',
                              'cinder': 'false', 'swift': 'false',
                              'horizon': 'false', 'barbican': 'false'},
        'network': {'project_networks_reachable': 'true'},
        'network-feature-enabled': {'ipv6': 'true'},
        'load_balancer': lb,
        'loadbalancer-feature-enabled': {k: str(v).lower() if isinstance(
            v, bool) else v for k, v in TIER_FEATURES[tier].items()},
        'enforce_scope': {'octavia': 'true'},
        'dsr_scenario': dict(scenario or {'enabled': 'false'}),
    }
    if http_timeout is not None:
        cfg['service-clients'] = {'http_timeout': str(http_timeout)}
    return cfg


def write(path, cfg):
    """Write the config; MultiStrOpt values (lists) become repeated lines."""
    lines = ['# Written by tools/tempest/tempest_conf.py']
    for section, opts in cfg.items():
        lines.append(f'[{section}]')
        for key, value in opts.items():
            for v in (value if isinstance(value, list) else [value]):
                lines.append(f'{key} = {v}')
        lines.append('')
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    configparser.ConfigParser(strict=False, interpolation=None).read(path)
