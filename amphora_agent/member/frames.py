"""Building the probe's TCP SYN frames and reading what comes back
(IPv4/IPv6, plain or inside IPIP / IPv6-in-IP / GRE)."""

import dataclasses
import ipaddress
import struct

from amphora_agent.dataplane import packets

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
IPPROTO_ICMP = 1
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_IPV6 = 41
IPPROTO_GRE = 47
IPPROTO_ICMPV6 = 58
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10
# The Internet checksum of the dataplane's own test-run packets.
checksum = packets._csum
ENCAP_NAMES = {IPPROTO_IPIP: 'ipip', IPPROTO_IPV6: 'ipip',
               IPPROTO_GRE: 'gre'}


def _mac(text):
    return bytes.fromhex(text.replace(':', ''))


def tcp_syn(src_mac, dst_mac, src, dst, sport, dport, seq):
    """An Ethernet frame carrying a TCP SYN (MSS option 1200) with valid
    checksums."""
    src, dst = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    options = struct.pack('!BBH', 2, 4, 1200)
    header = struct.pack('!HHIIBBHHH', sport, dport, seq, 0,
                         (5 + len(options) // 4) << 4, TCP_SYN, 64240, 0, 0)
    segment = header + options
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack(
            '!BBH', 0, IPPROTO_TCP, len(segment))
    else:
        pseudo = src.packed + dst.packed + struct.pack(
            '!I3xB', len(segment), IPPROTO_TCP)
    csum = checksum(pseudo + segment)
    segment = segment[:16] + struct.pack('!H', csum) + segment[18:]
    if src.version == 4:
        ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(segment), 0,
                         0x4000, 64, IPPROTO_TCP, 0, src.packed, dst.packed)
        ip = ip[:10] + struct.pack('!H', checksum(ip)) + ip[12:]
        eth_type = ETH_P_IP
    else:
        ip = struct.pack('!IHBB16s16s', 6 << 28, len(segment), IPPROTO_TCP,
                         64, src.packed, dst.packed)
        eth_type = ETH_P_IPV6
    return (_mac(dst_mac) + _mac(src_mac) + struct.pack('!H', eth_type)
            + ip + segment)


@dataclasses.dataclass
class Packet:
    src: object
    dst: object
    proto: int
    sport: int = None        # TCP
    dport: int = None
    flags: int = None
    seq: int = None
    ack: int = None
    icmp_type: int = None
    encap: str = None        # set on an outer packet
    inner: 'Packet' = None


def _ip(data, version):
    """Parse an IP packet starting at data[0]; None when it is not one."""
    if version == 4:
        if len(data) < 20 or data[0] >> 4 != 4:
            return None
        hlen = (data[0] & 0x0f) * 4
        proto = data[9]
        src, dst = data[12:16], data[16:20]
    else:
        if len(data) < 40 or data[0] >> 4 != 6:
            return None
        hlen, proto = 40, data[6]
        src, dst = data[8:24], data[24:40]
    packet = Packet(ipaddress.ip_address(bytes(src)),
                    ipaddress.ip_address(bytes(dst)), proto)
    payload = data[hlen:]
    if proto == IPPROTO_TCP and len(payload) >= 14:
        packet.sport, packet.dport, packet.seq, packet.ack = struct.unpack(
            '!HHII', payload[:12])
        packet.flags = payload[13]
    elif proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) and payload:
        packet.icmp_type = payload[0]
    elif proto in (IPPROTO_IPIP, IPPROTO_IPV6):
        packet.encap = ENCAP_NAMES[proto]
        packet.inner = _ip(payload, 4 if proto == IPPROTO_IPIP else 6)
    elif proto == IPPROTO_GRE and len(payload) >= 4:
        (ptype,) = struct.unpack('!H', payload[2:4])
        packet.encap = 'gre'
        if ptype in (ETH_P_IP, ETH_P_IPV6):
            packet.inner = _ip(payload[4:], 4 if ptype == ETH_P_IP else 6)
    return packet


def parse(frame):
    """The IP packet of an Ethernet frame, or None."""
    if len(frame) < 14:
        return None
    (eth_type,) = struct.unpack('!H', frame[12:14])
    if eth_type == ETH_P_IP:
        return _ip(frame[14:], 4)
    if eth_type == ETH_P_IPV6:
        return _ip(frame[14:], 6)
    return None
