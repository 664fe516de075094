"""Diagnosis of a member: one Problem per broken setting, each with the
command that fixes it.  Reads only; changes nothing."""

import dataclasses
import shlex

from amphora_agent.member import ebpf
from amphora_agent.member import host
from amphora_agent.member import kernel
from amphora_agent.member import listening
from amphora_agent.member import mtu
from amphora_agent.member import netinfo
from amphora_agent.member import sysctl as sysctl_mod

conf = sysctl_mod.conf


@dataclasses.dataclass
class Problem:
    what: str
    fix: str

    def __str__(self):
        return f'problem: {self.what}; fix: {self.fix}'


def _add_vip_command(vip):
    if vip.version == 4:
        return f'ip addr add {vip}/32 dev lo'
    return f'ip -6 addr add {vip}/128 dev lo nodad'


def vips(spec, ipr):
    problems = []
    for vip in spec.vips:
        held = netinfo.where(ipr, vip)
        on_lo = [a for a in held if a.ifname == 'lo']
        for other in held:
            if other.ifname != 'lo':
                problems.append(Problem(
                    f'VIP {vip} is on {other.ifname}, which answers ARP/ND '
                    'for it (it must only be on lo)',
                    f'ip addr del {vip}/{other.prefixlen} dev '
                    f'{other.ifname}'))
        if not on_lo:
            problems.append(Problem(
                f'VIP {vip} is not on lo: the member drops the '
                'decapsulated packets for it', _add_vip_command(vip)))
        elif on_lo[0].tentative:
            problems.append(Problem(
                f'VIP {vip} on lo is tentative or failed duplicate address '
                'detection: it is not usable',
                f'ip -6 addr del {vip}/128 dev lo && '
                + _add_vip_command(vip)))
    return problems


def arp(spec, sysctl):
    if not spec.vips_of(4):
        return []
    problems = []
    uplink = spec.interface
    texts = {
        'arp_ignore': f'{uplink} would answer ARP for the VIPs held on lo',
        'arp_announce': f'ARP requests from {uplink} could announce a VIP '
                        'as their sender address',
    }
    for name, wanted in host.ARP_SETTINGS.items():
        value = sysctl.effective(4, uplink, name)
        if value < wanted:
            problems.append(Problem(
                f'{texts[name]} ({name} {value}, needs {wanted})',
                sysctl_mod.command({conf(4, n, name): wanted
                                    for n in ('all', uplink)})))
    return problems


def neighbour_discovery(spec, ipr):
    return [Problem(f'proxy-NDP entry for VIP {address} on {ifname}: '
                    f'{ifname} answers neighbour solicitations for it',
                    f'ip -6 neigh del proxy {address} dev {ifname}')
            for address, ifname in netinfo.neigh_proxies(ipr)
            if address in spec.vips]


def rp_filter(spec, sysctl, mode):
    if not spec.vips_of(4) or mode is None:
        return []
    problems = []
    for ifname in host.decap_interfaces(spec, mode):
        if sysctl.read(conf(4, ifname, 'rp_filter')) is None:
            continue  # reported as a missing decap path
        if sysctl.effective(4, ifname, 'rp_filter') == 1:
            why = ('its decapsulated packets all come from clients routed '
                   'out of another interface' if mode == 'kernel' else
                   'decapsulated packets from clients whose route leaves '
                   'by another interface are dropped')
            problems.append(Problem(
                f'rp_filter is strict (1) on {ifname}, where decapsulated '
                f'packets arrive: {why}',
                sysctl_mod.command({conf(4, ifname, 'rp_filter'): 2})))
    return problems


def detect_mode(spec, ipr):
    """The decap path in place: 'ebpf', 'kernel' or None."""
    if ebpf.is_attached(spec.interface):
        return 'ebpf'
    wanted = kernel.devices(spec.addresses, spec.encaps, spec.families)
    links = netinfo.links(ipr)
    if wanted and any(d.matches(link) and link.up
                      for d in wanted for link in links):
        return 'kernel'
    return None


