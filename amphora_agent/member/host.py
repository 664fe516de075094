"""setup and teardown of a member's host settings, each change recorded in
the Journal so that teardown undoes exactly what setup did.

Order matters: ARP suppression comes before the VIPs appear (no window in
which the member answers ARP for them), the decap path before rp_filter
(tunnel devices must exist to be configured).
"""

from pyroute2.netlink.rtnl.ndmsg import NTF_PROXY

from amphora_agent.member import ebpf
from amphora_agent.member import kernel
from amphora_agent.member import mtu
from amphora_agent.member import netinfo
from amphora_agent.member import sysctl as sysctl_mod

conf = sysctl_mod.conf

# Never lowered: larger values are stricter (arp_ignore 2, 3, 8 answer even
# less; arp_announce 2 is the strictest).
ARP_SETTINGS = {'arp_ignore': 1, 'arp_announce': 2}


class SetupError(RuntimeError):
    pass


def resolve(spec, ipr):
    """Fill in the uplink (interface of the default route) and the tunnel
    addresses (its first global address per family) when not given."""
    if not spec.interface:
        for family in (4, 6):
            name, _ = netinfo.default_route(ipr, family)
            if name:
                spec.interface = name
                break
        else:
            raise SetupError('no default route: give --interface')
    if netinfo.index(ipr, spec.interface) is None:
        raise SetupError(f'interface {spec.interface} does not exist')
    if not spec.addresses:
        for family in (4, 6):
            found = netinfo.global_addresses(ipr, spec.interface, family)
            if found:
                spec.addresses.append(found[0])
        if not spec.addresses:
            raise SetupError(f'{spec.interface} has no global address: give '
                             '--address (the member address the SEs '
                             'tunnel to)')
    return spec


def choose_decap(mode, spec, module_roots=None):
    """(mode, reason): 'kernel' when the tunnel drivers exist (or were
    asked for), 'ebpf' otherwise."""
    kinds = sorted({d.kind for d in kernel.devices(
        spec.addresses, spec.encaps, spec.families)})
    missing = kernel.missing_support(kinds, **(module_roots or {}))
    if mode == 'kernel':
        if spec.sources:
            # A kernel tunnel device takes packets from any source unless
            # it is made per SE; the host's firewall is the place for that.
            raise SetupError('--se-source needs eBPF decap (--decap ebpf): '
                             'kernel tunnel devices decapsulate from any '
                             'source (filter protocols 4, 41 and 47 by '
                             'source in the host firewall instead)')
        if missing:
            raise SetupError('kernel decap needs the modules '
                             f'{", ".join(missing)}, which this kernel has '
                             'neither loaded nor installed')
        return 'kernel', 'asked for'
    ebpf_missing = ebpf.unavailable()
    if mode == 'ebpf':
        if ebpf_missing:
            raise SetupError(f'eBPF decap unavailable: {ebpf_missing}')
        return 'ebpf', 'asked for'
    if spec.sources:
        if ebpf_missing:
            raise SetupError(f'--se-source needs eBPF decap, unavailable: '
                             f'{ebpf_missing}')
        return 'ebpf', '--se-source: only the eBPF path checks outer sources'
    if not missing:
        return 'kernel', f'the kernel has the {", ".join(kinds)} drivers'
    if ebpf_missing:
        raise SetupError(f'no decap path: the kernel lacks '
                         f'{", ".join(missing)} and {ebpf_missing}')
    return 'ebpf', (f'the kernel has no {", ".join(kinds)} tunnel driver '
                    f'(modules {", ".join(missing)} neither loaded nor '
                    'installed)')


def decap_interfaces(spec, mode):
    """Where decapsulated packets enter the stack."""
    if mode == 'kernel':
        return [d.ifname for d in kernel.devices(
            spec.addresses, spec.encaps, spec.families)]
    return [spec.interface]


def arp_sysctls(spec, sysctl):
    """ARP suppression for IPv4 VIPs: all + lo + the uplink (the kernel
    applies the larger of conf/all and conf/<dev>)."""
    want = {}
    if 4 not in spec.families:
        return want
    for name, value in ARP_SETTINGS.items():
        for ifname in ('all', 'lo', spec.interface):
            key = conf(4, ifname, name)
            if int(sysctl.read(key) or 0) < value:
                want[key] = value
    return want


def rp_filter_sysctls(spec, sysctl, mode):
    """Loose (2) reverse-path filtering where decapsulated IPv4 packets
    enter, when it is strict there now (IPv6 has no rp_filter)."""
    if 4 not in spec.families:
        return {}
    return {conf(4, ifname, 'rp_filter'): 2
            for ifname in decap_interfaces(spec, mode)
            if sysctl.effective(4, ifname, 'rp_filter') == 1}


def ipv6_sysctls(spec, sysctl):
    if 6 in spec.families and sysctl.read(conf(6, 'lo', 'disable_ipv6')) \
            == '1':
        return {conf(6, 'lo', 'disable_ipv6'): 0}
    return {}


def apply_sysctls(want, sysctl, journal):
    lines = []
    for key, value in want.items():
        old = sysctl.read(key)
        if old is None:
            raise SetupError(f'sysctl {sysctl_mod.display(key)} does not '
                             'exist')
        if old != str(value):
            sysctl.write(key, value)
            journal.sysctl_changed(key, old, value)
            lines.append(f'+ sysctl {sysctl_mod.display(key)} {old} -> '
                         f'{value}')
    return lines


def _vip_record(vip):
    return {'ifname': 'lo', 'address': str(vip),
            'prefixlen': netinfo.HOST_PREFIX[vip.version]}


