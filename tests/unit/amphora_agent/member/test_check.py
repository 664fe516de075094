"""check on the kernel tunnel path (only reachable here: this machine's
kernel has no tunnel drivers) and the texts of its problems."""

import pytest

from amphora_agent.member import check
from amphora_agent.member import ebpf
from amphora_agent.member import spec as spec_mod
from tests.unit.amphora_agent.member.conftest import A4
from tests.unit.amphora_agent.member.conftest import V4
from tests.unit.amphora_agent.member.conftest import V6


@pytest.fixture
def prepared(env, monkeypatch):
    monkeypatch.setattr(ebpf, 'is_attached', lambda ifname: False)
    env.setup()
    spec = spec_mod.MemberSpec(vips=[V4, V6], encaps=('ipip', 'gre'))

    def run():
        return [str(p) for p in check.run(
            spec_mod.MemberSpec.from_dict(spec.to_dict()), env.ipr,
            env.sysctl, '/nonexistent', ['dsr-member', 'setup'], 'kernel')]
    monkeypatch.setattr(check, 'listeners', lambda spec: [])
    env.run = run
    return env


def test_kernel_setup_is_clean(prepared):
    assert prepared.run() == []


def test_a_missing_tunnel_device(prepared):
    gre = prepared.ipr.link_lookup(ifname='dsr-gre')[0]
    prepared.ipr.link('del', index=gre)
    assert prepared.run() == [
        f'problem: no gre tunnel device up for {A4} (SE packets of that '
        'kind are dropped); fix: dsr-member setup']


def test_a_device_down(prepared):
    index = prepared.ipr.link_lookup(ifname='dsr-ipip')[0]
    prepared.ipr.link('set', index=index, state='down')
    assert prepared.run() == [
        f'problem: no ipip tunnel device up for {A4} (SE packets of that '
        'kind are dropped); fix: dsr-member setup']


def test_strict_rp_filter_on_a_tunnel_device(prepared):
    # conf/all is 1 on this host: 0 on the device is still strict.
    prepared.sysctl.write('net/ipv4/conf/dsr-sit/rp_filter', 0)
    assert prepared.run() == [
        'problem: rp_filter is strict (1) on dsr-sit, where decapsulated '
        'packets arrive: its decapsulated packets all come from clients '
        'routed out of another interface; fix: sysctl -w '
        'net.ipv4.conf.dsr-sit.rp_filter=2']


def test_no_decap_path_at_all(prepared):
    for name in list(prepared.ipr.links):
        if name.startswith('dsr-'):
            prepared.ipr.link('del',
                              index=prepared.ipr.link_lookup(ifname=name)[0])
    problems = check.run(
        spec_mod.MemberSpec(vips=[V4], encaps=('ipip',)), prepared.ipr,
        prepared.sysctl, '/nonexistent', ['dsr-member', 'setup'], None)
    assert [str(p) for p in problems] == [
        'problem: no decap path: neither the decap program on eth0 nor '
        'kernel tunnel devices for 198.51.100.2, 2001:db8:2::2; fix: '
        'dsr-member setup']


def test_vip_on_the_uplink(prepared):
    prepared.ipr._new_addr('eth0', V4, 32, 0)
    assert prepared.run() == [
        f'problem: VIP {V4} is on eth0, which answers ARP/ND for it (it must '
        f'only be on lo); fix: ip addr del {V4}/32 dev eth0']
