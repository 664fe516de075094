from octavia_lib.api.drivers import exceptions
from oslo_config import cfg
import pytest

from dsr_provider import driver
from dsr_provider import flavors
from dsr_provider import opts


@pytest.fixture
def conf():
    opts.register_opts()
    yield cfg.CONF
    cfg.CONF.clear_override('se_groups', group='dsr_provider')
    cfg.CONF.clear_override('default_se_group', group='dsr_provider')
    cfg.CONF.clear_override('default_encapsulation', group='dsr_provider')
    cfg.CONF.clear_override('default_tier', group='dsr_provider')


@pytest.fixture
def dsr(conf):
    return driver.DSRProviderDriver(rpc=object(), lookup=object())


def refused(func, *args):
    with pytest.raises(exceptions.UnsupportedOptionError) as info:
        func(*args)
    return info.value.user_fault_string


def test_supported_flavor_metadata(dsr):
    assert dsr.get_supported_flavor_metadata() == {
        'encapsulation': 'ipip or gre (default ipip)',
        'se_group': 'SE group serving the load balancer',
        'tier': flavors.FLAVOR_METADATA['tier'],
        'l7_se_group': flavors.FLAVOR_METADATA['l7_se_group'],
    }
    assert '2 (L4 DSR in front of L7' in flavors.FLAVOR_METADATA['tier']


def test_supported_availability_zone_metadata(dsr):
    assert set(dsr.get_supported_availability_zone_metadata()) == {
        'se_group'}


@pytest.mark.parametrize('metadata', [
    {}, {'encapsulation': 'ipip'}, {'encapsulation': 'gre'},
    {'se_group': 'edge-1'}, {'tier': 1}, {'tier': '1'},
    {'encapsulation': 'gre', 'se_group': 'g.2', 'tier': 1}])
def test_valid_flavors(dsr, metadata):
    dsr.validate_flavor(metadata)


def test_unknown_flavor_key_is_named(dsr):
    text = refused(dsr.validate_flavor, {'encapsulation': 'ipip',
                                         'loadbalancer_topology': 'SINGLE'})
    assert "'loadbalancer_topology'" in text
    assert 'encapsulation, l7_se_group, se_group, tier' in text


def test_bad_encapsulation_is_named(dsr):
    text = refused(dsr.validate_flavor, {'encapsulation': 'vxlan'})
    assert "encapsulation 'vxlan'" in text and 'ipip, gre' in text


def test_tier_2_flavors(dsr):
    dsr.validate_flavor({'tier': 2})
    dsr.validate_flavor({'tier': '2', 'se_group': 'edge',
                         'l7_se_group': 'edge-proxies'})
    text = refused(dsr.validate_flavor, {'tier': 'gold'})
    assert "tier 'gold'" in text and 'allowed: 1' in text and '2' in text
    refused(dsr.validate_flavor, {'tier': True})
    refused(dsr.validate_flavor, {'tier': 3})


def test_l7_se_group_is_checked_like_se_group(dsr, conf):
    text = refused(dsr.validate_flavor, {'tier': 2, 'l7_se_group': 'a b'})
    assert "l7_se_group 'a b'" in text and 'allowed' in text
    text = refused(dsr.validate_flavor, {'l7_se_group': 'x'})
    assert 'l7_se_group' in text and 'tier 2' in text
    conf.set_override('se_groups', ['edge', 'edge-l7'], group='dsr_provider')
    dsr.validate_flavor({'tier': 2, 'se_group': 'edge',
                         'l7_se_group': 'edge-l7'})
    text = refused(dsr.validate_flavor, {'tier': 2, 'l7_se_group': 'other'})
    assert "l7_se_group 'other'" in text and 'edge, edge-l7' in text


def test_resolve_tier_2(conf):
    assert flavors.resolve({'tier': 2, 'se_group': 'edge'}, {}) == {
        'se_group': 'edge', 'encapsulation': 'ipip', 'tier': 2,
        'l7_se_group': 'edge-l7'}
    assert flavors.resolve({'tier': '2', 'l7_se_group': 'px'},
                           {'se_group': 'z'}) == {
        'se_group': 'z', 'encapsulation': 'ipip', 'tier': 2,
        'l7_se_group': 'px'}
    text = refused(flavors.resolve, {'tier': 2, 'se_group': 'a',
                                     'l7_se_group': 'a'}, {})
    assert "l7_se_group 'a'" in text and 'allowed' in text
    # The default L7 group must be configured too when groups are listed.
    conf.set_override('se_groups', ['edge'], group='dsr_provider')
    text = refused(flavors.resolve, {'tier': 2, 'se_group': 'edge'}, {})
    assert "l7_se_group 'edge-l7'" in text
    assert flavors.resolve({'tier': 1}, {})['tier'] == 1
    assert 'l7_se_group' not in flavors.resolve({'tier': 1}, {})


@pytest.mark.parametrize('group', ['', 'a b', '-x', 'x' * 64, 7, None])
def test_bad_se_group_names(dsr, group):
    text = refused(dsr.validate_flavor, {'se_group': group})
    assert 'se_group' in text and 'allowed' in text


