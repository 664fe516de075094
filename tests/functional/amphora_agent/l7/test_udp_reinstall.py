"""A UDP listener's table re-installed under traffic (amphora_agent/l7/
udp.py): every re-install -- a member's health change, an update -- is one
nft transaction that keeps the named counters, so a stream of new flows
arriving during many re-installs is counted exactly, and what the new rule
set no longer declares (a removed listener's chain and counters, a changed
persistence timeout's policy) is gone.  Real nft in a private namespace,
the client in another; the service's health checker and conntrack cleanup
are stand-ins (tests/functional/amphora_agent/l7/test_udp_path.py runs
them for real)."""

import json
import secrets

import pytest

from amphora_agent.l7 import udp
from tools.lab import l7_docs as docs
from tools.lab import netns
from tools.lab.still_checker import StillChecker

VIP = '192.0.2.10'
PORT = 53
FLOWS = 20000
# One datagram per source port: each is a new flow for conntrack, so the
# nat_in chain (and the listener's new_ counter) sees every one.
SENDER = '''
import socket, sys
vip, port, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \\
    int(sys.argv[4])
for sport in range(first, first + count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("198.18.77.1", sport))
    s.sendto(b"x", (vip, port))
    s.close()
'''


class NsNft(udp.Nft):
    """nft inside the SE's namespace."""

    def __init__(self, ns):
        super().__init__(binary='ip')
        self.ns = ns

    def run(self, args, script=None):
        return super().run(['netns', 'exec', self.ns, 'nft', *args], script)


class NoConntrack:
    def count(self, vips, port):
        return 0

    def forget(self, vips, port, members):
        return 0


@pytest.fixture
def lab():
    tag = secrets.token_hex(3)
    cli, se = f'dsrur{tag}c', f'dsrur{tag}s'
    for ns in (cli, se):
        netns.create_namespace(ns)
    try:
        netns.run(se, ['ip', 'link', 'add', 'se0', 'type', 'veth', 'peer',
                       'name', 'cl0', 'netns', cli])
        for ns, ifname, address in ((cli, 'cl0', '198.18.77.1/24'),
                                    (se, 'se0', '198.18.77.2/24')):
            netns.run(ns, ['ip', 'link', 'set', 'lo', 'up'])
            netns.run(ns, ['ip', 'link', 'set', ifname, 'up'])
            netns.run(ns, ['ip', 'addr', 'add', address, 'dev', ifname])
        netns.run(cli, ['ip', 'route', 'add', '192.0.2.0/24', 'via',
                        '198.18.77.2'])
        service = udp.UdpService(NsNft(se), NoConntrack(),
                                 {4: '198.18.77.2'}, checker=StillChecker(),
                                 adopt_tables=False)
        yield cli, se, service
        service.stop()
    finally:
        for ns in (cli, se):
            netns.remove_namespace(ns)


def load_balancer(listeners=('li-a',), timeout=600):
    members = [docs.member('m1', '198.51.100.11', 5353),
               docs.member('m2', '198.51.100.12', 5353)]
    pool = docs.pool('p-udp', members, protocol='UDP',
                     healthmonitor=docs.monitor('UDP-CONNECT'),
                     session_persistence={'type': 'SOURCE_IP',
                                          'persistence_timeout': timeout})
    return docs.load_balancer(
        [docs.listener(lid, 'p-udp', protocol='UDP', port=PORT + i,
                       insert_headers=None)
         for i, lid in enumerate(listeners)],
        [pool], vips=(VIP,))


def objects(se, kind):
    """{name: object} of the table's counters / ct timeouts / chains."""
    out = netns.run(se, ['nft', '-j', 'list', 'table', 'inet',
                         udp.table_name('lb1')]).stdout
    return {o[kind]['name']: o[kind] for o in json.loads(out)['nftables']
            if kind in o}


def test_reinstalls_under_traffic_lose_no_count(lab):
    cli, se, service = lab
    lb = load_balancer()
    assert service.apply([lb])['lb1']['error'] is None
    sender = netns.spawn(cli, [*netns.SCRIPT_PYTHON, '-c', SENDER, VIP,
                               str(PORT), '20000', str(FLOWS)])
    reinstalls = 0
    try:
        # Health changes of m2, re-installing the table, for as long as
        # the stream runs (and at least 10 times).
        while sender.poll() is None or reinstalls < 10:
            down = reinstalls % 2 == 0
            service.checker.current = {'m2': 'ERROR'} if down else {}
            service._health_changed('m2', *(('ONLINE', 'ERROR') if down
                                            else ('ERROR', 'ONLINE')))
            reinstalls += 1
    finally:
        sender.wait(timeout=60)
    assert sender.returncode == 0, sender.output_tail()
    assert reinstalls >= 10

    def counted():
        counters = objects(se, 'counter')
        return counters['new_li_a']['packets'] == FLOWS and \
            counters['in_li_a']['packets'] == FLOWS
    try:
        netns.wait_for(counted, 10, 'every flow counted')
    except TimeoutError as exc:
        raise AssertionError(f'{exc} after {reinstalls} re-installs: '
                             f'{objects(se, "counter")}') from None
    stats = service.stats()['lb1']['listeners']['li-a']['stats']
    assert stats['total_connections'] == FLOWS
    assert stats['bytes_in'] == FLOWS * 29      # 20 + 8 + 1 byte


def test_an_update_deletes_what_it_no_longer_declares(lab):
    _, se, service = lab
    assert service.apply([load_balancer(('li-a', 'li-b'))])['lb1'][
        'error'] is None
    assert {'in_li_a', 'in_li_b'} <= set(objects(se, 'counter'))
    timeouts = objects(se, 'ct timeout')
    assert len(timeouts) == 2, timeouts          # one per family
    # li-b removed, the persistence timeout changed: one transaction.
    assert service.apply([load_balancer(('li-a',), timeout=900)])['lb1'][
        'error'] is None
    assert set(objects(se, 'counter')) == {'in_li_a', 'out_li_a',
                                           'new_li_a'}
    assert 'l_li_b' not in objects(se, 'chain')
    after = objects(se, 'ct timeout')
    assert len(after) == 2 and not set(after) & set(timeouts), after
    assert {t['policy']['unreplied'] for t in after.values()} == {900}


def test_a_table_changed_by_hand_is_replaced_whole(lab):
    _, se, service = lab
    assert service.apply([load_balancer(('li-a', 'li-b'))])['lb1'][
        'error'] is None
    # Someone deleted a chain the service installed: the in-place update
    # (which deletes l_li_b) is refused, the table is defined whole.
    netns.run(se, ['nft', 'flush', 'chain', 'inet', udp.table_name('lb1'),
                   'filter_in'])
    netns.run(se, ['nft', 'delete', 'chain', 'inet', udp.table_name('lb1'),
                   'l_li_b'])
    assert service.apply([load_balancer(('li-a',))])['lb1']['error'] is None
    assert 'l_li_a' in objects(se, 'chain')
    assert set(objects(se, 'counter')) == {'in_li_a', 'out_li_a',
                                           'new_li_a'}
