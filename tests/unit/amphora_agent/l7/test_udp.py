"""amphora_agent.l7.udp: UDP listeners as nftables rules.

The rendered rule sets are asserted on their text and checked by the real
``nft -c -f`` (check mode: parsed and validated by the kernel, nothing
installed), as test_render.py checks HAProxy's with ``haproxy -c``.  The
service's bookkeeping runs against a recording nft; the namespace test
(tests/functional/amphora_agent/l7/test_udp_path.py) installs them."""

import shutil
import subprocess

import pytest

from amphora_agent.l7 import udp
from tools.lab import l7_docs as docs
from tools.lab.still_checker import StillChecker

NFT = shutil.which('nft')
M1, M2, MB = '198.51.100.11', '198.51.100.12', '198.51.100.13'
M6 = '2001:db8:5::3'
SNAT = {4: '198.18.1.2', 6: '2001:db8:1::2'}


def nft_accepts(script):
    if NFT is None:
        pytest.skip('nft is not installed (make deps installs nftables)')
    proc = subprocess.run([NFT, '-c', '-f', '-'], input=script, text=True,
                          capture_output=True)
    assert proc.returncode == 0, proc.stderr


def udp_lb(members, listener_kw=None, vips=(docs.VIP4,), **pool_kw):
    return docs.load_balancer(
        [docs.listener('li-udp', 'p-udp', protocol='UDP', port=53,
                       insert_headers=None, **(listener_kw or {}))],
        [docs.pool('p-udp', members, protocol='UDP', **pool_kw)],
        vips=vips)


def rules(lb, statuses=None, snat=SNAT):
    ruleset = udp.Ruleset(lb, statuses, snat)
    text = ruleset.render()
    nft_accepts(text)
    return ruleset, text


def nat_in(text):
    return [line.strip() for line in text.splitlines()
            if ' dnat ip' in line]


def test_round_robin_with_weights_member_port_and_snat():
    ruleset, text = rules(udp_lb([docs.member('m1', M1, port=5353, weight=2),
                                  docs.member('m2', M2, port=5354)]))
    assert text.startswith('table inet dsr_udp_lb1 {\n}\n'
                           'delete table inet dsr_udp_lb1\n')
    [dnat] = nat_in(text)
    assert dnat == (
        'ip daddr { 192.0.2.10 } udp dport 53 counter name "new_li_udp" '
        'dnat ip to numgen inc mod 3 map { 0 : 198.51.100.11 . 5353, '
        '1 : 198.51.100.11 . 5353, 2 : 198.51.100.12 . 5354 }')
    assert ('meta l4proto udp ct status dnat ct original ip daddr '
            '{ 192.0.2.10 } ct original proto-dst 53 snat ip to '
            '198.18.1.2') in text
    assert 'counter name "out_li_udp"' in text
    assert ruleset.not_served == {}


def test_weights_are_divided_by_their_common_divisor():
    _, text = rules(udp_lb([docs.member('m1', M1, weight=4),
                            docs.member('m2', M2, weight=2)]))
    assert 'numgen inc mod 3 map' in text


@pytest.mark.parametrize('algorithm, selector', [
    ('SOURCE_IP', 'jhash ip saddr mod 2'),
    ('SOURCE_IP_PORT', 'jhash ip saddr . udp sport mod 2')])
def test_hash_algorithms(algorithm, selector):
    _, text = rules(udp_lb([docs.member('m1', M1), docs.member('m2', M2)],
                           algorithm=algorithm))
    assert f'dnat ip to {selector} seed 0x' in text


def test_ipv6_vip_is_served_by_ipv6_members():
    _, text = rules(udp_lb([docs.member('m1', M1), docs.member('m6', M6)],
                           vips=(docs.VIP4, '2001:db8::10')))
    dnat = nat_in(text)
    assert any('dnat ip to numgen inc mod 1 map { 0 : 198.51.100.11 . '
               '8080 }' in d for d in dnat)
    assert any(d.startswith('ip6 daddr { 2001:db8::10 } udp dport 53')
               and 'dnat ip6 to numgen inc mod 1 map { 0 : '
                   '[2001:db8:5::3] . 8080 }' in d for d in dnat)
    assert 'snat ip6 to 2001:db8:1::2' in text


