"""Flavor and availability zone metadata of the DSR provider.

Flavor metadata (an operator's flavor profile):
    encapsulation   'ipip' or 'gre'
                    (default: [dsr_provider] default_encapsulation)
    se_group        SE group serving the load balancer
    tier            1: members are servers; 2: the L4 SEs steer to L7
                    service engines (HAProxy, SNAT) that proxy to the
                    members (docs/tier2.md)
                    (default: [dsr_provider] default_tier)
    l7_se_group     tier 2 only: SE group of the L7 service engines
                    (default: "<se_group>-l7")
Availability zone metadata:
    se_group        SE group serving load balancers of the zone

resolve() turns the two into the settings the controller applies.
"""

import re

from octavia_lib.api.drivers import exceptions

from dsr_provider import opts

FLAVOR_METADATA = {
    'encapsulation': 'ipip or gre (default ipip)',
    'se_group': 'SE group serving the load balancer',
    'tier': '1 (default: L4 DSR, members are servers) or 2 (L4 DSR in '
            'front of L7 service engines that proxy to the members: HTTP, '
            'TLS termination, L7 policies, every algorithm)',
    'l7_se_group': 'tier 2: SE group of the L7 service engines (default '
                   '"<se_group>-l7")',
}
TIERS = opts.TIERS

AVAILABILITY_ZONE_METADATA = {
    'se_group': 'SE group serving the load balancers of this availability '
                'zone',
}

# An SE group names an oslo.messaging topic (octavia-dsr-agent.<se_group>).
_SE_GROUP_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$')


def _refuse(message):
    raise exceptions.UnsupportedOptionError(user_fault_string=message,
                                            operator_fault_string=message)


def _check_keys(metadata, allowed, what):
    if not isinstance(metadata, dict):
        _refuse(f'{what} metadata must be a JSON object; allowed keys: '
                f'{", ".join(sorted(allowed))}.')
    unknown = sorted(set(metadata) - set(allowed))
    if unknown:
        _refuse(f'{what} metadata key(s) {", ".join(map(repr, unknown))} '
                f'are not supported by the DSR provider; allowed keys: '
                f'{", ".join(sorted(allowed))}.')


def _check_se_group(value, what, conf, key='se_group', note=''):
    """note: said after the value (where a derived name comes from)."""
    if not isinstance(value, str) or not _SE_GROUP_RE.match(value):
        _refuse(f'{what} {key} {value!r}{note} is not a valid SE group '
                'name: allowed: 1 to 63 letters, digits, "_", "." or "-", '
                'starting with a letter or digit.')
    known = conf.dsr_provider.se_groups
    if known and value not in known:
        _refuse(f'{what} {key} {value!r}{note} is not a configured SE '
                f'group; allowed: {", ".join(known)}.')


def tier_of(flavor, conf=None):
    """The tier a load balancer's flavor metadata asks for (1 or 2),
    [dsr_provider] default_tier when it names none (no flavor, or a flavor
    without "tier"); anything else is refused by validate_flavor first."""
    if not isinstance(flavor, dict) or 'tier' not in flavor:
        return opts.register_opts(conf).dsr_provider.default_tier
    value = flavor['tier']
    return 2 if value in (2, '2') and not isinstance(value, bool) else 1


def validate_flavor(metadata, conf=None):
    """Raise UnsupportedOptionError naming any key or value not supported."""
    conf = opts.register_opts(conf)
    _check_keys(metadata, FLAVOR_METADATA, 'flavor')
    if 'encapsulation' in metadata:
        value = metadata['encapsulation']
        if value not in opts.ENCAPSULATIONS:
            _refuse(f'flavor encapsulation {value!r} is not supported; '
                    f'allowed: {", ".join(opts.ENCAPSULATIONS)}.')
    if 'se_group' in metadata:
        _check_se_group(metadata['se_group'], 'flavor', conf)
    if 'tier' in metadata:
        value = metadata['tier']
        if isinstance(value, bool) or value not in (1, '1', 2, '2'):
            _refuse(f'flavor tier {value!r} is not supported; allowed: '
                    '1 (L4 DSR to the members), 2 (L4 DSR to L7 service '
                    'engines).')
    if 'l7_se_group' in metadata:
        if tier_of(metadata, conf) != 2:
            _refuse('flavor l7_se_group is only meaningful with tier 2 '
                    '(allowed: tier 2, or no l7_se_group).')
        _check_se_group(metadata['l7_se_group'], 'flavor', conf,
                        key='l7_se_group')
    # With its se_group named, a tier-2 flavor fixes its L7 group too:
    # refuse here what every load balancer create would refuse (resolve),
    # rather than accept a flavor profile no load balancer can use.
    if 'se_group' in metadata and tier_of(metadata, conf) == 2:
        _check_l7_group(metadata['se_group'], metadata.get('l7_se_group'),
                        conf)


def _check_l7_group(se_group, l7_se_group, conf):
    """The L7 SE group of a tier-2 load balancer served by se_group:
    l7_se_group, or "<se_group>-l7" when None. Returns it."""
    l7_group = l7_se_group or f'{se_group}-l7'
    note = '' if l7_se_group else \
        f' (the default: se_group {se_group!r} + "-l7")'
    _check_se_group(l7_group, 'flavor', conf, key='l7_se_group', note=note)
    if l7_group == se_group:
        _refuse(f'flavor l7_se_group {l7_group!r} is the load '
                'balancer\'s se_group: the L7 service engines are a '
                'group of their own (allowed: any other SE group).')
    return l7_group


def validate_availability_zone(metadata, conf=None):
    """Raise UnsupportedOptionError naming any key or value not supported."""
    conf = opts.register_opts(conf)
    _check_keys(metadata, AVAILABILITY_ZONE_METADATA, 'availability zone')
    if 'se_group' in metadata:
        _check_se_group(metadata['se_group'], 'availability zone', conf)


def resolve(flavor, availability_zone, conf=None):
    """The DSR settings of a new load balancer.

    flavor and availability_zone are the metadata dicts Octavia passes in
    loadbalancer_create (empty, None or Unset when there is none). Returns
    {'se_group': str, 'encapsulation': 'ipip'|'gre', 'tier': 1|2} (the
    flavor's tier, else [dsr_provider] default_tier) and, for tier 2,
    'l7_se_group': str too.
    """
    conf = opts.register_opts(conf)
    flavor = flavor if isinstance(flavor, dict) else {}
    # Octavia passes the zone's metadata at create time; elsewhere the
    # field may hold the zone's name, which carries no settings.
    zone = availability_zone if isinstance(availability_zone, dict) else {}
    validate_flavor(flavor, conf)
    validate_availability_zone(zone, conf)
    flavor_group, zone_group = flavor.get('se_group'), zone.get('se_group')
    if flavor_group and zone_group and flavor_group != zone_group:
        _refuse(f'flavor se_group {flavor_group!r} and availability zone '
                f'se_group {zone_group!r} disagree; a load balancer is '
                'served by one SE group: use a flavor without se_group or '
                'the zone of that group.')
    settings = {
        'se_group': (flavor_group or zone_group or
                     conf.dsr_provider.default_se_group),
        'encapsulation': flavor.get(
            'encapsulation', conf.dsr_provider.default_encapsulation),
        'tier': tier_of(flavor, conf),
    }
    if settings['tier'] == 2:
        # Checked again: the se_group may come from the zone or the
        # default, which validate_flavor does not know.
        settings['l7_se_group'] = _check_l7_group(
            settings['se_group'], flavor.get('l7_se_group'), conf)
    return settings
