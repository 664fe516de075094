"""Minimal packet building and parsing for BPF_PROG_TEST_RUN lookups.

Only what `dsrctl lookup` needs: a first packet of a flow towards a
listener, and the outer headers of what the program made of it.  Tests use
scapy; the runtime does not depend on it.
"""

import ipaddress
import socket
import struct

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
_MAC_A = bytes.fromhex('020000000001')
_MAC_B = bytes.fromhex('020000000002')
TCP_SYN = 0x02


def _csum(data):
    if len(data) % 2:
        data += b'\0'
    total = sum(struct.unpack(f'!{len(data) // 2}H', data))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return ~total & 0xffff


def flow_packet(src, sport, dst, dport, protocol):
    """An Ethernet frame opening a flow src:sport -> dst:dport."""
    src, dst = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if src.version != dst.version:
        raise ValueError(f'source {src} and VIP {dst} differ in family')
    proto = {'tcp': socket.IPPROTO_TCP, 'udp': socket.IPPROTO_UDP,
             'sctp': 132}[protocol]
    if proto == socket.IPPROTO_TCP:
        l4 = struct.pack('!HHIIBBHHH', sport, dport, 1, 0, 5 << 4, TCP_SYN,
                         65535, 0, 0)
    elif proto == socket.IPPROTO_UDP:
        l4 = struct.pack('!HHHH', sport, dport, 8, 0)
    else:
        l4 = struct.pack('!HHII', sport, dport, 0, 0)
    if src.version == 4:
        hdr = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(l4), 0, 0x4000,
                          64, proto, 0, src.packed, dst.packed)
        hdr = hdr[:10] + struct.pack('!H', _csum(hdr)) + hdr[12:]
        return _MAC_B + _MAC_A + struct.pack('!H', ETH_P_IP) + hdr + l4
    hdr = struct.pack('!IHBB16s16s', 6 << 28, len(l4), proto, 64,
                      src.packed, dst.packed)
    return _MAC_B + _MAC_A + struct.pack('!H', ETH_P_IPV6) + hdr + l4


def outer_destination(frame):
    """(outer destination, outer protocol) of an encapsulated frame."""
    if len(frame) < 14:
        raise ValueError('frame too short')
    (eth_type,) = struct.unpack('!H', frame[12:14])
    if eth_type == ETH_P_IP and len(frame) >= 34:
        return ipaddress.IPv4Address(frame[30:34]), frame[23]
    if eth_type == ETH_P_IPV6 and len(frame) >= 54:
        return ipaddress.IPv6Address(frame[38:54]), frame[20]
    raise ValueError(f'not an IP frame (type 0x{eth_type:04x})')
