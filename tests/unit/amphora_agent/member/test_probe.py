"""`check --through`'s reading of what comes back: only this run's flows
count, by their sequence numbers, not by their ports alone."""

from scapy.layers.inet import IP
from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether

from amphora_agent.member import frames
from amphora_agent.member import probe
from tests.unit.amphora_agent.member.fakes import ip

SRC, VIP, SE = '198.51.100.2', '192.0.2.10', '198.18.1.2'
ISNS = {40001: 1000, 40002: 0xffffffff}


def _classify(scapy_packet):
    result = probe.Result()
    probe._classify(result, frames.parse(bytes(Ether() / scapy_packet)),
                    ip(SRC), ip(VIP), 80, {ip(SRC)}, ISNS)
    return result


def _answer(dport, ack, flags='SA'):
    return IP(src=VIP, dst=SRC) / TCP(sport=80, dport=dport, flags=flags,
                                      seq=555, ack=ack)


def test_an_answer_to_this_runs_syn_counts():
    assert _classify(_answer(40001, 1001)).answered == {
        40001: frames.TCP_SYN | frames.TCP_ACK}
    # The sequence space wraps: 0xffffffff + 1 is 0.
    assert 40002 in _classify(_answer(40002, 0)).answered
    # Nothing listening: RST|ACK, acknowledging the SYN too.
    assert 40001 in _classify(_answer(40001, 1001, 'RA')).answered


def test_an_earlier_runs_syn_ack_on_a_port_used_again_does_not():
    """Another member re-sends its SYN-ACKs of an earlier run for a
    minute (this member's stack holds the VIP: its RST stays here)."""
    assert _classify(_answer(40001, 77)).answered == {}
    assert _classify(_answer(40003, 1001)).answered == {}


def test_only_this_runs_syn_back_in_the_tunnel_is_steered_here():
    def steered(seq):
        inner = IP(src=SRC, dst=VIP) / TCP(sport=40001, dport=80,
                                           flags='S', seq=seq)
        return _classify(IP(src=SE, dst=SRC) / inner).steered
    assert list(steered(1000)) == [40001]
    assert steered(999) == {}