def decap(spec, ipr, mode, pin_dir, setup_command):
    fix = setup_command
    if mode is None:
        return [Problem(
            f'no decap path: neither the decap program on '
            f'{spec.interface} nor kernel tunnel devices for '
            + ', '.join(map(str, spec.addresses)), fix)]
    problems = []
    if mode == 'ebpf':
        if not ebpf.is_attached(spec.interface):
            return [Problem(f'the decap program is not attached to '
                            f'{spec.interface}', fix)]
        pinned = ebpf.state(pin_dir)
        if pinned is None and ebpf.present(pin_dir):
            return [Problem(f'the decap pins under {pin_dir} are an '
                            'earlier release\'s (setup upgrades them)', fix)]
        if pinned is None:
            return [Problem(f'the decap program on {spec.interface} has no '
                            f'pins under {pin_dir}: its addresses cannot '
                            'be checked', fix)]
        present = pinned['addresses']
        for address in spec.addresses:
            if str(address) not in present:
                problems.append(Problem(
                    f'the decap program does not decapsulate packets to '
                    f'{address}', fix))
        for source in spec.sources:
            if str(source) not in pinned['sources']:
                problems.append(Problem(
                    f'the decap program drops tunnel packets from SE '
                    f'source {source}', fix))
        for address in spec.addresses if spec.sources else ():
            if str(address) in present and \
                    str(address) not in pinned['restricted']:
                shared = str(address) in pinned.get('given_open', ())
                problems.append(Problem(
                    f'the decap program decapsulates tunnel packets to '
                    f'{address} from any source, not only the SEs\''
                    + (' (another setup, or dsrctl, gives it without '
                       'SE sources)' if shared else ''),
                    'run the other setups of this tunnel address with '
                    '--se-source' if shared else fix))
        if not ebpf.runs_pinned(spec.interface, pin_dir):
            problems.append(Problem(
                f'{spec.interface} runs another decap program than the '
                f'one pinned under {pin_dir} (an earlier release\'s)', fix))
        return problems
    links = netinfo.links(ipr)
    for dev in kernel.devices(spec.addresses, spec.encaps, spec.families):
        if not any(dev.matches(link) and link.up for link in links):
            problems.append(Problem(
                f'no {dev.kind} tunnel device up for {dev.local} (SE '
                'packets of that kind are dropped)', fix))
    return problems


def listeners(spec):
    problems = []
    for vip, port in listening.missing(spec.vips, spec.ports):
        shown = f'[{vip}]' if vip.version == 6 else str(vip)
        wildcard = '[::]' if vip.version == 6 else '0.0.0.0'
        problems.append(Problem(
            f'nothing listens on {shown}:{port.number}/{port.protocol} '
            '(a tier-1 member must serve every listener port of the VIP)',
            f'start the service bound to {shown}:{port.number} or '
            f'{wildcard}:{port.number}'))
    return problems


def mtu_fit(spec, ipr):
    link = netinfo.link(ipr, spec.interface)
    families = (4, 6)
    short = mtu.shortfall(spec, link.mtu, {
        f: netinfo.default_advmss(ipr, f) for f in families})
    if short is None:
        return []
    needed, worst, mss = short
    gateways = {f: netinfo.default_route(ipr, f)[1] for f in families}
    return [Problem(f'{spec.interface} MTU {link.mtu} < {needed} needed for '
                    f'{spec.client_mtu}-byte client packets '
                    f'({worst.label()})',
                    mtu.fix(spec.interface, needed, mss, gateways))]


def run(spec, ipr, sysctl, pin_dir, setup_argv, mode=None):
    """Every Problem found (an empty list: the member looks ready)."""
    host.resolve(spec, ipr)
    # What is in place wins; the recorded mode names what is missing.
    mode = detect_mode(spec, ipr) or mode
    problems = vips(spec, ipr) + arp(spec, sysctl) \
        + neighbour_discovery(spec, ipr)
    problems += decap(spec, ipr, mode, pin_dir, shlex.join(setup_argv))
    problems += rp_filter(spec, sysctl, mode)
    problems += listeners(spec) + mtu_fit(spec, ipr)
    return problems


def decap_counter(spec, ipr, mode, pin_dir):
    """A callable counting this member's decapsulated packets (for the
    probe); it returns None when nothing can be counted."""
    def count():
        if mode == 'ebpf':
            stats = ebpf.stats(pin_dir)
            return None if stats is None else (
                stats['ipip'] + stats['ip6ip'] + stats['gre'])
        if mode == 'kernel':
            wanted = kernel.devices(spec.addresses, spec.encaps,
                                    spec.families)
            return sum(link.rx_packets for link in netinfo.links(ipr)
                       if any(d.matches(link) for d in wanted))
        return None
    return count