def test_a_family_without_members_drops_and_no_snat_address_masquerades():
    _, text = rules(udp_lb([docs.member('m1', M1)],
                           vips=(docs.VIP4, '2001:db8::10')),
                    snat={6: SNAT[6]})
    assert 'meta nfproto ipv6 drop' in text
    assert 'dnat ip6' not in text
    assert 'ct original proto-dst 53 masquerade' in text


def test_unusable_members_leave_the_map_backups_only_without_primaries():
    members = [docs.member('m1', M1), docs.member('m2', M2),
               docs.member('mb', MB, backup=True)]
    lb = udp_lb(members, healthmonitor=docs.monitor('UDP-CONNECT'))
    ruleset, text = rules(lb)
    assert [m for m, _, _ in ruleset.backends['li-udp']] == ['m1', 'm2']
    ruleset, text = rules(lb, {'m1': 'ERROR'})
    assert [m for m, _, _ in ruleset.backends['li-udp']] == ['m2']
    ruleset, text = rules(lb, {'m1': 'ERROR', 'm2': 'ERROR'})
    assert [m for m, _, _ in ruleset.backends['li-udp']] == ['mb']
    ruleset, text = rules(lb, {'m1': 'ERROR', 'm2': 'ERROR', 'mb': 'ERROR'})
    assert ruleset.backends['li-udp'] == []
    assert nat_in(text) == []
    assert 'meta nfproto ipv4 drop' in text


def test_admin_down_member_and_weight_zero_are_left_out():
    ruleset, _ = rules(udp_lb([
        docs.member('m1', M1, admin_state_up=False),
        docs.member('m2', M2, weight=0), docs.member('m3', MB)]))
    assert [m for m, _, _ in ruleset.backends['li-udp']] == ['m3']
    assert udp.member_status(
        docs.member('m1', M1, admin_state_up=False),
        docs.pool('p', []), {}) == 'OFFLINE'
    assert udp.member_status(docs.member('m1', M1), docs.pool('p', []),
                             {}) == 'NO_MONITOR'


def test_allowed_cidrs_connection_limit_and_persistence_timeout():
    lb = udp_lb([docs.member('m1', M1), docs.member('m2', M2)],
                listener_kw={'allowed_cidrs': ['198.51.100.0/24',
                                               '2001:db8:9::/48'],
                             'connection_limit': 100},
                session_persistence={'type': 'SOURCE_IP',
                                     'persistence_timeout': 600})
    _, text = rules(lb)
    chain = text[text.index('chain l_li_udp {'):]
    assert chain.index('ip saddr != { 198.51.100.0/24 } drop') \
        < chain.index('ct state new ct count over 100 drop') \
        < chain.index('counter name "in_li_udp"')
    assert 'ip6 saddr != { 2001:db8:9::/48 } drop' in chain
    assert 'policy = { unreplied : 600, replied : 600 }' in text
    filter_in = text[text.index('chain filter_in {'):
                     text.index('chain nat_in')]
    assert 'type filter hook prerouting priority mangle;' in filter_in
    assert ('ip daddr { 192.0.2.10 } udp dport 53 ct timeout set '
            '"pt_p_udp_600_4"') in filter_in
    # SOURCE_IP persistence: the flow's member by its source address.
    assert 'dnat ip to jhash ip saddr mod 2 seed 0x' in text


def test_only_v4_cidrs_drop_ipv6_sources():
    _, text = rules(udp_lb([docs.member('m1', M1)],
                           listener_kw={'allowed_cidrs': ['192.0.2.0/24']}))
    assert 'meta nfproto ipv6 drop' in text


def test_least_connections_is_not_served_with_the_reason():
    ruleset, text = rules(udp_lb([docs.member('m1', M1)],
                                 algorithm='LEAST_CONNECTIONS'))
    assert 'LEAST_CONNECTIONS' in ruleset.not_served['li-udp']
    assert 'ROUND_ROBIN, SOURCE_IP, SOURCE_IP_PORT' in \
        ruleset.not_served['li-udp']
    assert nat_in(text) == []