def ensure_vips(spec, ipr, journal):
    lines = []
    lo = netinfo.index(ipr, 'lo')
    on_lo = {a.address for a in netinfo.addresses(ipr, 'lo')}
    for vip in spec.vips:
        for other in netinfo.where(ipr, vip):
            if other.ifname != 'lo':
                lines.append(f'! VIP {vip} is also on {other.ifname}: that '
                             'interface answers ARP/ND for it (remove it '
                             'there)')
        record = _vip_record(vip)
        if vip in on_lo:
            lines.append(f'= VIP {vip}/{record["prefixlen"]} on lo')
            continue
        ipr.addr('add', index=lo, address=str(vip),
                 prefixlen=record['prefixlen'],
                 **({'flags': netinfo.IFA_F_NODAD} if vip.version == 6
                    else {}))
        journal.add('addresses', record)
        lines.append(f'+ VIP {vip}/{record["prefixlen"]} on lo')
    wanted = [_vip_record(v) for v in spec.vips]
    for record in journal.records('addresses'):
        if record not in wanted:
            _del_address(ipr, record)
            journal.discard('addresses', record)
            lines.append(f'- VIP {record["address"]} from lo (no longer '
                         'given)')
    return lines


def _del_address(ipr, record):
    idx = netinfo.index(ipr, record['ifname'])
    present = {str(a.address) for a in netinfo.addresses(
        ipr, record['ifname'])} if idx else set()
    if record['address'] in present:
        ipr.addr('del', index=idx, address=record['address'],
                 prefixlen=record['prefixlen'])


def drop_neigh_proxies(spec, ipr, journal):
    """A proxy-NDP entry for a VIP makes the uplink answer ND for it (with
    forwarding on): the IPv6 form of the ARP problem."""
    lines = []
    for address, ifname in netinfo.neigh_proxies(ipr):
        if address in spec.vips:
            ipr.neigh('del', dst=str(address),
                      ifindex=netinfo.index(ipr, ifname), flags=NTF_PROXY)
            journal.add('neigh_proxies', {'address': str(address),
                                          'ifname': ifname})
            lines.append(f'- proxy-NDP entry for {address} on {ifname}')
    return lines


def ensure_decap(spec, mode, ipr, journal, pin_dir):
    previous = journal.data['decap']
    if previous and previous.get('mode') != mode:
        raise SetupError(f'a previous setup chose {previous.get("mode")} '
                         'decap: run "dsr-member teardown" first')
    if mode == 'kernel':
        wanted = kernel.devices(spec.addresses, spec.encaps, spec.families)
        journal.data['decap'] = {'mode': 'kernel'}
        lines = kernel.ensure(ipr, wanted, journal, netinfo.links(ipr))
        stale = kernel.remove(ipr, journal.records('links'),
                              keep={d.ifname for d in wanted})
        for record in stale:
            journal.discard('links', record)
            lines.append(f'- {record["kind"]} tunnel {record["ifname"]}')
        return lines
    return ebpf.ensure(spec.interface, spec.addresses, pin_dir, journal,
                       sources=spec.sources)


def setup(spec, mode, ipr, sysctl, journal, pin_dir=ebpf.DEFAULT_PIN_DIR,
          module_roots=None):
    """Prepare the host; returns (chosen mode, report lines)."""
    resolve(spec, ipr)
    mode, reason = choose_decap(mode, spec, module_roots)
    lines = [f'decap: {mode} ({reason})']
    lines += apply_sysctls(dict(arp_sysctls(spec, sysctl),
                                **ipv6_sysctls(spec, sysctl)),
                           sysctl, journal)
    lines += ensure_vips(spec, ipr, journal)
    lines += drop_neigh_proxies(spec, ipr, journal)
    lines += ensure_decap(spec, mode, ipr, journal, pin_dir)
    lines += apply_sysctls(rp_filter_sysctls(spec, sysctl, mode), sysctl,
                           journal)
    families = (4, 6)
    lines += mtu.advice(
        spec, spec.interface, netinfo.link(ipr, spec.interface).mtu,
        {f: netinfo.default_route(ipr, f)[1] for f in families},
        {f: netinfo.default_advmss(ipr, f) for f in families})
    journal.data['spec'] = dict(spec.to_dict(), decap=mode, pin_dir=pin_dir)
    return mode, lines


def teardown(ipr, sysctl, journal):
    """Undo what the journal records; returns report lines."""
    lines = []
    record = journal.data['decap']
    if record and record.get('mode') == 'ebpf':
        lines += ebpf.remove(record)
        # What the decap took back is recorded at once: a teardown failing
        # further on and run again must not take it twice.
        if journal.exists:
            journal.save()
    for link in kernel.remove(ipr, journal.records('links')):
        lines.append(f'- {link["kind"]} tunnel {link["ifname"]}')
    for address in journal.records('addresses'):
        _del_address(ipr, address)
        lines.append(f'- VIP {address["address"]} from {address["ifname"]}')
    for entry in journal.records('neigh_proxies'):
        idx = netinfo.index(ipr, entry['ifname'])
        if idx is not None:
            ipr.neigh('add', dst=entry['address'], ifindex=idx,
                      flags=NTF_PROXY)
            lines.append(f'+ proxy-NDP entry for {entry["address"]} on '
                         f'{entry["ifname"]} (restored)')
    for key, change in journal.data['sysctls'].items():
        current = sysctl.read(key)
        if current is None:
            continue  # its interface went (a tunnel device we removed)
        if current != change['new']:
            lines.append(f'! sysctl {sysctl_mod.display(key)} is {current}, '
                         f'not {change["new"]} as setup left it: left alone')
            continue
        sysctl.write(key, change['old'])
        lines.append(f'- sysctl {sysctl_mod.display(key)} {current} -> '
                     f'{change["old"]}')
    return lines
