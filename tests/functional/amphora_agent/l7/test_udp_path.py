"""Tier-2 UDP end to end in namespaces: client -> router -> L4 SE (XDP,
IPIP / 6in6) -> L7 SE (decap, nftables DNAT + SNAT from the L7 document,
amphora_agent/l7/udp.py) -> UDP echo servers, and the replies L7 SE ->
router -> client.  The L7 SEs run ``dsr-l7 serve`` so the UDP-CONNECT
health checks run."""

import collections
import json

from tests.functional.amphora_agent.l7.conftest import L7_SES
from tests.functional.amphora_agent.l7.conftest import UDP_PORT
from tests.functional.amphora_agent.l7.conftest import UDP_SERVER_PORT
from tools.lab import l7_docs as docs
from tools.lab import netns

FLOWS = 24
# dsr-l7 serve's monitor: a stopped server answers ICMP port unreachable,
# so it is ERROR after max_retries_down probes (<= 2 x (1 + 1) s); the
# deadline allows for a loaded host.
DEADLINE = 60.0

# Sends one datagram per source port and reads the answer: [[reply source
# address, reply source port, text], ...] (text: the error when none).
CLIENT = '''
import json, socket, sys
vip, port, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    int(sys.argv[4])
fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
out = []
for sport in range(first, first + count):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind(("", sport))
    s.settimeout(3)
    s.sendto(b"hello %d" % sport, (vip, port))
    try:
        data, peer = s.recvfrom(2048)
        out.append([peer[0], peer[1], data.decode()])
    except OSError as exc:
        out.append([None, None, repr(exc)])
    s.close()
print(json.dumps(out))
'''


def document(lab, generation=1, listener_kw=None, pool_kw=None):
    members = [docs.member(n + suffix, lab.addr(n, family), UDP_SERVER_PORT)
               for family, suffix in ((4, ''), (6, '-v6'))
               for n in ('m3', 'm4')]
    monitor = docs.monitor('UDP-CONNECT', delay=1, timeout=1, max_retries=1,
                           max_retries_down=2, http_method=None,
                           url_path=None, expected_codes=None)
    lb = docs.load_balancer(
        [docs.listener('li-udp', 'p-udp', protocol='UDP', port=UDP_PORT,
                       insert_headers=None, **(listener_kw or {}))],
        [docs.pool('p-udp', members, protocol='UDP', healthmonitor=monitor,
                   **(pool_kw or {}))],
        vips=(netns.VIP4, netns.VIP6))
    return docs.document(lb, generation=generation)


def send(topo, first, count, vip):
    out = topo.run('client', [*netns.SCRIPT_PYTHON, '-c', CLIENT, vip,
                              str(UDP_PORT), str(first), str(count)],
                   timeout=count * 4 + 30).stdout
    return json.loads(out.strip().splitlines()[-1])


def flows(topo, first, count=FLOWS, vip=netns.VIP4):
    replies = send(topo, first, count, vip)
    for source, port, text in replies:
        # The reply comes from the VIP:port the client sent to (conntrack
        # undoes DNAT and SNAT).
        assert (source, port) == (vip, UDP_PORT), (source, port, text)
    return [dict(kv.split('=', 1) for kv in text.split()[:2])
            for _, _, text in replies]


def marks(lab):
    """How many lines each serve process printed so far."""
    return {n: len(lab.serving[n][0].lines) for n in L7_SES}


def wait_status(lab, member, status, after=None):
    """Both L7 SEs report ``member`` with ``status`` in a STATUS line
    (dsr-l7 serve) printed after ``after`` (marks())."""
    after = after or {}

    def seen():
        for name in L7_SES:
            lines = lab.serving[name][0].lines[after.get(name, 0):]
            if not any(li.startswith('STATUS ') and json.loads(
                    li[len('STATUS '):]).get(member) == status
                    for li in lines):
                return False
        return True
    netns.wait_for(seen, DEADLINE, f'{member} {status} on both L7 SEs')


def read_stats(lab, name):
    with open(lab.serving[name][2]) as f:
        return json.load(f)


