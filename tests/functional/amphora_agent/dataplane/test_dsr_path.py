"""Real TCP through a VIP: client -> router -> SE (XDP encap) -> member
(tc decap) -> reply straight to the client, for every encapsulation."""

import re

import pytest

from tests.functional.amphora_agent.dataplane.conftest import listener
from tools.lab import netns

FLOWS = 16

# (VIP family, member family, encap, member decap counter)
MATRIX = [
    pytest.param(4, 4, 'ipip', 'ipip', id='4in4'),
    pytest.param(6, 4, 'ipip', 'ip6ip', id='6in4'),
    pytest.param(4, 6, 'ipip', 'ipip', id='4in6'),
    pytest.param(6, 6, 'ipip', 'ip6ip', id='6in6'),
    pytest.param(4, 4, 'gre', 'gre', id='gre-4in4'),
    pytest.param(6, 6, 'gre', 'gre', id='gre-6in6'),
    pytest.param(4, 6, 'gre', 'gre', id='gre-4in6'),
    pytest.param(6, 4, 'gre', 'gre', id='gre-6in4'),
]


def vip(family):
    return netns.VIP4 if family == 4 else netns.VIP6


def member_of(body):
    match = re.search(r'member=(\S+)', body)
    assert match, f'no member in reply {body!r}'
    return match.group(1)


@pytest.mark.parametrize('vip_family,member_family,encap,decap_counter',
                         MATRIX)
def test_tcp_through_vip(dsr, vip_family, member_family, encap,
                         decap_counter):
    topo = dsr.topo
    address = vip(vip_family)
    dsr.apply(listener(address, members=dsr.member_addrs(member_family),
                       encap=encap))
    # Anything the members send from the VIP must not reach the SE.
    replies_at_se = topo.nft_counter('se1', saddr=address)
    decap_before = {m.name: dsr.decap_stats(m.name)[decap_counter]
                    for m in topo.members}

    served = {}
    for port in range(40000, 40000 + FLOWS):
        member = member_of(topo.http_get(address, source_port=port))
        served[member] = served.get(member, 0) + 1
    assert set(served) == {m.name for m in topo.members}, served

    # A port of its own: an ephemeral one can be a GET's above (the client
    # keeps no TIME_WAIT when the server closes first), and that flow's
    # entry would make the upload a conn-table hit, not a new flow.
    response, sha = topo.http_upload(address, nbytes=3 << 20,
                                     source_port=40000 + FLOWS)
    assert f'bytes={3 << 20}' in response and f'sha256={sha}' in response

    assert replies_at_se.packets() == 0
    stats = dsr.stats()
    assert stats['se']['steered'] > FLOWS
    (lst,) = stats['listeners']
    assert lst['new_flows'] >= FLOWS + 1
    assert lst['drops'] == 0
    for m in topo.members:
        assert dsr.decap_stats(m.name)[decap_counter] > decap_before[m.name]


def test_udp_and_source_ip_hashing(dsr):
    """SOURCE_IP keeps every flow of a client on one member; UDP works."""
    topo = dsr.topo
    dsr.apply(listener(netns.VIP4, port=5353, protocol='udp',
                       members=dsr.member_addrs(4), algorithm='SOURCE_IP'),
              listener(netns.VIP4, port=80, members=dsr.member_addrs(4),
                       algorithm='SOURCE_IP'))
    for m in topo.members:
        topo.start_udp_echo(m.name)
    summary = topo.udp_probe(netns.VIP4, 5353, duration=0.3)
    assert summary['lost'] == 0 and summary['received'] > 0, summary
    members = {member_of(topo.http_get(netns.VIP4, source_port=p))
               for p in range(41000, 41010)}
    assert len(members) == 1, members


@pytest.mark.parametrize('family', [4, 6])
def test_path_mtu_too_big_reaches_client(make_dsr, family):
    """Links at 1500 everywhere: a full-size DF segment cannot take the
    tunnel header, so the SE answers frag-needed / packet-too-big from the
    VIP and the client's TCP shrinks its segments; the upload completes."""
    dsr = make_dsr(mtu=1500)
    topo = dsr.topo
    dsr.apply(listener(vip(family), members=dsr.member_addrs(family)))
    response, sha = topo.http_upload(vip(family), nbytes=1 << 20)
    assert f'sha256={sha}' in response
    assert dsr.stats()['se']['icmp_too_big_sent'] >= 1


def test_ping_vip_answered_by_se(dsr):
    dsr.apply(listener(netns.VIP4, members=dsr.member_addrs(4)),
              listener(netns.VIP6, members=dsr.member_addrs(6)))
    for address in (netns.VIP4, netns.VIP6):
        dsr.topo.run('client', ['ping', '-c', '2', '-i', '0.2', '-W', '2',
                                address])
    assert dsr.stats()['se']['icmp_echo_reply'] >= 4


@pytest.mark.parametrize('family', [4, 6])
def test_native_xdp_mode(make_dsr, family):
    """Driver-mode XDP (veth supports it); the router end of the SE link
    carries an XDP_PASS program, which native XDP_TX on veth needs."""
    dsr = make_dsr(xdp_mode='native')
    topo = dsr.topo
    shown = topo.run('se1', ['ip', '-d', 'link', 'show', 'eth0']).stdout
    assert 'prog/xdp' in shown and 'xdpgeneric' not in shown, shown
    dsr.apply(listener(vip(family), members=dsr.member_addrs(family)))
    served = {member_of(topo.http_get(vip(family), source_port=p))
              for p in range(42000, 42000 + FLOWS)}
    assert served == {m.name for m in topo.members}
    response, sha = topo.http_upload(vip(family), nbytes=2 << 20)
    assert f'sha256={sha}' in response
