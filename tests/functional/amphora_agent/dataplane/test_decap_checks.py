"""The member's tc decapsulation checks what the kernel's ip_rcv would,
since it runs first: the outer IPv4 header (version, total length), a
whole inner header of the tunnel's family, and tunnel packets behind IPv6
extension headers.

Frames run through the loaded ``dsr_decap`` program with
BPF_PROG_TEST_RUN; 4in4, 6in6 and GRE (4in6, 6in4).
"""

import struct

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.inet6 import IPv6ExtHdrDestOpt
from scapy.layers.inet6 import IPv6ExtHdrFragment
from scapy.layers.inet6 import IPv6ExtHdrHopByHop
from scapy.layers.inet6 import IPv6ExtHdrRouting
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.functional.amphora_agent.dataplane import decap_frames
from tests.functional.amphora_agent.dataplane.decap_frames import CLIENT4
from tests.functional.amphora_agent.dataplane.decap_frames import CLIENT6
from tests.functional.amphora_agent.dataplane.decap_frames import COUNTER
from tests.functional.amphora_agent.dataplane.decap_frames import GRE_V4
from tests.functional.amphora_agent.dataplane.decap_frames import KINDS
from tests.functional.amphora_agent.dataplane.decap_frames import NEEDS_BPF
from tests.functional.amphora_agent.dataplane.decap_frames import SE4
from tests.functional.amphora_agent.dataplane.decap_frames import SE6
from tests.functional.amphora_agent.dataplane.decap_frames import TC_ACT_OK
from tests.functional.amphora_agent.dataplane.decap_frames import TC_ACT_SHOT
from tests.functional.amphora_agent.dataplane.decap_frames import TUN4
from tests.functional.amphora_agent.dataplane.decap_frames import TUN6
from tests.functional.amphora_agent.dataplane.decap_frames import VIP4
from tests.functional.amphora_agent.dataplane.decap_frames import VIP6

pytestmark = NEEDS_BPF

OTHER6 = "2001:db8:ff::99"   # not an SE
MALFORMED = (TC_ACT_SHOT, {"drop_malformed": 1})


@pytest.fixture
def member():
    with decap_frames.loaded_member("decap-chk") as d:
        yield d


def run(member, frame):
    res, delta = decap_frames.run(member, bytes(frame))
    return res.retval, delta


def inner(family):
    pkt = (IP(src=CLIENT4, dst=VIP4) if family == 4
           else IPv6(src=CLIENT6, dst=VIP6))
    return bytes(pkt / TCP(sport=40001, dport=80, flags="S"))


def tunnel(kind, payload_of_inner=None, src=None):
    """A frame as the member receives it; payload_of_inner: the bytes sent
    as the inner packet (default: a whole packet of the kind's family)."""
    body = (inner(int(kind[-4])) if payload_of_inner is None
            else payload_of_inner)
    outer_family, proto, payload = decap_frames.tunnelled(kind, body)
    if outer_family == 4:
        outer = Ether(type=0x0800) / IP(src=src or SE4, dst=TUN4,
                                        proto=proto)
    else:
        outer = Ether(type=0x86DD) / IPv6(src=src or SE6, dst=TUN6,
                                          nh=proto)
    return bytes(outer / Raw(payload))


def patched(frame, offset, data):
    raw = bytearray(frame)
    raw[offset:offset + len(data)] = data
    return bytes(raw)


# -- a whole inner header of the tunnel's family -------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_an_inner_header_cut_short_is_malformed(member, kind):
    """One byte short of the inner IP header: bpf_skb_adjust_room either
    refuses it (counted drop_internal before) or hands a truncated packet
    on (an IPv6 inner packet after a 20-byte IPv4 outer header)."""
    whole = inner(int(kind[-4]))
    short = whole[:(20 if kind[-4] == "4" else 40) - 1]
    assert run(member, tunnel(kind, short)) == MALFORMED


@pytest.mark.parametrize("kind", KINDS)
def test_an_inner_header_of_the_other_family_is_malformed(member, kind):
    """IPIP (4) carries IPv4, 41 IPv6, GRE what its protocol type says."""
    other = inner(6 if kind[-4] == "4" else 4)
    assert run(member, tunnel(kind, other)) == MALFORMED


