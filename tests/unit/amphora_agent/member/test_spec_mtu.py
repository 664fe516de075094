"""Inputs and the MTU/MSS arithmetic."""

import pytest

from amphora_agent.member import mtu
from amphora_agent.member import spec as spec_mod


def _spec(**kwargs):
    kwargs.setdefault('vips', ['192.0.2.10', '2001:db8:f::10'])
    kwargs.setdefault('addresses', ['198.51.100.2', '2001:db8:2::2'])
    return spec_mod.MemberSpec(**kwargs)


@pytest.mark.parametrize('encap,family,extra', [
    ('ipip', 4, 20), ('ipip', 6, 40), ('gre', 4, 24), ('gre', 6, 44)])
def test_overhead(encap, family, extra):
    assert spec_mod.overhead(encap, family) == extra


@pytest.mark.parametrize('bad', ['127.0.0.1', '224.0.0.1', '::', 'fe80::1',
                                 'nope'])
def test_vips_must_be_unicast(bad):
    with pytest.raises(spec_mod.SpecError):
        _spec(vips=[bad])


@pytest.mark.parametrize('text,port', [
    ('80', spec_mod.Port(80, 'tcp')), ('53/udp', spec_mod.Port(53, 'udp')),
    ('443/TCP', spec_mod.Port(443, 'tcp'))])
def test_ports(text, port):
    assert spec_mod.Port.parse(text) == port


@pytest.mark.parametrize('bad', ['0', '65536', '80/sctp', 'http'])
def test_bad_ports(bad):
    with pytest.raises(spec_mod.SpecError):
        spec_mod.Port.parse(bad)


def test_spec_round_trips_through_its_record():
    spec = _spec(encaps=('gre', 'ipip'), interface='eth0', ports=['80'])
    assert spec_mod.MemberSpec.from_dict(spec.to_dict()) == spec


def test_fitting_link():
    assert mtu.shortfall(_spec(encaps=('ipip', 'gre')), 1544) is None
    line, = mtu.advice(_spec(), 'eth0', 1600, {})
    assert line == ('mtu: eth0 1600 carries 1500-byte client packets in '
                    'every encapsulation (up to +40)')


def test_short_link_needs_the_largest_overhead_and_per_family_mss():
    needed, worst, mss = mtu.shortfall(_spec(encaps=('ipip', 'gre')), 1500)
    assert needed == 1544 and worst.label() == \
        'IPv4 in gre over IPv6 (+44)'
    # 1500 - 44 (GRE over IPv6) - 40 / - 60 (inner IPv4 / IPv6 + TCP)
    assert mss == {4: 1416, 6: 1396}
    assert mtu.fix('eth0', needed, mss, {4: '198.51.100.1'}) == (
        'ip link set dev eth0 mtu 1544 (the whole SE->member path), or '
        'clamp the MSS: ip route change default via 198.51.100.1 dev eth0 '
        'advmss 1416; ip -6 route change default dev eth0 advmss 1396')


def test_a_clamped_family_is_not_short_any_more():
    spec = _spec(encaps=('ipip',))
    assert mtu.shortfall(spec, 1500, {4: 1420, 6: 1400}) is None
    # A clamp larger than what fits does not count.
    assert mtu.shortfall(spec, 1500, {4: 1460, 6: 1400})[2] == {4: 1420}
