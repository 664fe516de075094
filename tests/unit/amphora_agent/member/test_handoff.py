"""handoff: which records a setup's teardown (or run again) hands to the
other setups of the folder, and which it keeps to undo."""

import json

from amphora_agent.member import handoff
from amphora_agent.member import state

VIP4, VIP6, OTHER_VIP = '192.0.2.10', '2001:db8:f::10', '192.0.2.20'
PIN_DIR = '/sys/fs/bpf/test-decap'


def _journal(folder, name, vips, mode='ebpf', addresses=('198.18.1.2',),
             decap_addresses=()):
    journal = state.Journal(str(folder / f'{name}.json'))
    journal.data['spec'] = {
        'vips': list(vips), 'encaps': ['ipip'], 'interface': 'eth0',
        'addresses': list(addresses), 'ports': [], 'client_mtu': 1500,
        'sources': [], 'decap': mode, 'pin_dir': PIN_DIR}
    journal.data['decap'] = ({'mode': 'ebpf', 'interface': 'eth0',
                              'pin_dir': PIN_DIR, 'loaded': True,
                              'attached': True,
                              'addresses': list(decap_addresses),
                              'sources': []}
                             if mode == 'ebpf' else {'mode': 'kernel'})
    return journal


def _first(folder):
    first = _journal(folder, 'first', [VIP4, VIP6],
                     decap_addresses=['198.18.1.2'])
    for vip, prefix in ((VIP4, 32), (VIP6, 128)):
        first.add('addresses', {'ifname': 'lo', 'address': vip,
                                'prefixlen': prefix})
    first.sysctl_changed('net/ipv4/conf/all/arp_ignore', '0', 1)
    first.sysctl_changed('net/ipv6/conf/lo/disable_ipv6', '1', 0)
    return first


def test_siblings_are_the_other_journals_of_the_folder(tmp_path):
    first = _first(tmp_path)
    first.save()
    _journal(tmp_path, 'second', [VIP4]).save()
    (tmp_path / 'broken.json').write_text('{')
    (tmp_path / 'unrelated.json').write_text(json.dumps({'a': 1}))
    (tmp_path / 'notes.txt').write_text('not json')
    assert [j.path for j in handoff.siblings(first)] == [
        str(tmp_path / 'second.json')]


def test_what_another_setup_relies_on_is_handed_over(tmp_path):
    first = _first(tmp_path)
    second = _journal(tmp_path, 'second', [VIP4])
    lines, heirs = handoff.hand_over(first, [second])
    assert heirs == [second]
    # VIP4, the IPv4 ARP sysctl and the tunnel address go; VIP6 and the
    # IPv6 sysctl (the second has no IPv6 VIP) stay to be undone.
    assert [r['address'] for r in first.records('addresses')] == [VIP6]
    assert [r['address'] for r in second.records('addresses')] == [VIP4]
    assert list(first.data['sysctls']) == ['net/ipv6/conf/lo/disable_ipv6']
    assert second.data['sysctls'] == {
        'net/ipv4/conf/all/arp_ignore': {'old': '0', 'new': '1'}}
    # The decap's tunnel address is counted in its maps, not handed.
    assert first.data['decap']['addresses'] == ['198.18.1.2']
    assert second.data['decap']['addresses'] == []
    assert len(lines) == 2 and all(
        line.startswith('= ') and second.path in line for line in lines)


def test_the_value_before_either_setup_is_restored_last(tmp_path):
    """The heir changed the same sysctl further: its record keeps its own
    value but the first setup's old one, the host's before both."""
    first = _first(tmp_path)
    second = _journal(tmp_path, 'second', [VIP4])
    second.sysctl_changed('net/ipv4/conf/all/arp_ignore', '1', 2)
    handoff.hand_over(first, [second])
    assert second.data['sysctls']['net/ipv4/conf/all/arp_ignore'] == {
        'old': '0', 'new': '2'}


def test_a_setup_gets_only_what_it_relies_on(tmp_path):
    first = _first(tmp_path)
    other = _journal(tmp_path, 'other', [OTHER_VIP], mode='kernel',
                     addresses=['198.18.9.9'])
    other.data['spec']['interface'] = 'eth1'
    lines, heirs = handoff.hand_over(first, [other])
    # Only conf/all: the other's uplink is another interface.
    assert heirs == [other] and list(other.data['sysctls']) == [
        'net/ipv4/conf/all/arp_ignore']
    assert len(first.records('addresses')) == 2
    assert other.records('addresses') == [] and len(lines) == 1


def test_what_the_setup_run_again_still_needs_is_kept(tmp_path):
    first = _first(tmp_path)
    second = _journal(tmp_path, 'second', [VIP4])
    keep = handoff.relied_on(dict(first.data['spec'], vips=[VIP4]))
    lines, heirs = handoff.hand_over(first, [second], keep)
    assert lines == [] and heirs == []
    assert len(first.records('addresses')) == 2


def test_kernel_tunnel_devices_go_to_a_setup_using_them(tmp_path):
    first = _journal(tmp_path, 'first', [VIP4], mode='kernel')
    second = _journal(tmp_path, 'second', [VIP4], mode='kernel')
    [device] = handoff.relied_on(second.data['spec'])['links']
    first.add('links', {'ifname': device, 'kind': 'ipip'})
    handoff.hand_over(first, [second])
    assert second.records('links') == [{'ifname': device, 'kind': 'ipip'}]
    assert first.records('links') == []


def test_a_journal_of_another_network_namespace_is_no_sibling(tmp_path):
    """Test labs keep several hosts' (namespaces') state files in one
    folder: each host's setups see only their own."""
    first = _first(tmp_path)
    first.save()
    here = _journal(tmp_path, 'here', [VIP4])
    here.data['netns'] = handoff.netns_id()
    here.save()
    elsewhere = _journal(tmp_path, 'elsewhere', [VIP4])
    elsewhere.data['netns'] = '0:1'
    elsewhere.save()
    assert [j.path for j in handoff.siblings(first)] == [here.path]
