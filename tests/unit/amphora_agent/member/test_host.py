"""setup/teardown against a fake IPRoute and a fake /proc/sys: the kernel
tunnel path's pyroute2 requests (down to the netlink attributes), the
addresses, the sysctls, idempotency and exact undo."""

import os

import pytest

from amphora_agent.member import ebpf
from amphora_agent.member import host
from amphora_agent.member import netinfo
from amphora_agent.member import spec as spec_mod
from amphora_agent.member import state
from tests.unit.amphora_agent.member import fakes

from tests.unit.amphora_agent.member.conftest import A4
from tests.unit.amphora_agent.member.conftest import A6
from tests.unit.amphora_agent.member.conftest import V4
from tests.unit.amphora_agent.member.conftest import V6


def _link_adds(ipr):
    return [kwargs for kind, command, kwargs in ipr.calls
            if kind == 'link' and command == 'add']


def test_kernel_path_creates_one_tunnel_per_protocol(env):
    mode, lines = env.setup()
    assert mode == 'kernel'
    assert lines[0] == ('decap: kernel (asked for)')
    assert _link_adds(env.ipr) == [
        {'ifname': 'dsr-ipip', 'kind': 'ipip', 'ipip_local': A4,
         'ipip_proto': 4},
        {'ifname': 'dsr-sit', 'kind': 'sit', 'sit_local': A4,
         'sit_proto': 41},
        {'ifname': 'dsr-gre', 'kind': 'gre', 'gre_local': A4},
        {'ifname': 'dsr-ip6tnl', 'kind': 'ip6tnl', 'ip6tnl_local': A6,
         'ip6tnl_proto': 0},
        {'ifname': 'dsr-ip6gre', 'kind': 'ip6gre', 'ip6gre_local': A6},
    ]


def test_kernel_path_netlink_attributes(env):
    """What pyroute2 sends: IFLA_INFO_KIND and IFLA_INFO_DATA with the
    member address as local end, no remote (any), the right protocol."""
    env.setup()
    sent = {}
    for kwargs in _link_adds(env.ipr):
        info = dict(fakes.netlink_attrs('add', kwargs)['IFLA_LINKINFO']
                    ['attrs'])
        sent[kwargs['ifname']] = (info['IFLA_INFO_KIND'],
                                  info['IFLA_INFO_DATA']['attrs'])
    assert sent == {
        'dsr-ipip': ('ipip', [('IFLA_IPIP_LOCAL', A4),
                              ('IFLA_IPIP_PROTO', 4)]),
        'dsr-sit': ('sit', [('IFLA_SIT_LOCAL', A4), ('IFLA_SIT_PROTO', 41)]),
        'dsr-gre': ('gre', [('IFLA_GRE_LOCAL', A4)]),
        'dsr-ip6tnl': ('ip6tnl', [('IFLA_IP6TNL_LOCAL', A6),
                                  ('IFLA_IP6TNL_PROTO', 0)]),
        'dsr-ip6gre': ('ip6gre', [('IFLA_IP6GRE_LOCAL', A6)]),
    }


def test_kernel_path_brings_tunnels_up_and_relaxes_rp_filter(env):
    env.setup()
    ups = [c[2]['index'] for c in env.ipr.calls
           if c[:2] == ('link', 'set') and c[2].get('state') == 'up']
    names = [env.ipr.get_links(i)[0]['IFLA_IFNAME'] for i in ups]
    assert names == ['dsr-ipip', 'dsr-sit', 'dsr-gre', 'dsr-ip6tnl',
                     'dsr-ip6gre']
    for name in names:
        assert env.sysctl.read(f'net/ipv4/conf/{name}/rp_filter') == '2'
    assert env.sysctl.read('net/ipv4/conf/eth0/rp_filter') == '0'


def test_only_the_tunnels_the_families_need(env):
    env.setup(encaps=('ipip',), vips=(V4,))
    assert [k['ifname'] for k in _link_adds(env.ipr)] == ['dsr-ipip',
                                                          'dsr-ip6tnl']


def test_vips_on_lo_host_prefix_nodad_and_arp_suppressed_first(env):
    env.setup()
    changes = env.ipr.changes()
    adds = [c[2] for c in changes if c[:2] == ('addr', 'add')]
    lo = env.ipr.link_lookup(ifname='lo')[0]
    assert adds == [
        {'index': lo, 'address': V4, 'prefixlen': 32},
        {'index': lo, 'address': V6, 'prefixlen': 128,
         'flags': netinfo.IFA_F_NODAD}]
    for ifname in ('all', 'lo', 'eth0'):
        assert env.sysctl.read(f'net/ipv4/conf/{ifname}/arp_ignore') == '1'
        assert env.sysctl.read(f'net/ipv4/conf/{ifname}/arp_announce') \
            == '2'


def test_setup_again_changes_nothing(env):
    env.setup()
    recorded = repr(env.journal.data)
    before = len(env.ipr.changes())
    _, lines = env.setup()
    assert len(env.ipr.changes()) == before
    assert repr(env.journal.data) == recorded
    assert not [line for line in lines if line[:1] in '+-']