def test_disabled_listener_and_load_balancer_have_no_rules():
    lb = udp_lb([docs.member('m1', M1)],
                listener_kw={'admin_state_up': False})
    assert nat_in(rules(lb)[1]) == []
    lb = udp_lb([docs.member('m1', M1)])
    lb['admin_state_up'] = False
    assert nat_in(rules(lb)[1]) == []


def test_long_ids_give_short_unique_names():
    a, b = 'x' * 100 + 'a', 'x' * 100 + 'b'
    assert udp.table_name(a) != udp.table_name(b)
    assert len(udp.table_name(a)) <= 64
    assert udp.table_name('0b1-c') == 'dsr_udp_0b1_c'


# -- the service, with a recording nft ---------------------------------------

class RecordingNft:
    def __init__(self):
        self.installed = {}
        self.refuse = None

    def check(self, script):
        if self.refuse and self.refuse in script:
            raise udp.NftError('nft rejected the UDP rule set: boom')

    def install(self, script):
        name = script.split()[2]
        self.installed[name] = script

    def tables(self):
        return sorted(self.installed)

    def delete(self, table):
        del self.installed[table]

    def counters(self, table):
        return {'in_li_udp': (3, 300), 'out_li_udp': (3, 450),
                'new_li_udp': (2, 200)}


class RecordingConntrack:
    def __init__(self):
        self.forgotten = []

    def count(self, vips, port):
        return 1

    def forget(self, vips, port, members):
        self.forgotten.append((sorted(vips), port, sorted(members)))
        return 1


@pytest.fixture
def service():
    svc = udp.UdpService(RecordingNft(), RecordingConntrack(), SNAT,
                         checker=StillChecker(), adopt_tables=False)
    yield svc
    svc.stop()


def monitored_lb():
    return udp_lb([docs.member('m1', M1, port=5353),
                   docs.member('m2', M2, port=5353)],
                  healthmonitor=docs.monitor('UDP-CONNECT'))


def test_service_installs_reports_and_removes(service):
    lb = monitored_lb()
    http = docs.load_balancer([docs.listener('li-http', 'p')],
                              [docs.pool('p', [])], id_='lb-http')
    result = service.apply([lb, http])
    assert result == {'lb1': {'error': None, 'listeners': {}}}
    assert service.nft.tables() == ['dsr_udp_lb1']
    assert set(service.checker.targets) == {'m1', 'm2'}
    assert service.checker.targets['m1'].port == 5353
    stats = service.stats()['lb1']
    assert stats['listeners']['li-udp']['stats'] == {
        'bytes_in': 300, 'bytes_out': 450, 'active_connections': 1,
        'total_connections': 2, 'request_errors': 0}
    assert stats['pools']['p-udp']['members'] == {
        'm1': {'status': 'ONLINE', 'operating_status': 'ONLINE'},
        'm2': {'status': 'ONLINE', 'operating_status': 'ONLINE'}}
    service.apply([http])
    assert service.nft.tables() == []


def test_health_change_reinstalls_and_forgets_the_members_flows(service):
    service.apply([monitored_lb()])
    service.checker.current = {'m1': 'ERROR'}
    service._health_changed('m1', 'ONLINE', 'ERROR')
    script = service.nft.installed['dsr_udp_lb1']
    assert M1 not in script.split('dnat')[1]
    assert service.conntrack.forgotten == [
        ([docs.VIP4], 53, [(M1, 5353)])]
    pool = service.stats()['lb1']['pools']['p-udp']
    assert pool['members']['m1']['operating_status'] == 'ERROR'
    assert pool['operating_status'] == 'ONLINE'


def test_a_reinstall_flushes_the_rules_and_keeps_the_counters(service):
    service.apply([monitored_lb()])
    first = service.nft.installed['dsr_udp_lb1']
    assert 'delete table inet dsr_udp_lb1' in first
    service.checker.current = {'m1': 'ERROR'}
    service._health_changed('m1', 'ONLINE', 'ERROR')
    script = service.nft.installed['dsr_udp_lb1']
    # One transaction that keeps the table and its counter objects (a
    # declaration of an existing counter leaves its values alone):
    # tests/functional/amphora_agent/l7/test_udp_reinstall.py counts a
    # stream of flows across re-installs in a real table.
    assert 'delete table' not in script
    assert script.splitlines()[2] == 'flush table inet dsr_udp_lb1'
    assert 'counter in_li_udp { packets 0 bytes 0 }' in script
    assert 'delete ' not in script       # nothing left behind
    nft_accepts(script)