@pytest.mark.parametrize("kind", KINDS)
def test_a_whole_inner_header_is_decapsulated(member, kind):
    """Exactly the header and nothing after it is enough."""
    header = inner(int(kind[-4]))[:20 if kind[-4] == "4" else 40]
    assert run(member, tunnel(kind, header)) == (TC_ACT_OK,
                                                 {COUNTER[kind]: 1})


# -- the outer IPv4 header ------------------------------------------------


@pytest.mark.parametrize("kind", ["4in4", "gre-6in4"])
def test_outer_ipv4_version_must_be_4(member, kind):
    frame = tunnel(kind)
    assert run(member, patched(frame, 14, b"\x65")) == MALFORMED


@pytest.mark.parametrize("tot_len", [0, 19, 20, 23])
def test_outer_tot_len_shorter_than_its_header_or_the_tunnel(member,
                                                             tot_len):
    """Below the header length, or leaving no room for the inner header
    inside the outer packet (the inner one would be read from padding)."""
    frame = tunnel("4in4")
    assert run(member, patched(frame, 16, struct.pack("!H", tot_len))) \
        == MALFORMED


def test_outer_tot_len_beyond_the_frame_is_malformed(member):
    frame = tunnel("4in4")
    over = len(frame) - 14 + 1
    assert run(member, patched(frame, 16, struct.pack("!H", over))) \
        == MALFORMED


def test_outer_padding_after_tot_len_is_fine(member):
    """Ethernet padding after the outer packet: tot_len < the frame."""
    frame = tunnel("4in4") + b"\0" * 6
    assert run(member, frame) == (TC_ACT_OK, {"ipip": 1})


def test_the_source_check_comes_first(member):
    """A refused source is drop_source whatever else is wrong."""
    member.set_sources([SE4])
    frame = patched(tunnel("4in4", src="198.18.0.99"), 14, b"\x65")
    assert run(member, frame) == (TC_ACT_SHOT, {"drop_source": 1})


# -- IPv6 extension headers ----------------------------------------------

EXT = {
    "hop-by-hop": lambda: IPv6ExtHdrHopByHop(),
    "routing": lambda: IPv6ExtHdrRouting(addresses=[TUN6]),
    "fragment": lambda: IPv6ExtHdrFragment(m=0, id=7),
    "later-fragment": lambda: IPv6ExtHdrFragment(offset=5, m=0, id=7),
    "dest-options": lambda: IPv6ExtHdrDestOpt(),
    "four": lambda: (IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
                     / IPv6ExtHdrRouting(addresses=[TUN6])
                     / IPv6ExtHdrDestOpt()),
}
TUNNELLED = {4: inner(4), 41: inner(6), 47: GRE_V4 + inner(4)}


def behind_ext(ext, proto, dst=TUN6, src=SE6):
    chain = EXT[ext]()
    last = chain
    while last.payload:
        last = last.payload
    last.nh = proto
    return bytes(Ether(type=0x86DD) / IPv6(src=src, dst=dst) / chain
                 / Raw(TUNNELLED.get(proto, b"\0" * 20)))


@pytest.mark.parametrize("ext", sorted(EXT))
@pytest.mark.parametrize("proto", [4, 41, 47])
def test_a_tunnel_packet_behind_extension_headers_is_dropped(member, ext,
                                                             proto):
    """The SEs never send one, and it is not decapsulated here: dropped,
    counted (it was passed on uncounted, past the source check)."""
    assert run(member, behind_ext(ext, proto)) == MALFORMED


@pytest.mark.parametrize("ext", ["hop-by-hop", "fragment"])
def test_behind_extension_headers_a_refused_source_is_drop_source(member,
                                                                  ext):
    member.set_sources([SE6])
    assert run(member, behind_ext(ext, 4, src=OTHER6)) == (
        TC_ACT_SHOT, {"drop_source": 1})
    assert run(member, behind_ext(ext, 4)) == MALFORMED


@pytest.mark.parametrize("ext", sorted(EXT))
def test_other_traffic_with_extension_headers_is_untouched(member, ext):
    """The member's own IPv6 traffic with extension headers (TCP to its
    tunnel address, or a tunnel packet to another address) passes on,
    unchanged and uncounted."""
    tcp = bytes(Ether(type=0x86DD) / IPv6(src=CLIENT6, dst=TUN6)
                / EXT[ext]() / TCP(dport=22))
    for frame in (tcp, behind_ext(ext, 4, dst=VIP6)):
        res, delta = decap_frames.run(member, frame)
        assert (res.retval, delta) == (TC_ACT_OK, {})
        assert res.data_out == frame
