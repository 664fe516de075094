"""ECN through the member's tc decapsulation (RFC 6040, section 4.2).

The SE copies the inner ECN field to the outer header; a congested router
on the way may then mark the outer header CE.  Frames run through the
loaded ``dsr_decap`` program with BPF_PROG_TEST_RUN: an outer CE turns an
ECT(0)/ECT(1) inner packet into CE (IPv4 header checksum fixed), an outer
CE on a Not-ECT inner packet drops it (``drop_malformed``), anything else
leaves the inner packet as it was.  4in4, 6in6 and GRE (4in6, 6in4).
"""

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.functional.amphora_agent.dataplane import decap_frames
from tests.functional.amphora_agent.dataplane.decap_frames import CLIENT4
from tests.functional.amphora_agent.dataplane.decap_frames import CLIENT6
from tests.functional.amphora_agent.dataplane.decap_frames import COUNTER
from tests.functional.amphora_agent.dataplane.decap_frames import KINDS
from tests.functional.amphora_agent.dataplane.decap_frames import NEEDS_BPF
from tests.functional.amphora_agent.dataplane.decap_frames import run
from tests.functional.amphora_agent.dataplane.decap_frames import SE4
from tests.functional.amphora_agent.dataplane.decap_frames import SE6
from tests.functional.amphora_agent.dataplane.decap_frames import TC_ACT_OK
from tests.functional.amphora_agent.dataplane.decap_frames import TC_ACT_SHOT
from tests.functional.amphora_agent.dataplane.decap_frames import TUN4
from tests.functional.amphora_agent.dataplane.decap_frames import TUN6
from tests.functional.amphora_agent.dataplane.decap_frames import tunnelled
from tests.functional.amphora_agent.dataplane.decap_frames import VIP4
from tests.functional.amphora_agent.dataplane.decap_frames import VIP6

pytestmark = NEEDS_BPF

NOT_ECT, ECT1, ECT0, CE = 0, 1, 2, 3
DSCP = 0xB8  # EF: must survive untouched


@pytest.fixture(scope="module")
def member():
    with decap_frames.loaded_member("decap") as d:
        yield d


def inner(family, ecn):
    if family == 4:
        pkt = IP(src=CLIENT4, dst=VIP4, tos=DSCP | ecn, id=7)
    else:
        pkt = IPv6(src=CLIENT6, dst=VIP6, tc=DSCP | ecn, fl=0x12345)
    return bytes(pkt / TCP(sport=40001, dport=80, flags="A")
                 / Raw(b"data"))


def tunnel(kind, outer_ecn, inner_ecn):
    """A frame as the member receives it: kind is "4in4", "6in6",
    "gre-4in6" or "gre-6in4"."""
    outer_family, proto, payload = tunnelled(
        kind, inner(int(kind[-4]), inner_ecn))
    if outer_family == 4:
        outer = Ether(type=0x0800) / IP(src=SE4, dst=TUN4, proto=proto,
                                        flags="DF", tos=DSCP | outer_ecn)
    else:
        outer = Ether(type=0x86DD) / IPv6(src=SE6, dst=TUN6, nh=proto,
                                          tc=DSCP | outer_ecn)
    return bytes(outer / Raw(payload))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("outer_ecn,inner_ecn,result", [
    # A router marked the outer header: the mark reaches the inner one.
    (CE, ECT0, CE), (CE, ECT1, CE), (CE, CE, CE),
    # No mark: the inner header as it was.
    (NOT_ECT, NOT_ECT, NOT_ECT), (ECT0, ECT0, ECT0), (ECT1, ECT1, ECT1),
], ids=["ce-ect0", "ce-ect1", "ce-ce", "not-ect", "ect0", "ect1"])
def test_inner_ecn_after_decapsulation(member, kind, outer_ecn, inner_ecn,
                                       result):
    res, delta = run(member, tunnel(kind, outer_ecn, inner_ecn))
    assert (res.retval, delta) == (TC_ACT_OK, {COUNTER[kind]: 1})
    # Byte for byte the inner packet with that ECN field and a valid
    # checksum (scapy computes it): nothing else changed.
    assert res.data_out[14:] == inner(int(kind[-4]), result)


@pytest.mark.parametrize("kind", KINDS)
def test_outer_ce_on_a_not_ect_inner_packet_is_dropped(member, kind):
    res, delta = run(member, tunnel(kind, CE, NOT_ECT))
    assert (res.retval, delta) == (TC_ACT_SHOT, {"drop_malformed": 1})