def test_se_group_must_be_configured_when_groups_are_listed(dsr, conf):
    conf.set_override('se_groups', ['edge', 'core'], group='dsr_provider')
    dsr.validate_flavor({'se_group': 'core'})
    text = refused(dsr.validate_flavor, {'se_group': 'other'})
    assert "'other'" in text and 'edge, core' in text
    text = refused(dsr.validate_availability_zone, {'se_group': 'other'})
    assert 'availability zone se_group' in text


def test_flavor_metadata_must_be_an_object(dsr):
    assert 'JSON object' in refused(dsr.validate_flavor, ['ipip'])


def test_availability_zone_metadata(dsr):
    dsr.validate_availability_zone({'se_group': 'az1-group'})
    text = refused(dsr.validate_availability_zone,
                   {'compute_zone': 'nova'})
    assert "'compute_zone'" in text and 'allowed keys: se_group' in text


def test_resolve_defaults(conf):
    assert flavors.resolve({}, {}) == {
        'se_group': 'default', 'encapsulation': 'ipip', 'tier': 1}
    conf.set_override('default_se_group', 'main', group='dsr_provider')
    conf.set_override('default_encapsulation', 'gre', group='dsr_provider')
    assert flavors.resolve(None, 'az-name') == {
        'se_group': 'main', 'encapsulation': 'gre', 'tier': 1}


def test_default_tier_applies_when_the_flavor_names_none(conf):
    assert opts.register_opts().dsr_provider.default_tier == 1
    conf.set_override('default_tier', 2, group='dsr_provider')
    for flavor in (None, {}, {'se_group': 'edge'}):
        settings = flavors.resolve(flavor, {})
        assert settings['tier'] == 2, flavor
        assert settings['l7_se_group'] == \
            f'{settings["se_group"]}-l7'
        assert flavors.tier_of(flavor) == 2
    # A flavor's own tier wins over the default.
    assert flavors.resolve({'tier': 1}, {}) == {
        'se_group': 'default', 'encapsulation': 'ipip', 'tier': 1}
    assert flavors.tier_of({'tier': '1'}) == 1
    # l7_se_group is meaningful without "tier" when the default is 2.
    assert flavors.resolve({'l7_se_group': 'px'}, {})['l7_se_group'] == 'px'
    conf.set_override('default_tier', 1, group='dsr_provider')
    assert "l7_se_group" in refused(flavors.validate_flavor,
                                    {'l7_se_group': 'px'})


def test_default_tier_allows_1_and_2_only(conf):
    with pytest.raises(ValueError):
        conf.set_override('default_tier', 3, group='dsr_provider')


def test_resolve_flavor_and_zone(conf):
    assert flavors.resolve({'encapsulation': 'gre'}, {'se_group': 'z'}) == {
        'se_group': 'z', 'encapsulation': 'gre', 'tier': 1}
    assert flavors.resolve({'se_group': 'f'}, {})['se_group'] == 'f'
    assert flavors.resolve({'se_group': 'f'},
                           {'se_group': 'f'})['se_group'] == 'f'
    text = refused(flavors.resolve, {'se_group': 'f'}, {'se_group': 'z'})
    assert "'f'" in text and "'z'" in text and 'disagree' in text


@pytest.mark.parametrize('metadata, groups, named', [
    # the derived "edge-l7" is not a configured group
    ({'tier': 2, 'se_group': 'edge'}, ['edge', 'default', 'default-l7'],
     "l7_se_group 'edge-l7' (the default: se_group 'edge'"),
    # the derived name is over 63 characters
    ({'tier': 2, 'se_group': 'g' * 62}, [], "l7_se_group '" + 'g' * 62),
    # the L7 group is the load balancer's own
    ({'tier': 2, 'se_group': 'edge', 'l7_se_group': 'edge'}, [],
     "l7_se_group 'edge' is the load balancer's se_group"),
])
def test_validate_flavor_refuses_what_every_create_would(
        dsr, conf, metadata, groups, named):
    """A flavor profile that every load balancer create would refuse is
    refused when the operator creates it."""
    conf.set_override('se_groups', groups, group='dsr_provider')
    with pytest.raises(exceptions.UnsupportedOptionError):
        flavors.resolve(metadata, {})
    text = refused(dsr.validate_flavor, metadata)
    assert named in text and 'allowed' in text


def test_validate_flavor_checks_the_derived_l7_group_at_default_tier_2(
        dsr, conf):
    conf.set_override('se_groups', ['edge'], group='dsr_provider')
    dsr.validate_flavor({'se_group': 'edge'})          # tier 1
    conf.set_override('default_tier', 2, group='dsr_provider')
    assert "'edge-l7'" in refused(dsr.validate_flavor, {'se_group': 'edge'})
    conf.set_override('se_groups', ['edge', 'edge-l7'], group='dsr_provider')
    dsr.validate_flavor({'se_group': 'edge'})
