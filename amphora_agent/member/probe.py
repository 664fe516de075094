"""`check --through SE`: send real client-like flows to a VIP through the
network and the SEs, and report where they stopped.

The member sends TCP SYNs from its own address to VIP:port as raw frames
to its next hop (its own stack would deliver them locally: it holds the
VIP).  The router takes them to an SE, whose hash sends each flow to one
member:
  * flows steered here come back inside the tunnel (seen on the uplink
    before any decap), and the decap counters must move for them; the
    decapsulated SYN itself is then dropped by the kernel, as any packet
    "from" one of the host's own addresses arriving from outside is;
  * flows steered to other members are answered by them, from the VIP,
    straight to this member: proof that the SE and those members work.
Nothing at all coming back means the flows stopped before or at the SE.
"""

import dataclasses
import random
import select
import socket
import time

from amphora_agent.member import frames
from amphora_agent.member import netinfo

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
# (protocol, type): destination unreachable / time exceeded, v4 and v6
ICMP_ERRORS = {(1, 3), (1, 11), (58, 1), (58, 3)}


@dataclasses.dataclass
class Result:
    sent: int = 0
    steered: dict = dataclasses.field(default_factory=dict)   # sport -> pkt
    answered: dict = dataclasses.field(default_factory=dict)  # sport -> flags
    icmp: list = dataclasses.field(default_factory=list)
    decapsulated: int = 0
    stopped: str = None     # None, 'before-se', 'steering', 'decap'
    lines: list = dataclasses.field(default_factory=list)


def _next_hop(ipr, se_address, vip):
    """(interface, next-hop address) for frames to the VIP."""
    if se_address.version == vip.version:
        route = netinfo.route_to(ipr, se_address)
        return route['oif'], route['gateway'] or str(se_address)
    ifname, gateway = netinfo.default_route(ipr, vip.version)
    if not ifname:
        raise RuntimeError(f'no IPv{vip.version} default route to send '
                           f'the probe for {vip}')
    return ifname, gateway


def _resolve_mac(ipr, address, ifname, timeout):
    deadline = time.monotonic() + timeout
    family = socket.AF_INET6 if ':' in str(address) else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        while True:
            mac = netinfo.neighbour_mac(ipr, address, ifname)
            if mac:
                return mac
            if time.monotonic() >= deadline:
                raise RuntimeError(f'the next hop {address} on {ifname} '
                                   'does not answer ARP/ND')
            try:
                # Any datagram makes the kernel resolve the next hop.
                s.sendto(b'', (str(address), 9))
            except OSError:
                pass
            time.sleep(0.05)


def _classify(result, packet, src, vip, port, ours, isns):
    """isns: {source port: initial sequence number} of this run's SYNs.
    Only this run's packets count: our SYN back in the tunnel (its
    sequence number), an answer to it (acknowledging it).  Another
    member keeps re-sending its SYN-ACKs for a minute -- this member's
    stack holds the VIP, so its RST never leaves it -- and an earlier
    run's, on a port this run uses again, is not an answer."""
    inner = packet.inner
    if (inner is not None and packet.dst in ours and inner.src == src
            and inner.dst == vip and inner.dport == port
            and inner.sport in isns and inner.seq == isns[inner.sport]):
        result.steered[inner.sport] = packet
    elif (packet.src == vip and packet.dst == src and packet.sport == port
            and packet.dport in isns
            and packet.ack == (isns[packet.dport] + 1) & 0xffffffff):
        result.answered[packet.dport] = packet.flags
    elif ((packet.proto, packet.icmp_type) in ICMP_ERRORS):
        result.icmp.append(f'ICMP type {packet.icmp_type} from '
                           f'{packet.src}')


def run(ipr, spec, se_address, vip, port, decap_counter, count=16,
        timeout=3.0):
    """Probe ``vip``:``port``/tcp through the SE at ``se_address``.

    ``decap_counter``: callable returning this member's decapsulated
    packet count (None: unknown).  Returns a Result with report lines.
    """
    result = Result()
    src = spec.address_of(vip.version)
    if src is None:
        result.lines.append(f'probe: no IPv{vip.version} tunnel address: '
                            f'cannot probe {vip}')
        result.stopped = 'before-se'
        return result
    ifname, hop = _next_hop(ipr, se_address, vip)
    mac = _resolve_mac(ipr, hop, ifname, timeout)
    own_mac = netinfo.link_address(ipr, ifname)
    base = random.randrange(49152, 65535 - count)
    isns = {sport: random.getrandbits(32)
            for sport in range(base, base + count)}
    ours = set(spec.addresses)
    before = decap_counter()
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                       socket.htons(ETH_P_ALL)) as sock:
        sock.bind((ifname, 0))
        for sport, isn in sorted(isns.items()):
            sock.send(frames.tcp_syn(own_mac, mac, src, vip, sport, port,
                                     isn))
        result.sent = count
        deadline = time.monotonic() + timeout
        while len(result.steered) + len(result.answered) < count:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                break
            frame, addr = sock.recvfrom(65535)
            if addr[2] == PACKET_OUTGOING:
                continue
            packet = frames.parse(frame)
            if packet is not None:
                _classify(result, packet, src, vip, port, ours, isns)
    after = decap_counter()
    if before is not None and after is not None:
        result.decapsulated = after - before
    _report(result, spec, se_address, vip, port, src, hop, ifname,
            before is not None)
    return result


def _report(result, spec, se_address, vip, port, src, hop, ifname,
            counted):
    shown = f'[{vip}]' if vip.version == 6 else str(vip)
    lines = result.lines
    lines.append(f'probe: {result.sent} TCP SYNs {src} -> {shown}:{port} '
                 f'sent to next hop {hop} on {ifname}')
    steered, answered = len(result.steered), len(result.answered)
    if steered:
        sources = sorted({str(p.src) for p in result.steered.values()})
        encaps = sorted({p.encap for p in result.steered.values()})
        lines.append(f'probe: {steered} flow(s) came back to this member '
                     f'inside {"/".join(encaps)} from SE '
                     f'{", ".join(sources)}')
        if counted and result.decapsulated < steered:
            result.stopped = 'decap'
            lines.append(f'probe: STOPPED at decapsulation: {steered} '
                         f'arrived, the decap path counted '
                         f'{result.decapsulated}')
        elif counted:
            lines.append(f'probe: decapsulated here ({result.decapsulated} '
                         'counted)')
    if answered:
        resets = sum(1 for f in result.answered.values()
                     if f & frames.TCP_RST)
        lines.append(f'probe: {answered} flow(s) answered from the VIP by '
                     f'other members ({resets} reset: nothing listening '
                     'there)')
    if result.icmp:
        lines.append('probe: ' + '; '.join(sorted(set(result.icmp))))
    if not steered and not answered:
        result.stopped = 'before-se'
        lines.append(f'probe: STOPPED before reaching a member: nothing '
                     f'came back for {result.sent} flows. Is {shown} routed '
                     f'to a live SE ({se_address}) serving {shown}:{port}/'
                     'tcp, and may IP protocols 4, 41 and 47 pass from the '
                     'SEs to the members (security groups)?')
    elif not steered:
        result.stopped = 'steering'
        mine = ', '.join(map(str, spec.addresses))
        lines.append(f'probe: STOPPED at the SE: none of {result.sent} flows '
                     f'was sent to this member ({mine}): is it a member of '
                     f'the pool behind {shown}:{port}, and healthy?')
    if result.stopped is None:
        lines.append('probe: the path through the SE to this member works')
