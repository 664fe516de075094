"""Files that make a member's preparation survive a reboot (--persist), and
the cloud-init user-data that prepares a member at first boot.

--persist writes, below a root directory (/ on a real host):
  etc/sysctl.d/90-octavia-dsr-member.conf      ARP suppression and loose
                                               rp_filter from early boot
  etc/systemd/network/90-octavia-dsr-lo.network
                                               the VIPs on lo (hosts whose
                                               network is systemd-networkd)
  etc/systemd/network/90-octavia-dsr-<dev>.netdev + 90-octavia-dsr-tunnels
  .network                                     the kernel tunnels (kernel
                                               decap only)
  etc/systemd/system/octavia-dsr-member.service + its multi-user.target.wants
                                               link: runs `dsr-member setup`
                                               at every boot (the eBPF decap
                                               lives only in memory)
"""

import hashlib
import os
import shlex

from amphora_agent.member import host
from amphora_agent.member import kernel
from amphora_agent.member import sysctl as sysctl_mod

UNIT = 'octavia-dsr-member.service'
SYSCTL_FILE = 'etc/sysctl.d/90-octavia-dsr-member.conf'
NETWORKD_DIR = 'etc/systemd/network'
UNIT_DIR = 'etc/systemd/system'
SCRIPT = '/usr/local/sbin/octavia-dsr-member-setup'
HEADER = '# Written by dsr-member (octavia-dsr); "dsr-member teardown" ' \
         'removes it.\n'


def setup_argv(spec, mode, command='dsr-member', state_file=None,
               pin_dir=None):
    argv = [command, 'setup']
    for vip in spec.vips:
        argv += ['--vip', str(vip)]
    for encap in spec.encaps:
        argv += ['--encap', encap]
    argv += ['--decap', mode]
    if spec.interface:
        argv += ['--interface', spec.interface]
    for address in spec.addresses:
        argv += ['--address', str(address)]
    for port in spec.ports:
        argv += ['--port', str(port)]
    for source in spec.sources:
        argv += ['--se-source', str(source)]
    if state_file:
        argv += ['--state-file', state_file]
    if pin_dir:
        argv += ['--decap-pin-dir', pin_dir]
    return argv


def persisted_sysctls(spec, mode):
    """What the sysctl.d file sets: the target values, whatever the host
    has now (host.arp_sysctls only lists what must change)."""
    values = {}
    if 4 in spec.families:
        for name, value in host.ARP_SETTINGS.items():
            for ifname in ('all', 'lo', spec.interface):
                values[sysctl_mod.conf(4, ifname, name)] = value
        for ifname in host.decap_interfaces(spec, mode):
            values[sysctl_mod.conf(4, ifname, 'rp_filter')] = 2
    return values


def sysctl_conf(values):
    return HEADER + ''.join(f'{sysctl_mod.display(k)} = {v}\n'
                            for k, v in values.items())


def lo_network(spec):
    text = HEADER + '[Match]\nName=lo\n\n[Link]\nRequiredForOnline=no\n'
    for vip in spec.vips:
        prefix = 32 if vip.version == 4 else 128
        text += f'\n[Address]\nAddress={vip}/{prefix}\n'
        if vip.version == 6:
            text += 'DuplicateAddressDetection=none\n'
    return text


def tunnel_netdev(device):
    _, _, _, mode = next(d for d in kernel.PLAN.values()
                         if d[0] == device.ifname)
    text = (HEADER + f'[NetDev]\nName={device.ifname}\nKind={device.kind}\n'
            f'\n[Tunnel]\nLocal={device.local}\nRemote=any\n'
            'Independent=yes\n')
    if device.kind == 'ip6tnl':
        text += f'Mode={mode}\n'
    return text


def tunnels_network(devices):
    return (HEADER + '[Match]\nName=' + ' '.join(d.ifname for d in devices)
            + '\n\n[Link]\nRequiredForOnline=no\n\n[Network]\n'
            'LinkLocalAddressing=no\nConfigureWithoutCarrier=yes\n')


def unit(argv):
    return (HEADER + '[Unit]\nDescription=octavia-dsr tier-1 member: VIPs '
            'on lo without ARP/ND, decapsulation\n'
            'Wants=network-online.target\nAfter=network-online.target\n\n'
            '[Service]\nType=oneshot\nRemainAfterExit=yes\n'
            f'ExecStart={shlex.join(argv)}\n\n'
            '[Install]\nWantedBy=multi-user.target\n')


def persist_files(spec, mode, argv):
    """{path relative to the root: content} (content None: a symlink to
    the unit, what `systemctl enable` makes)."""
    files = {SYSCTL_FILE: sysctl_conf(persisted_sysctls(spec, mode)),
             f'{NETWORKD_DIR}/90-octavia-dsr-lo.network': lo_network(spec),
             f'{UNIT_DIR}/{UNIT}': unit(argv),
             f'{UNIT_DIR}/multi-user.target.wants/{UNIT}': None}
    if mode == 'kernel':
        devices = kernel.devices(spec.addresses, spec.encaps, spec.families)
        for device in devices:
            files[f'{NETWORKD_DIR}/90-octavia-dsr-{device.ifname}.netdev'] = \
                tunnel_netdev(device)
        files[f'{NETWORKD_DIR}/90-octavia-dsr-tunnels.network'] = \
            tunnels_network(devices)
    return files