def test_a_reinstall_deletes_what_is_no_longer_declared():
    two = udp_lb([docs.member('m1', M1)],
                 session_persistence={'type': 'SOURCE_IP',
                                      'persistence_timeout': 600})
    two['listeners'].append(docs.listener('li-b', 'p-udp', protocol='UDP',
                                          port=54, insert_headers=None))
    old = udp.Ruleset(two, snat=SNAT)
    old.render()
    one = udp_lb([docs.member('m1', M1)],
                 session_persistence={'type': 'SOURCE_IP',
                                      'persistence_timeout': 900})
    new = udp.Ruleset(one, snat=SNAT)
    script = new.render(previous=old)
    deletes = [line for line in script.splitlines()
               if line.startswith('delete ')]
    timeout_600 = sorted(old.timeout_names)
    assert deletes == ['delete chain inet dsr_udp_lb1 l_li_b'] + [
        f'delete counter inet dsr_udp_lb1 {k}_li_b'
        for k in ('in', 'new', 'out')] + [
        f'delete ct timeout inet dsr_udp_lb1 {name}'
        for name in timeout_600]
    # A changed timeout is a new policy object (an existing one is never
    # updated): its name holds the seconds.
    assert not old.timeout_names & new.timeout_names
    assert all('900' in name for name in new.timeout_names)


class RefusingUpdates(RecordingNft):
    def install(self, script):
        if 'flush table' in script:
            raise udp.NftError('nft rejected the UDP rule set: No such '
                               'file or directory')
        super().install(script)


def test_a_table_that_cannot_be_updated_in_place_is_replaced_whole():
    svc = udp.UdpService(RefusingUpdates(), RecordingConntrack(), SNAT,
                         checker=StillChecker(), adopt_tables=False)
    svc.apply([monitored_lb()])
    svc.checker.current = {'m1': 'ERROR'}
    svc._health_changed('m1', 'ONLINE', 'ERROR')
    script = svc.nft.installed['dsr_udp_lb1']
    assert 'delete table inet dsr_udp_lb1' in script
    assert M1 not in script.split('dnat')[1]
    svc.stop()


def test_a_rejected_rule_set_keeps_the_installed_one(service):
    lb = monitored_lb()
    service.apply([lb])
    before = dict(service.nft.installed)
    bad = monitored_lb()
    bad['pools'][0]['members'].append(docs.member('m9', '198.51.100.99'))
    service.nft.refuse = '198.51.100.99'
    result = service.apply([bad])
    assert result['lb1']['error'] == 'nft rejected the UDP rule set: boom'
    assert service.nft.installed == before
    assert service.docs['lb1'] is lb


def test_without_nft_http_alone_is_served():
    svc = udp.UdpService(udp.Nft('/nonexistent/nft'), RecordingConntrack(),
                         SNAT, checker=StillChecker(), adopt_tables=True)
    http = docs.load_balancer([docs.listener('li-http', 'p')],
                              [docs.pool('p', [])], id_='lb-http')
    assert svc.apply([http]) == {}
    result = svc.apply([monitored_lb()])
    assert result['lb1']['error'].startswith('/nonexistent/nft -c -f -:')
    assert not svc.installed('lb1')
    svc.stop()


def test_a_dead_health_thread_is_restarted_by_supervise():
    svc = udp.UdpService(RecordingNft(), RecordingConntrack(), SNAT,
                         adopt_tables=False)
    assert svc.supervise() is False          # nothing started yet
    svc.apply([monitored_lb()])
    try:
        svc.checker.set_backoff(max_delay=0.0, reset_after=60.0)
        svc.checker._crash['loop'] = RuntimeError('boom')
        svc.checker._loop.call_soon_threadsafe(svc.checker._loop.stop)
        svc.checker._thread.join(10)
        assert svc.supervise() or svc.supervise()
        assert svc.checker._thread.is_alive()
    finally:
        svc.stop()
