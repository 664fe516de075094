"""Several setups on one member, one state file each in one folder (a
member behind several load balancers): what one setup changed and another
still relies on -- a VIP on lo, a sysctl, a removed proxy-NDP entry, a
kernel tunnel device -- is handed to that setup's journal at teardown
instead of being undone, so it is undone by the last setup out that relies
on it.  A setup that found something already done records nothing for it;
without the handoff the first setup's teardown would take it from under
the second.  (The eBPF decap needs no handoff: its maps count the setups
giving each tunnel address and source, member/ebpf.py.)  Journals of
another network namespace (another host in a test lab) are not siblings.
"""

import glob
import json
import os

from amphora_agent.member import host
from amphora_agent.member import kernel
from amphora_agent.member import spec as spec_mod
from amphora_agent.member import state
from amphora_agent.member import sysctl as sysctl_mod

conf = host.conf


def netns_id():
    """This process's network namespace (the host a journal is about)."""
    st = os.stat('/proc/self/ns/net')
    return f'{st.st_dev}:{st.st_ino}'


def siblings(journal):
    """The other setups' journals in ``journal``'s folder, of this network
    namespace (files that are not a setup's journal are ignored)."""
    folder = os.path.dirname(os.path.abspath(journal.path))
    found = []
    for path in sorted(glob.glob(os.path.join(folder, '*.json'))):
        if os.path.abspath(path) == os.path.abspath(journal.path):
            continue
        try:
            with open(path) as f:
                data = json.load(f)
            spec_mod.MemberSpec.from_dict(data['spec'])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if data.get('version') == state.VERSION and \
                data.get('netns', netns_id()) == netns_id():
            found.append(state.Journal(path, data))
    return found


def relied_on(data):
    """What a setup (its recorded spec: MemberSpec.to_dict() with 'decap'
    the mode) needs to stay as it is: {'vips', 'sysctls', 'links'}
    (addresses, keys, device names)."""
    spec = spec_mod.MemberSpec.from_dict(data)
    mode = data.get('decap')
    sysctls = set()
    if 4 in spec.families:
        sysctls |= {conf(4, ifname, name) for name in host.ARP_SETTINGS
                    for ifname in ('all', 'lo', spec.interface)}
        sysctls |= {conf(4, ifname, 'rp_filter')
                    for ifname in host.decap_interfaces(spec, mode)}
    if 6 in spec.families:
        sysctls.add(conf(6, 'lo', 'disable_ipv6'))
    links = set()
    if mode == 'kernel':
        links = {d.ifname for d in kernel.devices(
            spec.addresses, spec.encaps, spec.families)}
    return {'vips': {str(v) for v in spec.vips}, 'sysctls': sysctls,
            'links': links}


def hand_over(journal, others, keep=None):
    """Move from ``journal`` to the first of ``others`` that relies on it
    every record that one still needs, except what ``keep`` (relied_on of
    this setup run again) says this setup needs itself; returns (report
    lines, the journals that received something, to be saved)."""
    needs = [(other, relied_on(other.data['spec'])) for other in others]
    keep = keep or {'vips': (), 'sysctls': (), 'links': ()}
    lines, heirs = [], []

    def heir_of(kind, item):
        if item in keep[kind]:
            return None
        for other, relied in needs:
            if item in relied[kind]:
                if other not in heirs:
                    heirs.append(other)
                return other
        return None

    def kept(what, heir):
        lines.append(f'= {what} kept: the setup recorded in {heir.path} '
                     'relies on it')

    for kind in ('addresses', 'neigh_proxies'):
        for record in journal.records(kind):
            heir = heir_of('vips', record['address'])
            if heir is not None:
                journal.discard(kind, record)
                heir.add(kind, record)
                kept(('VIP ' if kind == 'addresses' else 'proxy-NDP '
                      'entry removed for ') + record['address'], heir)
    for record in journal.records('links'):
        heir = heir_of('links', record['ifname'])
        if heir is not None:
            journal.discard('links', record)
            heir.add('links', record)
            kept(f'{record["kind"]} tunnel {record["ifname"]}', heir)
    for key, change in list(journal.data['sysctls'].items()):
        heir = heir_of('sysctls', key)
        if heir is not None:
            del journal.data['sysctls'][key]
            # The value before either setup is the one to restore.
            theirs = heir.data['sysctls'].setdefault(key, dict(change))
            theirs['old'] = change['old']
            kept(f'sysctl {sysctl_mod.display(key)} = {change["new"]}',
                 heir)
    return lines, heirs
