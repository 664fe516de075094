"""dsr-agent end to end: real agents on three SEs, real RabbitMQ, Redis and
a BIRD router with ECMP, real TCP/UDP from the client to the members."""

import re

from tests.functional import netns
from tests.functional.amphora_agent.agent_lab import (
    listener, load_balancer, member, tcp_monitor)

VIP4, VIP6 = netns.VIP4, netns.VIP6
P4, P6 = f'{VIP4}/32', f'2001:db8:f::10/128'


def basic_lb(lab, monitor=True):
    mons = tcp_monitor() if monitor else None
    members = [member(f'm{m.index}', m.ipv4) for m in lab.topo.members]
    members6 = [member(f'm{m.index}v6', m.ipv6) for m in lab.topo.members]
    return [load_balancer([VIP4], [
                listener('l-tcp', 'TCP', 80, members, monitor=mons),
                listener('l-udp', 'UDP', 5353, [
                    member(f'u{m.index}', m.ipv4, port=5353)
                    for m in lab.topo.members])]),
            load_balancer([VIP6], [
                listener('l6-tcp', 'TCP', 80, members6, monitor=mons)],
                id_='lb6')]


def member_of(body):
    return re.search(r'member=(\S+)', body).group(1)


def test_three_ses_announce_and_serve_with_dsr(make_lab):
    lab = make_lab()
    lab.start_agents()
    gen = lab.publish(basic_lb(lab))
    lab.wait_applied(gen)
    ses = [s.name for s in lab.topo.ses]
    lab.wait_route(P4, ses)
    lab.wait_route(P6, ses)

    replies_at_ses = [lab.topo.nft_counter(se, saddr=vip)
                      for se in ses for vip in (VIP4, VIP6)]
    served = {}
    for port in range(40000, 40024):
        m = member_of(lab.topo.http_get(VIP4, source_port=port))
        served[m] = served.get(m, 0) + 1
    assert set(served) == {'m1', 'm2'}, served
    assert {member_of(lab.topo.http_get(VIP6, source_port=p))
            for p in range(40100, 40112)} == {'m1', 'm2'}
    summary = lab.topo.udp_probe(VIP4, 5353, duration=0.5)
    assert summary['lost'] == 0
    assert all(c.packets() == 0 for c in replies_at_ses)

    netns.wait_for(lambda: all(
        set(lab.statuses(se).values()) == {'ONLINE', 'NO_MONITOR'}
        for se in ses), 10, 'member statuses reported')
    # Stats reach the controller, per Octavia listener and member.
    netns.wait_for(lambda: sum(
        (lab.controller.stats.get(f'{se}-{lab.tag}') or {}).get(
            'listeners', {}).get('l-tcp', {}).get('total_connections', 0)
        for se in ses) >= 24, 10, 'stats reported')
    assert all(lab.controller.stats[f'{se}-{lab.tag}']['listeners'][
        'l-tcp']['bytes_out'] == 0 for se in ses)