def test_teardown_undoes_exactly_what_setup_did(env):
    # Already there before setup: the IPv4 VIP and a stricter arp_ignore.
    env.ipr._new_addr('lo', V4, 32, 0)
    env.sysctl.write('net/ipv4/conf/eth0/arp_ignore', 2)
    env.setup()
    env.sysctl.write('net/ipv4/conf/lo/arp_announce', 1)   # changed since
    calls = len(env.ipr.calls)
    lines = host.teardown(env.ipr, env.sysctl, env.journal)
    undo = [c for c in env.ipr.calls[calls:] if c[1] != 'dump']
    deleted = sorted(c[2]['index'] for c in undo if c[:2] == ('link', 'del'))
    assert len(deleted) == 5 and not any(
        n.startswith('dsr-') for n in env.ipr.links)
    assert [c[2]['address'] for c in undo if c[:2] == ('addr', 'del')] \
        == [V6]
    assert [a['IFA_ADDRESS'] for a in env.ipr.addrs
            if a['index'] == env.ipr.link_lookup(ifname='lo')[0]] == [V4]
    assert env.sysctl.read('net/ipv4/conf/eth0/arp_ignore') == '2'
    assert env.sysctl.read('net/ipv4/conf/all/arp_ignore') == '0'
    assert env.sysctl.read('net/ipv4/conf/lo/arp_announce') == '1'
    assert ('! sysctl net.ipv4.conf.lo.arp_announce is 1, not 2 as setup '
            'left it: left alone') in lines


def test_a_vip_no_longer_given_is_removed(env):
    env.setup()
    _, lines = env.setup(vips=(V4,))
    assert f'- VIP {V6} from lo (no longer given)' in lines
    assert V6 not in [a['IFA_ADDRESS'] for a in env.ipr.addrs]


def test_proxy_ndp_entry_for_a_vip_is_removed_and_restored(env):
    eth0 = env.ipr.link_lookup(ifname='eth0')[0]
    env.ipr.proxies.append((V6, eth0))
    env.setup()
    assert env.ipr.proxies == []
    host.teardown(env.ipr, env.sysctl, env.journal)
    assert env.ipr.proxies == [(V6, eth0)]


def test_a_foreign_device_with_our_name_is_refused(env):
    env.ipr._new_link('dsr-ipip', 'ipip', {'IFLA_IPIP_LOCAL': '203.0.113.9'})
    with pytest.raises(RuntimeError, match='dsr-ipip exists but is not'):
        env.setup()


def test_auto_prefers_the_kernel_drivers(env):
    mode, lines = env.setup(mode='auto')
    assert mode == 'kernel'
    assert lines[0] == ('decap: kernel (the kernel has the gre, ip6gre, '
                        'ip6tnl, ipip, sit drivers)')


def test_auto_falls_back_to_ebpf_and_says_why(env, tmp_path, monkeypatch):
    env.roots['sys_root'] = str(tmp_path / 'empty')
    monkeypatch.setattr(ebpf, 'unavailable', lambda: None)
    spec = spec_mod.MemberSpec(vips=[V4], addresses=[A4])
    assert host.choose_decap('auto', spec, env.roots) == (
        'ebpf', 'the kernel has no ipip tunnel driver (modules ipip '
        'neither loaded nor installed)')
    with pytest.raises(host.SetupError, match='kernel decap needs the '
                       'modules ipip'):
        host.choose_decap('kernel', spec, env.roots)
    monkeypatch.setattr(ebpf, 'unavailable', lambda: 'not built')
    with pytest.raises(host.SetupError, match='lacks ipip and not built'):
        host.choose_decap('auto', spec, env.roots)


def test_loadable_modules_count_as_support(tmp_path):
    from amphora_agent.member import kernel
    release = tmp_path / 'lib' / '6.1.0'
    release.mkdir(parents=True)
    (release / 'modules.dep').write_text(
        'kernel/net/ipv4/ipip.ko.xz: kernel/net/ipv4/ip_tunnel.ko.xz\n')
    roots = {'sys_root': str(tmp_path / 'sys'),
             'modules_root': str(tmp_path / 'lib'), 'release': '6.1.0'}
    assert kernel.module_state('ipip', **roots) == 'loadable'
    assert kernel.module_state('ip_gre', **roots) is None
    assert kernel.missing_support(['ipip', 'gre'], **roots) == ['ip_gre']


def test_the_uplink_and_tunnel_addresses_default_from_the_routes(env):
    spec = spec_mod.MemberSpec(vips=[V4])
    host.resolve(spec, env.ipr)
    assert spec.interface == 'eth0'
    assert [str(a) for a in spec.addresses] == [A4, A6]


def test_journal_keeps_the_first_old_value(tmp_path):
    journal = state.Journal(str(tmp_path / 's.json'))
    journal.sysctl_changed('k', '0', 1)
    journal.sysctl_changed('k', '1', 2)
    journal.save()
    assert state.Journal.load(journal.path).data['sysctls']['k'] == {
        'old': '0', 'new': '2'}
    assert os.path.exists(journal.path)
