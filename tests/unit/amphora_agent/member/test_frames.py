"""The probe's frames: valid checksums (scapy recomputes them) and the
parsing of plain and encapsulated replies."""

import pytest
from scapy.layers.inet import GRE
from scapy.layers.inet import IP
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from amphora_agent.member import frames
from tests.unit.amphora_agent.member.fakes import ip

MACS = ('02:00:00:00:00:01', '02:00:00:00:00:02')


@pytest.mark.parametrize('src,dst', [('198.51.100.2', '192.0.2.10'),
                                     ('2001:db8:2::2', '2001:db8:f::10')])
def test_syn_checksums_are_valid(src, dst):
    raw = frames.tcp_syn(MACS[0], MACS[1], src, dst, 40000, 80, 12345)
    packet = Ether(raw)
    assert packet.src == MACS[0] and packet.dst == MACS[1]
    assert packet[TCP].flags == 'S' and packet[TCP].dport == 80
    layer = IP if ':' not in src else IPv6
    fresh = packet.copy()
    if layer is IP:
        del fresh[IP].chksum
    del fresh[TCP].chksum
    fresh = Ether(bytes(fresh))
    assert fresh[TCP].chksum == packet[TCP].chksum
    if layer is IP:
        assert fresh[IP].chksum == packet[IP].chksum
        assert packet[IP].flags == 'DF'


def _inner(src='198.51.100.2', dst='192.0.2.10'):
    layer = IP if ':' not in dst else IPv6
    return layer(src=src, dst=dst) / TCP(sport=40001, dport=80, flags='S')


@pytest.mark.parametrize('outer,inner,encap', [
    (IP(src='198.18.1.2', dst='198.51.100.2'), _inner(), 'ipip'),
    (IP(src='198.18.1.2', dst='198.51.100.2'),
     _inner('2001:db8:2::2', '2001:db8:f::10'), 'ipip'),
    (IPv6(src='2001:db8:1::2', dst='2001:db8:2::2'), _inner(), 'ipip'),
    (IP(src='198.18.1.2', dst='198.51.100.2') / GRE(proto=0x0800),
     _inner(), 'gre'),
    (IPv6(src='2001:db8:1::2', dst='2001:db8:2::2') / GRE(proto=0x86dd),
     _inner('2001:db8:2::2', '2001:db8:f::10'), 'gre'),
])
def test_parse_encapsulated(outer, inner, encap):
    packet = frames.parse(bytes(Ether() / outer / inner))
    assert packet.encap == encap
    assert packet.dst in (ip('198.51.100.2'), ip('2001:db8:2::2'))
    assert packet.inner.src == ip(inner.src) and packet.inner.dport == 80
    assert packet.inner.sport == 40001
    assert packet.inner.flags == frames.TCP_SYN


def test_parse_a_syn_ack_and_non_ip():
    reply = Ether() / IP(src='192.0.2.10', dst='198.51.100.2') / TCP(
        sport=80, dport=40001, flags='SA', seq=7, ack=0xfffffffe)
    packet = frames.parse(bytes(reply))
    assert (packet.src, packet.sport, packet.dport) == (
        ip('192.0.2.10'), 80, 40001)
    assert (packet.seq, packet.ack) == (7, 0xfffffffe)
    assert packet.flags == frames.TCP_SYN | frames.TCP_ACK
    assert packet.inner is None
    assert frames.parse(bytes(Ether(type=0x0806) / (b'\0' * 28))) is None
    assert frames.parse(b'\0' * 10) is None
