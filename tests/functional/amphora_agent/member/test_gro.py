"""The member's uplink with GRO on (a real NIC's default): the kernel
coalesces the SEs' tunnel packets of one flow into one large skb before
the tc decap program sees it (the IPIP, GRE and IPv6-in-IPv6 GRO handlers
are built in), and ``bpf_skb_adjust_room(... DECAP_L3 ...)`` must leave a
valid GSO packet of the inner family.  An 8 MiB upload through the SE
arrives whole (sha256), in far fewer decapsulations than segments: the
coalescing happened and survived the decap."""

import pytest

from tests.functional.amphora_agent.dataplane.conftest import listener
from tools.lab import netns

NBYTES = 8 << 20
MSS = 1460


@pytest.mark.parametrize('encap,family,counter', [
    ('ipip', 4, 'ipip'), ('gre', 4, 'gre'), ('ipip', 6, 'ip6ip')])
def test_coalesced_tunnel_packets_decapsulate_whole(make_member_lab, encap,
                                                    family, counter):
    lab = make_member_lab(n_se=1, n_members=1)
    topo = lab.topo
    m1 = topo.members[0]
    lab.start_ses()
    lab.setup_member('m1')
    lab.start_server('m1')
    vip = netns.VIP4 if family == 4 else netns.VIP6
    lab.apply(listener(vip, members=[m1.addr(family)], encap=encap))
    # The lab turns offloads off on every veth; a member's NIC has GRO on.
    topo.run('m1', ['ethtool', '-K', m1.ifname, 'gro', 'on'])
    before = lab.decap_stats('m1')
    response, sha = topo.http_upload(vip, nbytes=NBYTES)
    assert f'sha256={sha}' in response
    after = lab.decap_stats('m1')
    decapsulated = after[counter] - before[counter]
    drops = {k: after[k] - before[k] for k in after if k.startswith('drop')}
    assert set(drops.values()) == {0}, drops
    segments = NBYTES // MSS
    assert 0 < decapsulated < segments // 4, (decapsulated, segments)