def test_udp_through_l4_and_l7(tier2_udp):
    lab, topo = tier2_udp, tier2_udp.topo
    for name, (_, result, _) in lab.serve(document(lab)).items():
        lb = result['load_balancers']['lb1']
        assert lb['status'] == 'ACTIVE' and lb['listeners'] == {}, result
        assert result['ready'] is True, result
    wait_status(lab, 'm3', 'ONLINE')

    replies_at_l4 = topo.nft_counter('se1', saddr=netns.VIP4)
    replies_from_l7 = {n: topo.nft_counter(
        'router', ifname=topo.host(n).router_ifname, saddr=netns.VIP4)
        for n in L7_SES}

    answers = flows(topo, 41000)
    served = collections.Counter(a['member'] for a in answers)
    # Round robin on each L7 SE (numgen inc) across the two servers.
    assert set(served) == {'m3', 'm4'}, served
    assert abs(served['m3'] - served['m4']) <= 2, served
    # SNAT: the servers see the L7 SEs' addresses, both of them (the L4 SE
    # spread the flows), never the client's.
    peers = collections.Counter(a['peer'] for a in answers)
    assert set(peers) == {lab.addr(n) for n in L7_SES}, peers

    # Replies leave the L7 SEs straight to the router, never via the L4 SE.
    assert replies_at_l4.packets() == 0
    for name, counter in replies_from_l7.items():
        assert counter.packets() > 0, name

    # Statistics as Octavia's listener counters: nft counters and the
    # conntrack entries of the listener.
    last = {}

    def counted():
        last.update({n: read_stats(lab, n) for n in L7_SES})
        stats = [last[n]['lb1']['listeners']['li-udp']['stats']
                 for n in L7_SES]
        return sum(s['total_connections'] for s in stats) == FLOWS and \
            all(s['bytes_in'] > 0 and s['bytes_out'] > 0
                and s['active_connections'] > 0 for s in stats)
    try:
        netns.wait_for(counted, DEADLINE, 'UDP listener statistics')
    except TimeoutError as exc:
        raise AssertionError(f'{exc}: {last}') from None

    # A stopped server: ERROR by its health checks, out of the map, every
    # new flow to the other one.
    lab.echo['m3'].stop()
    wait_status(lab, 'm3', 'ERROR')
    # The statistics file is rewritten every stats interval, so it may
    # trail the STATUS line (seen in a CI rehearsal at load 5-8).
    seen = {}

    def m3_error_in_stats():
        seen.update({n: read_stats(lab, n)['lb1']['pools']['p-udp'][
            'members']['m3']['operating_status'] for n in L7_SES})
        return set(seen.values()) == {'ERROR'}
    try:
        netns.wait_for(m3_error_in_stats, DEADLINE, 'm3 ERROR in statistics')
    except TimeoutError as exc:
        raise AssertionError(f'{exc}: {seen}') from None
    answers = flows(topo, 42000, 12)
    assert {a['member'] for a in answers} == {'m4'}, answers
    # The health change re-installed the table: its counters went on from
    # where they were.

    def counted_on():
        last.update({n: read_stats(lab, n) for n in L7_SES})
        return sum(last[n]['lb1']['listeners']['li-udp']['stats']
                   ['total_connections'] for n in L7_SES) == FLOWS + 12
    try:
        netns.wait_for(counted_on, DEADLINE, 'counters after a re-install')
    except TimeoutError as exc:
        raise AssertionError(f'{exc}: {last}') from None

    # Back: ONLINE after max_retries (1) answered probe, both used again.
    mark = marks(lab)
    lab.start_echo('m3')
    wait_status(lab, 'm3', 'ONLINE', after=mark)
    answers = flows(topo, 43000)
    assert {a['member'] for a in answers} == {'m3', 'm4'}, answers

    # dsr-l7 stop removes the table.
    for name in L7_SES:
        lab.serving[name][0].stop()
        lab.l7(name, 'stop')
        tables = topo.run(name, ['nft', 'list', 'tables']).stdout
        assert 'dsr_udp_' not in tables, tables
    lab.serving.clear()


def test_udp_ipv6(tier2_udp):
    lab, topo = tier2_udp, tier2_udp.topo
    lab.serve(document(lab))
    answers = flows(topo, 44000, 12, vip=netns.VIP6)
    assert {a['member'] for a in answers} == {'m3', 'm4'}, answers
    assert {a['peer'] for a in answers} <= {lab.addr(n, 6)
                                            for n in L7_SES}, answers


def conntrack_timeouts(topo, name):
    """Seconds left of the L7 SE's conntrack entries to VIP:53/udp."""
    text = topo.run(name, ['cat', '/proc/net/nf_conntrack']).stdout
    return [int(line.split()[4]) for line in text.splitlines()
            if ' udp ' in line and f'dport={UDP_PORT} ' in line]


def test_udp_source_ip_persistence_and_allowed_cidrs(tier2_udp):
    lab, topo = tier2_udp, tier2_udp.topo
    lab.serve(document(
        lab, listener_kw={'allowed_cidrs': [f'{topo.client.ipv4}/32']},
        pool_kw={'session_persistence': {'type': 'SOURCE_IP',
                                         'persistence_timeout': 900}}))
    # One client address: every flow to one member, on both L7 SEs (the
    # same hash of the same source over the same map).
    answers = flows(topo, 45000)
    assert len({a['member'] for a in answers}) == 1, answers
    assert {a['peer'] for a in answers} == {lab.addr(n) for n in L7_SES}
    # Their conntrack entries live by the persistence timeout (900 s), not
    # the kernel's 30 s for UDP.
    timeouts = [t for n in L7_SES for t in conntrack_timeouts(topo, n)]
    assert timeouts and min(timeouts) > 300, timeouts
    # IPv6 is not in allowed_cidrs: dropped, no answer.
    replies = send(topo, 46000, 4, netns.VIP6)
    assert all(source is None for source, _, _ in replies), replies