def _digest(path):
    if os.path.islink(path):
        return 'link:' + os.readlink(path)
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def write(root, files, journal):
    """Write ``files`` below ``root``; record each with its digest."""
    lines = []
    for rel, content in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if content is None:
            target = f'/{UNIT_DIR}/{UNIT}'
            if os.path.islink(path) and os.readlink(path) == target:
                continue
            if os.path.lexists(path):
                os.unlink(path)
            os.symlink(target, path)
        else:
            tmp = f'{path}.tmp'
            with open(tmp, 'w') as f:
                f.write(content)
            os.replace(tmp, path)
        journal.data['files'][path] = _digest(path)
        lines.append(f'+ wrote {path}')
    return lines


def remove(journal):
    """Remove the files setup wrote, unless changed since."""
    lines = []
    for path, digest in sorted(journal.data['files'].items()):
        if not os.path.lexists(path):
            continue
        if _digest(path) != digest:
            lines.append(f'! {path} changed since setup wrote it: left')
            continue
        os.unlink(path)
        lines.append(f'- removed {path}')
    return lines


# -- cloud-init ------------------------------------------------------------

def boot_script(spec, argv):
    """Shell run at every boot: dsr-member when the image has it, else the
    kernel path with iproute2 (stock cloud kernels ship the tunnel
    modules).  Addresses not given are found at boot."""
    iface = spec.interface or ''
    lines = ['#!/bin/sh', '# octavia-dsr tier-1 member preparation '
             '(written by dsr-member cloud-init)', 'set -e',
             'if command -v dsr-member >/dev/null 2>&1; then',
             f'    exec {shlex.join(argv)}', 'fi',
             f'IF={shlex.quote(iface)}',
             '[ -n "$IF" ] || IF=$(ip -o route show default | '
             "awk '{print $5; exit}')",
             '[ -n "$IF" ] || IF=$(ip -o -6 route show default | '
             "awk '{print $5; exit}')"]
    for family in (4, 6):
        given = spec.address_of(family)
        lines.append(f'A{family}={given}' if given else
                     f'A{family}=$(ip -o -{family} addr show dev "$IF" '
                     "scope global | awk '{split($4, a, \"/\"); print a[1]; "
                     "exit}')")
    if 4 in spec.families:
        # ARP suppression before the VIPs appear.
        for name, value in host.ARP_SETTINGS.items():
            for ifname in ('all', 'lo', '$IF'):
                lines.append(f'echo {value} > "/proc/sys/net/ipv4/conf/'
                             f'{ifname}/{name}"')
    for vip in spec.vips:
        if vip.version == 4:
            lines.append(f'ip addr replace {vip}/32 dev lo')
        else:
            lines.append(f'ip -6 addr replace {vip}/128 dev lo nodad')
    for family in (4, 6):
        for ifname, kind, _, kmode in kernel.plan(family, spec.encaps,
                                                  spec.families):
            lines.append(f'if [ -n "$A{family}" ] && ! ip link show {ifname} '
                         '>/dev/null 2>&1; then')
            lines.append('    ' + kernel.iproute2_command(
                ifname, kind, kmode, f'"$A{family}"'))
            lines.append('fi')
            lines.append(f'if ip link show {ifname} >/dev/null 2>&1; then')
            lines.append(f'    ip link set {ifname} up')
            if 4 in spec.families:
                lines.append(f'    echo 2 > /proc/sys/net/ipv4/conf/{ifname}'
                             '/rp_filter')
            lines.append('fi')
    return '\n'.join(lines) + '\n'


def _yaml_block(text, indent):
    """A YAML literal block (|) of ``text`` (ending in a newline)."""
    pad = ' ' * indent
    lines = text.splitlines(keepends=True)
    return '|\n' + ''.join(pad + line if line.strip() else line
                           for line in lines)


def cloud_init(spec, mode, argv):
    """#cloud-config user-data preparing the member at first boot (and, by
    the unit it enables, at every boot after).  Written by hand: three
    files and two commands need no YAML library."""
    files = [(SCRIPT, '0755', boot_script(spec, argv)),
             (f'/{UNIT_DIR}/{UNIT}', None, unit([SCRIPT]))]
    if 4 in spec.families:
        files.append(('/' + SYSCTL_FILE, None, sysctl_conf(
            {sysctl_mod.conf(4, n, name): v
             for name, v in host.ARP_SETTINGS.items()
             for n in ('all', 'lo')})))
    out = ['#cloud-config\n# octavia-dsr tier-1 member: VIPs '
           + ', '.join(map(str, spec.vips)) + '\n', 'write_files:\n']
    for path, permissions, content in files:
        out.append(f'- path: {path}\n')
        if permissions:
            out.append(f"  permissions: '{permissions}'\n")
        out.append('  content: ' + _yaml_block(content, 4))
    out.append('runcmd:\n- [systemctl, daemon-reload]\n'
               f'- [systemctl, enable, --now, {UNIT}]\n')
    return ''.join(out)
