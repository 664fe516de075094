"""Decapsulation by the kernel's own tunnel drivers (pyroute2 requests).

One receive-only device per (tunnel address, protocol): a tunnel with the
member's address as local end and any remote end takes every packet of its
protocol sent to that address, from whichever SE (the kernel's
local-match/remote-any lookup).  That avoids both the per-netns fallback
devices (tunl0, sit0, ip6tnl0: absent when net.core.fb_tunnels_only_for_
init_net is set, and ip6tnl0 only takes 6in6) and the single collect_md
("external") slot another tool may own.

    outer   SE encap ipip                  SE encap gre
    IPv4    ipip (4in4) + sit (6in4)       gre (both inner families)
    IPv6    ip6tnl mode any (4in6, 6in6)   ip6gre (both inner families)

Decapsulated packets arrive on these devices, whose source (the client)
routes out of the uplink, so strict rp_filter would drop them: setup sets
rp_filter=2 (loose) on each.
"""

import dataclasses
import os

IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41

# kind -> kernel module providing it (also its /sys/module name)
MODULES = {'ipip': 'ipip', 'sit': 'sit', 'ip6tnl': 'ip6_tunnel',
           'gre': 'ip_gre', 'ip6gre': 'ip6_gre'}


@dataclasses.dataclass(frozen=True)
class TunnelDevice:
    ifname: str
    kind: str
    local: str          # the member's tunnel address
    proto: int = None   # IFLA_IPTUN_PROTO where the kind has one

    @property
    def request(self):
        """pyroute2 IPRoute.link('add', ...) keywords."""
        kwargs = {'ifname': self.ifname, 'kind': self.kind,
                  f'{self.kind}_local': self.local}
        if self.proto is not None:
            kwargs[f'{self.kind}_proto'] = self.proto
        return kwargs

    def matches(self, link):
        """Whether an existing netinfo.Link does this device's job."""
        if link.kind != self.kind:
            return False
        prefix = f'IFLA_{self.kind.upper()}_'
        local = link.data.get(prefix + 'LOCAL')
        remote = link.data.get(prefix + 'REMOTE')
        proto = link.data.get(prefix + 'PROTO')
        return str(local) == self.local \
            and remote in (None, '0.0.0.0', '::') \
            and (self.proto is None or proto in (None, 0, self.proto))


# (outer family, encap, inner family or None for both) ->
# (device name, kind, IFLA_IPTUN_PROTO or None, iproute2 "mode" or None)
PLAN = {
    (4, 'ipip', 4): ('dsr-ipip', 'ipip', IPPROTO_IPIP, None),
    (4, 'ipip', 6): ('dsr-sit', 'sit', IPPROTO_IPV6, 'ip6ip'),
    (4, 'gre', None): ('dsr-gre', 'gre', None, None),
    # proto 0: "mode any", IPv4 and IPv6 inside IPv6.
    (6, 'ipip', None): ('dsr-ip6tnl', 'ip6tnl', 0, 'any'),
    (6, 'gre', None): ('dsr-ip6gre', 'ip6gre', None, None),
}


def plan(outer_family, encaps, vip_families):
    """[(ifname, kind, proto, iproute2 mode)] a tunnel address of
    ``outer_family`` needs."""
    result = []
    for (outer, encap, inner), device in PLAN.items():
        if outer == outer_family and encap in encaps and (
                inner is None or inner in vip_families):
            result.append(device)
    return result


def devices(addresses, encaps, vip_families):
    """The TunnelDevices a member with these tunnel addresses needs."""
    return [TunnelDevice(ifname, kind, str(address), proto)
            for address in addresses
            for ifname, kind, proto, _ in plan(address.version, encaps,
                                               vip_families)]


def iproute2_command(ifname, kind, mode, local):
    """The `ip link add` equivalent (cloud-init, fix lines)."""
    return (f'ip link add {ifname} type {kind}'
            + (f' mode {mode}' if mode else '')
            + f' local {local} remote any')


def module_state(module, sys_root='/sys', modules_root='/lib/modules',
                 release=None):
    """'present' (loaded or built in: both show in /sys/module), 'loadable'
    (listed by modules.dep / modules.builtin), or None."""
    if os.path.isdir(os.path.join(sys_root, 'module', module)):
        return 'present'
    release = release or os.uname().release
    for name in ('modules.dep', 'modules.builtin'):
        path = os.path.join(modules_root, release, name)
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        for ext in ('.ko:', '.ko.xz:', '.ko.zst:', '.ko.gz:', '.ko\n'):
            if f'/{module}{ext}' in text:
                return 'loadable'
    return None


def missing_support(kinds, **roots):
    """The kernel modules (of ``kinds``) neither present nor loadable."""
    return sorted({MODULES[k] for k in kinds
                   if module_state(MODULES[k], **roots) is None})


def ensure(ipr, wanted, journal, links):
    """Create (or adopt) every wanted TunnelDevice and bring it up.

    ``links``: netinfo.links() before the change.  Returns report lines.
    Devices it creates are recorded; a matching device already there is
    used and left alone by teardown.
    """
    lines = []
    by_name = {link.ifname: link for link in links}
    for dev in wanted:
        existing = by_name.get(dev.ifname)
        if existing is not None and not dev.matches(existing):
            raise RuntimeError(
                f'{dev.ifname} exists but is not a {dev.kind} tunnel with '
                f'local {dev.local} and any remote: remove it or rename it')
        if existing is None:
            ipr.link('add', **dev.request)
            journal.add('links', {'ifname': dev.ifname, 'kind': dev.kind})
            lines.append(f'+ {dev.kind} tunnel {dev.ifname} local '
                         f'{dev.local} remote any')
        else:
            lines.append(f'= {dev.kind} tunnel {dev.ifname} (already there)')
        idx = ipr.link_lookup(ifname=dev.ifname)[0]
        if existing is None or not existing.up:
            ipr.link('set', index=idx, state='up')
    return lines


def remove(ipr, records, keep=()):
    """Delete the recorded devices not in ``keep`` (names); returns the
    removed records."""
    removed = []
    for record in records:
        if record['ifname'] in keep:
            continue
        found = ipr.link_lookup(ifname=record['ifname'])
        if found:
            ipr.link('del', index=found[0])
        removed.append(record)
    return removed
