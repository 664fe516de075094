"""Tier 2 in the controller's store: a tier-2 load balancer in its L4
group's snapshot (synthetic pools of ready L7 SEs, parsed by the agents'
own parser), its L7 group's document (dsr_wire/l7.py), L7 policies and
rules with Octavia's positions and cascades, statuses owed once the L7 SEs
applied the change."""

from amphora_agent import snapshot as snapshot_mod
from dsr_provider.controller import endpoints
from dsr_provider.controller import l7_snapshot
from dsr_provider.controller import models
from dsr_provider.controller import reporter as reporter_mod
from dsr_provider.controller import store as store_mod
from dsr_provider.controller import tier2
from dsr_wire import l7
from tests.unit.dsr_provider.controller.test_store import FakeDriverLib
from tests.unit.dsr_provider.controller.test_store import graph as graph1
from tests.unit.dsr_provider.controller.test_store import pending
from tests.unit.dsr_provider import fakes

L4, L7G = 'edge', 'edge-l7'


def graph():
    """lb2 (tier 2, IPv4 and IPv6 VIPs): HTTP listener l2 (port 80, an
    L7 policy with a rule) -> pool p2 (ROUND_ROBIN, cookie persistence,
    members on 8080, one backup, HTTP monitor); UDP listener l3."""
    return {
        'loadbalancer_id': 'lb2', 'vip_address': '192.0.2.20',
        'additional_vips': [{'ip_address': '2001:db8:f::20'}],
        'admin_state_up': True, 'flavor': {'tier': 2, 'se_group': L4},
        'dsr': {'se_group': L4, 'encapsulation': 'gre', 'tier': 2,
                'l7_se_group': L7G},
        'listeners': [{
            'listener_id': 'l2', 'loadbalancer_id': 'lb2',
            'protocol': 'HTTP', 'protocol_port': 80,
            'default_pool_id': 'p2', 'admin_state_up': True,
            'connection_limit': 100, 'timeout_client_data': 50000,
            'timeout_member_connect': 5000, 'timeout_member_data': 50000,
            'timeout_tcp_inspect': 0, 'allowed_cidrs': None,
            'insert_headers': {'X-Forwarded-For': 'true'},
            'default_tls_container_ref': None, 'sni_container_refs': [],
            'l7policies': [{
                'l7policy_id': 'pol1', 'listener_id': 'l2',
                'action': 'REDIRECT_TO_URL', 'position': 1,
                'redirect_url': 'http://example.com/',
                'redirect_http_code': 302, 'admin_state_up': True,
                'rules': [{'l7rule_id': 'r1', 'l7policy_id': 'pol1',
                           'type': 'PATH', 'compare_type': 'STARTS_WITH',
                           'value': '/old', 'invert': False,
                           'key': None, 'admin_state_up': True}]}]}, {
            'listener_id': 'l3', 'loadbalancer_id': 'lb2',
            'protocol': 'UDP', 'protocol_port': 53,
            'admin_state_up': True, 'l7policies': []}],
        'pools': [{
            'pool_id': 'p2', 'loadbalancer_id': 'lb2', 'listener_id': 'l2',
            'lb_algorithm': 'ROUND_ROBIN', 'protocol': 'HTTP',
            'admin_state_up': True,
            'session_persistence': {'type': 'HTTP_COOKIE',
                                    'cookie_name': None},
            'healthmonitor': {'healthmonitor_id': 'hm2', 'pool_id': 'p2',
                              'type': 'HTTP', 'delay': 5, 'timeout': 3,
                              'max_retries': 2, 'http_method': 'GET',
                              'url_path': '/', 'expected_codes': '200, 202'},
            'members': [{'member_id': 'm21', 'pool_id': 'p2',
                         'address': '198.19.1.2', 'protocol_port': 8080,
                         'weight': 1, 'admin_state_up': True,
                         'backup': False},
                        {'member_id': 'm22', 'pool_id': 'p2',
                         'address': '198.19.2.2', 'protocol_port': 8081,
                         'weight': 1, 'admin_state_up': True,
                         'backup': True}]}]}


L7SE = {'se-a': {'tunnel_addresses': {'4': '198.51.100.1',
                                      '6': '2001:db8:7::1'},
                 'draining': False},
        'se-b': {'tunnel_addresses': {'6': '2001:db8:7::2'},
                 'draining': True}}


def make_reporter(store, live):
    """(driver lib, Reporter) with tooz membership stood in by live:
    {se_group: SE ids} (read at every call)."""
    lib = FakeDriverLib()
    return lib, reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                      lambda group: live.get(group, set()))


def l4_listeners(store):
    snap = snapshot_mod.parse(store.snapshot(L4))   # the agents' parser
    assert snap.rejected == {}                      # nothing left out
    (lb,) = snap.load_balancers
    return snap, {lst.id: lst for lst in lb.listeners}


def test_l4_snapshot_steers_to_the_ready_l7_ses(store):
    store.create_loadbalancer(graph())
    snap, listeners = l4_listeners(store)
    assert [(i, lst.protocol, lst.port) for i, lst in
            sorted(listeners.items())] == [('l2', 'TCP', 80),
                                           ('l3', 'UDP', 53)]
    pool = listeners['l2'].pool
    assert pool.id == 'l7:l2' and pool.algorithm == 'SOURCE_IP_PORT'
    assert pool.encap == 'gre' and pool.members == ()
    assert pool.health_monitor is None
    before = snap.generation

    assert store.set_l7_members(L7G, L7SE) == [L4]
    snap, listeners = l4_listeners(store)
    assert snap.generation == before + 1
    members = [(m.id, str(m.address), m.protocol_port, m.weight)
               for m in listeners['l2'].pool.members]
    # The VIP is IPv4: se-a's IPv4 tunnel address; se-b has IPv6 only;
    # se-b drains: weight 0.
    assert members == [('l7se:se-a@l2', '198.51.100.1', 80, 1),
                       ('l7se:se-b@l2', '2001:db8:7::2', 80, 0)]
    # Member ids are unique in the snapshot (the agents leave duplicates
    # out): one L7 SE is a member of every listener's pool.
    assert [(m.id, m.protocol_port) for m in listeners['l3'].pool.members
            ] == [('l7se:se-a@l3', 53), ('l7se:se-b@l3', 53)]
    # The same set again changes nothing.
    assert store.set_l7_members(L7G, dict(L7SE)) == []
    assert store.snapshot(L4)['generation'] == snap.generation
    # se-a leaves.
    assert store.set_l7_members(L7G, {'se-b': L7SE['se-b']}) == [L4]
    _, listeners = l4_listeners(store)
    assert [m.id for m in listeners['l2'].pool.members] == ['l7se:se-b@l2']


def test_an_l7_se_leaves_the_pools_of_what_it_left_error(store):
    """An L7 SE that reports a load balancer or a listener ERROR alone (a
    port taken there, a crashed HAProxy) leaves those L4 pools, and only
    those; it comes back when its report no longer names them."""
    store.create_loadbalancer(graph())
    ready = {'se-a': L7SE['se-a'], 'se-c': {
        'tunnel_addresses': {'4': '198.51.100.3'}, 'draining': False}}
    store.set_l7_members(L7G, ready)

    def pools():
        _, listeners = l4_listeners(store)
        return {lid: [m.id for m in lst.pool.members]
                for lid, lst in sorted(listeners.items())}
    assert pools() == {'l2': ['l7se:se-a@l2', 'l7se:se-c@l2'],
                       'l3': ['l7se:se-a@l3', 'l7se:se-c@l3']}
    assert store.l7_reports(L7G) == {}

    # se-c's HAProxy of lb2 failed; se-a's UDP listener l3 failed.
    store.record_agent('se-c', L7G, rejected_objects={
        'loadbalancers': {'lb2': 'L7 SE se-c: bind: port in use'}})
    store.record_agent('se-a', L7G, rejected_objects={
        'listeners': {'l3': 'L7 SE se-a: nft refused'}})
    # Another group's reports are not this group's.
    store.record_agent('l4se', L4, rejected_objects={
        'loadbalancers': {'lb2': 'no'}})
    reported = store.l7_reports(L7G)
    assert reported == {
        'se-a': {'unserved': {'listeners': ['l3']}, 'tunnel_addresses': None,
                 'seal_boot': None, 'state_lag': None, 'state_stored': None,
                 'stated': False},
        'se-c': {'unserved': {'loadbalancers': ['lb2']},
                 'tunnel_addresses': None, 'seal_boot': None,
                 'state_lag': None, 'state_stored': None, 'stated': False}}
    before = store.snapshot(L4)['generation']
    assert store.set_l7_members(
        L7G, tier2.ready_members(
            {se: {'role': 'tier2', 'ready': True,
                  'tunnel_addresses': m['tunnel_addresses']}
             for se, m in ready.items()}, reported)) == [L4]
    assert store.snapshot(L4)['generation'] == before + 1
    assert pools() == {'l2': ['l7se:se-a@l2'], 'l3': []}
    assert store.l7_members(L7G)['se-c']['unserved'] == {
        'loadbalancers': ['lb2']}

    # Both recover: back in every pool, at a new generation.
    store.record_agent('se-c', L7G, rejected_objects=None)
    store.record_agent('se-a', L7G, rejected_objects=None)
    assert all(not r['unserved'] for r in store.l7_reports(L7G).values())
    # A HAProxy waiting for its restart is not served either (not ERROR).
    store.record_agent('se-c', L7G, helpers={'haproxy': {
        'state': 'restarting', 'not_running': ['lb2']}})
    assert store.l7_reports(L7G, {'se-c'}) == {'se-c': {
        'unserved': {'loadbalancers': ['lb2']}, 'tunnel_addresses': None,
        'seal_boot': None, 'state_lag': None, 'state_stored': None,
        'stated': False}}
    assert store.l7_reports(L7G, set()) == {}
    store.record_agent('se-c', L7G, helpers={'haproxy': {
        'state': 'running', 'not_running': []}})
    assert store.set_l7_members(L7G, ready) == [L4]
    assert pools() == {'l2': ['l7se:se-a@l2', 'l7se:se-c@l2'],
                       'l3': ['l7se:se-a@l3', 'l7se:se-c@l3']}


def test_tier1_load_balancers_are_untouched(store):
    store.create_loadbalancer(graph1())
    store.create_loadbalancer(dict(graph(), dsr=dict(graph()['dsr'],
                                                     se_group='g1')))
    store.set_l7_members(L7G, L7SE)
    snap = snapshot_mod.parse(store.snapshot('g1'))
    assert snap.rejected == {}
    lbs = {lb.id: lb for lb in snap.load_balancers}
    assert [m.id for m in lbs['lb1'].listeners[0].pool.members] == [
        'm1', 'm2']
    assert lbs['lb2'].listeners[0].pool.id == 'l7:l2'
    assert store.l7_groups() == [L7G]


def test_l7_document(store):
    store.create_loadbalancer(graph())
    doc = store.snapshot(L7G)
    l7.check_document(doc)        # the L7 agents' own validation
    assert doc['role'] == 'tier2' and doc['se_group'] == L7G
    (lb,) = doc['load_balancers']
    assert [v['address'] for v in lb['vips']] == ['192.0.2.20',
                                                  '2001:db8:f::20']
    listener = {i['id']: i for i in lb['listeners']}['l2']
    assert listener['protocol'] == 'HTTP' and listener['protocol_port'] == 80
    assert listener['connection_limit'] == 100
    assert listener['insert_headers'] == {'X-Forwarded-For': 'true'}
    assert listener['default_pool_id'] == 'p2'
    (policy,) = listener['l7policies']
    assert policy == {
        'id': 'pol1', 'action': 'REDIRECT_TO_URL', 'position': 1,
        'redirect_url': 'http://example.com/', 'redirect_http_code': 302,
        'admin_state_up': True,
        'rules': [{'id': 'r1', 'type': 'PATH', 'compare_type': 'STARTS_WITH',
                   'value': '/old', 'invert': False,
                   'admin_state_up': True}]}
    (pool,) = lb['pools']
    assert pool['lb_algorithm'] == 'ROUND_ROBIN'
    assert pool['session_persistence'] == {'type': 'HTTP_COOKIE'}
    assert [(m['id'], m['protocol_port'], m['backup'])
            for m in pool['members']] == [('m21', 8080, False),
                                          ('m22', 8081, True)]
    assert pool['healthmonitor']['expected_codes'] == '200,202'
    # An L4 agent asking for the L4 group never gets the L7 document.
    assert 'role' not in store.snapshot(L4)


def test_changes_bump_the_l7_group_and_owe_their_status_there(store):
    gen = store.create_loadbalancer(graph())
    with store.db.session() as s:
        groups = {g.name: (g.generation, g.role)
                  for g in s.query(models.SEGroup)}
    assert groups == {L4: (1, None), L7G: (1, 'tier2')}
    ((st_gen, status),) = pending(store)
    assert st_gen == gen
    with store.db.session() as s:
        assert [p.se_group for p in s.query(models.PendingStatus)] == [L7G]
    assert sorted(i['id'] for i in status['l7policies']) == ['pol1']
    assert sorted(i['id'] for i in status['l7rules']) == ['r1']
    # A member change is the L7 SEs' alone: the L4 group keeps its
    # generation.
    store.put_member({'member_id': 'm23', 'pool_id': 'p2',
                      'address': '198.19.3.2', 'protocol_port': 9000})
    assert store.snapshot(L4)['generation'] == 1
    assert store.snapshot(L7G)['generation'] == 2
    # A listener change is both groups'.
    store.put_listener({'listener_id': 'l4', 'loadbalancer_id': 'lb2',
                        'protocol': 'TERMINATED_HTTPS',
                        'protocol_port': 443,
                        'default_tls_container_ref': 'ref-1'})
    assert store.snapshot(L4)['generation'] == 2
    assert store.snapshot(L7G)['generation'] == 3
    l7.check_document(store.snapshot(L7G))


def policy(policy_id, position, **kw):
    doc = {'l7policy_id': policy_id, 'listener_id': 'l2',
           'action': 'REJECT', 'position': position, 'admin_state_up': True}
    doc.update(kw)
    return doc


def positions(store):
    (lb,) = store.snapshot(L7G)['load_balancers']
    listener = {i['id']: i for i in lb['listeners']}['l2']
    return [(p['id'], p['position']) for p in listener['l7policies']]


def test_l7_policy_positions_follow_octavia(store):
    store.create_loadbalancer(graph())
    store.put_l7policy(policy('pol2', 1))          # inserted first
    assert positions(store) == [('pol2', 1), ('pol1', 2)]
    store.put_l7policy(policy('pol3', 99))         # past the end: last
    assert positions(store) == [('pol2', 1), ('pol1', 2), ('pol3', 3)]
    store.put_l7policy(policy('pol3', 2))          # moved
    assert positions(store) == [('pol2', 1), ('pol3', 2), ('pol1', 3)]
    store.delete_l7policy('pol2')
    assert positions(store) == [('pol3', 1), ('pol1', 2)]
    l7.check_document(store.snapshot(L7G))


def test_l7_policy_and_rule_statuses_and_cascades(store):
    store.create_loadbalancer(graph())
    store.put_l7policy(policy('pol2', 2, action='REDIRECT_TO_POOL',
                              redirect_pool_id='p2', rules=[{
                                  'l7rule_id': 'r2', 'l7policy_id': 'pol2',
                                  'type': 'HOST_NAME',
                                  'compare_type': 'EQUAL_TO',
                                  'value': 'www.example.com'}]))
    store.put_l7rule({'l7rule_id': 'r3', 'l7policy_id': 'pol2',
                      'type': 'HEADER', 'compare_type': 'CONTAINS',
                      'key': 'User-Agent', 'value': 'curl'})
    _, create, rule = pending(store)
    assert {k: [(i['id'], i['changed']) for i in v]
            for k, v in create[1].items()} == {
        'l7policies': [('pol2', True)], 'l7rules': [('r2', True)],
        'listeners': [('l2', False)], 'loadbalancers': [('lb2', False)]}
    assert {k: [(i['id'], i['changed']) for i in v]
            for k, v in rule[1].items()} == {
        'l7rules': [('r3', True)], 'l7policies': [('pol2', False)],
        'listeners': [('l2', False)], 'loadbalancers': [('lb2', False)]}
    (lb,) = store.snapshot(L7G)['load_balancers']
    pol2 = lb['listeners'][0]['l7policies'][1]
    assert [r['id'] for r in pol2['rules']] == ['r2', 'r3']
    store.delete_l7rule('r2')
    store.delete_listener('l2')
    deleted = pending(store)[-1][1]
    assert {k: sorted(i['id'] for i in v
                      if i['provisioning_status'] == 'DELETED')
            for k, v in deleted.items()} == {
        'l7policies': ['pol1', 'pol2'], 'l7rules': ['r1', 'r3'],
        'listeners': ['l2'], 'loadbalancers': []}
    with store.db.session() as s:
        assert s.query(models.L7Policy).count() == 0
        assert s.query(models.L7Rule).count() == 0
    store.delete_loadbalancer('lb2')
    assert store.snapshot(L7G)['load_balancers'] == []
    assert store.snapshot(L4)['load_balancers'] == []


def test_endpoint_merges_l7_updates(store):
    store.create_loadbalancer(graph())
    ep = endpoints.ProviderEndpoint(store)
    old = policy('pol1', 1, action='REDIRECT_TO_URL',
                 redirect_url='http://example.com/', rules=[])
    ep.l7policy_update({}, old, {'redirect_url': 'http://b.example/'})
    ep.l7rule_update({}, {'l7rule_id': 'r1', 'l7policy_id': 'pol1',
                          'type': 'PATH', 'compare_type': 'STARTS_WITH',
                          'value': '/old'}, {'invert': True})
    (lb,) = store.snapshot(L7G)['load_balancers']
    (pol,) = lb['listeners'][0]['l7policies']
    assert pol['redirect_url'] == 'http://b.example/'
    # Rules are not dropped by a policy update.
    assert [(r['id'], r['invert']) for r in pol['rules']] == [('r1', True)]
    ep.l7rule_delete({}, {'l7rule_id': 'r1'})
    ep.l7policy_delete({}, {'l7policy_id': 'pol1'})
    (lb,) = store.snapshot(L7G)['load_balancers']
    assert lb['listeners'][0]['l7policies'] == []


def test_status_is_active_once_the_l7_ses_applied_it(store):
    """Through the reporter: the L7 group's live agents must have applied
    the generation; L7 policies and rules go ONLINE with it."""
    lib, reporter = make_reporter(store, {L4: {'l4se'}, L7G: {'l7se'}})
    store.create_loadbalancer(graph())
    store.record_agent('l4se', L4, applied_generation=1)
    reporter.run_once()
    assert not any('l7policies' in st for st in lib.statuses)
    # A listener (both tiers run it) waits for the L4 SEs too.
    store.record_agent('l4se', L4, applied_generation=0)
    store.record_agent('l7se', L7G, applied_generation=1)
    reporter.run_once()
    assert not any('l7policies' in st for st in lib.statuses)
    store.record_agent('l4se', L4, applied_generation=1)
    reporter.run_once()
    (status,) = [st for st in lib.statuses if 'l7policies' in st]
    assert status['l7policies'] == [{'id': 'pol1',
                                     'provisioning_status': 'ACTIVE',
                                     'operating_status': 'ONLINE'}]
    assert status['l7rules'][0]['operating_status'] == 'ONLINE'
    assert {i['provisioning_status'] for items in status.values()
            for i in items} == {'ACTIVE'}


def applied_everywhere(store):
    """Each group's SE reports its group's current generation applied."""
    with store.db.session() as s:
        current = {g.name: g.generation for g in s.query(models.SEGroup)}
    store.record_agent('l4se', L4, applied_generation=current[L4])
    store.record_agent('l7se', L7G, applied_generation=current[L7G])


def test_admin_down_l7_policies_and_rules_are_offline(store):
    """As the amphora driver reports them (octavia-tempest-plugin's
    test_l7policy_update / test_l7rule_update create them disabled and
    expect OFFLINE), the parent policy of a rule change keeps its own."""
    lib, reporter = make_reporter(store, {L4: {'l4se'}, L7G: {'l7se'}})
    store.create_loadbalancer(graph())
    store.put_l7policy(policy('pol2', 2, admin_state_up=False))
    store.put_l7rule({'l7rule_id': 'r3', 'l7policy_id': 'pol2',
                      'type': 'PATH', 'compare_type': 'EQUAL_TO',
                      'value': '/', 'admin_state_up': False})
    applied_everywhere(store)
    reporter.run_once()

    def operating(kind, obj_id):
        return [i['operating_status'] for st in lib.statuses
                for i in st.get(kind, ()) if i['id'] == obj_id]
    assert set(operating('l7policies', 'pol1')) == {'ONLINE'}
    assert set(operating('l7rules', 'r1')) == {'ONLINE'}
    # Created disabled, and the parent of the disabled rule's change.
    assert set(operating('l7policies', 'pol2')) == {'OFFLINE'}
    assert set(operating('l7rules', 'r3')) == {'OFFLINE'}
    # The rule enabled by an update: ONLINE; its parent still OFFLINE.
    # (The whole rule, as the endpoint merges an update into the stored
    # one.)
    store.put_l7rule({'l7rule_id': 'r3', 'l7policy_id': 'pol2',
                      'type': 'PATH', 'compare_type': 'EQUAL_TO',
                      'value': '/', 'admin_state_up': True})
    applied_everywhere(store)
    reporter.run_once()
    assert operating('l7rules', 'r3')[-1] == 'ONLINE'
    assert set(operating('l7policies', 'pol2')) == {'OFFLINE'}


def test_octavia_status_deleted_l7_objects_have_no_operating_status():
    st = store_mod.Status()
    st.add('l7policies', 'p', 'DELETED')
    assert store_mod.octavia_status(st.doc) == {
        'l7policies': [{'id': 'p', 'provisioning_status': 'DELETED'}]}


def test_a_tier2_lb_is_online_only_with_both_groups_serving(store):
    """Operating status through the reporter's view: the L4 SEs alone do
    not serve a tier-2 load balancer."""
    live = {L4: {'l4se'}, L7G: set()}
    _, reporter = make_reporter(store, live)
    store.create_loadbalancer(graph())
    operating = reporter._view().operating
    assert operating[('loadbalancers', 'lb2')] == 'OFFLINE'
    assert operating[('listeners', 'l2')] == 'OFFLINE'
    assert operating[('listeners', 'l3')] == 'OFFLINE'
    live[L7G] = {'l7se'}
    operating = reporter._view().operating
    # l3 has no pool: ONLINE; lb2 waits for l2's members' reports.
    assert operating[('listeners', 'l3')] == 'ONLINE'
    assert ('loadbalancers', 'lb2') not in operating


def test_l4_capacity_counts_the_l7_ses_not_the_real_members(store):
    """On the L4 SEs a tier-2 listener's members are the L7 SEs: a member
    added to a tier-2 pool takes no L4 slot, an L7 SE joining takes one
    per VIP and listener."""
    store.live_agents = lambda group: {'l4se'}
    store.record_agent('l4se', L4, limits={'max_listeners': 64,
                                           'max_members': 4,
                                           'ring_size': 65537})
    store.create_loadbalancer(graph())          # 2 VIPs x 2 listeners
    with store.db.session() as s:
        assert store_mod._Usage(s, L4).count() == {
            'max_listeners': 4, 'max_members': 0, 'ring_size': 0,
            'ring_slots': 0, 'max_cidrs': 0}
    for i in range(5):                          # over max_members if L4
        store.put_member({'member_id': f'mx{i}', 'pool_id': 'p2',
                          'address': f'198.19.9.{i + 1}',
                          'protocol_port': 80})
    with store.db.session() as s:
        assert s.query(models.Member).filter(
            models.Member.rejected.isnot(None)).count() == 0
    store.set_l7_members(L7G, {'se-a': L7SE['se-a']})
    with store.db.session() as s:
        assert store_mod._Usage(s, L4).count() == {
            'max_listeners': 4, 'max_members': 4, 'ring_size': 1,
            # Each L4 ring sized for its one L7 SE: the first tier.
            'ring_slots': 4 * 4001, 'max_cidrs': 0}


def test_the_fleet_view_shows_the_l7_ses_in_the_l4_rings(store):
    from dsr_provider.cmd import status
    store.create_loadbalancer(graph())
    view = status.fleet(store.db)
    groups = {g['se_group']: g for g in view['se_groups']}
    assert groups[L7G]['role'] == 'tier2'
    assert groups[L7G]['load_balancers'] == 1
    assert groups[L7G]['l7_ses_in_l4_rings'] == []
    assert groups[L4]['role'] == 'tier1'
    assert groups[L4]['l7_ses_in_l4_rings'] is None
    assert status.needs_attention(view)
    assert '!! none taking new flows' in status.render_table(view)
    # Every L7 SE in the rings draining: no new flow has one either.
    store.set_l7_members(L7G, {'se-b': L7SE['se-b']})
    assert status.needs_attention(status.fleet(store.db))
    store.set_l7_members(L7G, L7SE)
    view = status.fleet(store.db)
    text = status.render_table(view)
    assert f'SE group {L7G} (tier-2 L7 group)' in text
    assert ('L7 SEs in the L4 rings: se-a 198.51.100.1/2001:db8:7::1, '
            'se-b 2001:db8:7::2 (draining)') in text
    assert not status.needs_attention(view)
    store.set_l7_members(L7G, dict(L7SE, **{'se-a': dict(
        L7SE['se-a'], unserved={'loadbalancers': ['lb2']})}))
    text = status.render_table(status.fleet(store.db))
    assert ('se-a 198.51.100.1/2001:db8:7::1 (not in the pools of '
            'loadbalancers lb2), se-b') in text
    # An L7 SE that reports but the leader left out of the rings.
    store.record_agent('se-c', L7G, applied_generation=store.snapshot(
        L7G)['generation'])
    view = status.fleet(store.db)
    ses = {se['se_id']: se for g in view['se_groups'] for se in g['ses']}
    assert ses['se-c']['problems'] == [
        'not in the L4 rings: no reason recorded (not in the coordination '
        'group, or no leader yet)']
    assert status.needs_attention(view)
    # With the leader's reason, as its last look recorded it.
    store.set_l7_left_out(L7G, {'se-c': 'kept out by flap damping'})
    view = status.fleet(store.db)
    ses = {se['se_id']: se for g in view['se_groups'] for se in g['ses']}
    assert ses['se-c']['problems'] == [
        'not in the L4 rings: kept out by flap damping']
    se_c = next(line for line in status.render_table(view).splitlines()
                if line.strip().startswith('se-c'))
    assert se_c.split()[2] == '-'           # an L7 SE builds no ring
    # A refused L7 policy and rule are their load balancer's.
    with store.db.session() as s:
        s.get(models.L7Policy, 'pol1').rejected = 'policy refused'
        s.get(models.L7Rule, 'r1').rejected = 'rule refused'
    groups = {g['se_group']: g for g in status.fleet(store.db)['se_groups']}
    (lb2,) = groups[L7G]['load_balancers_not_as_desired']
    assert any('pol1' in r and 'policy refused' in r for r in lb2['reasons'])
    assert any('r1' in r and 'rule refused' in r for r in lb2['reasons'])


def test_listener_statistics_of_a_tier2_lb_come_from_its_l7_ses(store):
    """The L4 SEs see the same connections on their way to the L7 SEs:
    counting both would double `openstack loadbalancer stats show`."""
    lib, reporter = make_reporter(store, {})
    store.create_loadbalancer(graph())
    store.create_loadbalancer(graph1())

    def counters(n):
        return {'active_connections': n, 'bytes_in': 10 * n,
                'bytes_out': 100 * n, 'request_errors': 0,
                'total_connections': n}
    store.record_agent('l4se', L4, stats={'listeners': {'l2': counters(7)}})
    for se_id in ('l7se-1', 'l7se-2'):
        store.record_agent(se_id, L7G,
                           stats={'listeners': {'l2': counters(2)}})
    store.record_agent('g1se', 'g1', stats={'listeners': {'l1': counters(5)}})
    reporter.report_statistics()
    (sent,) = lib.stats
    assert {i['id']: i['total_connections'] for i in sent['listeners']} \
        == {'l2': 4, 'l1': 5}


def test_a_tier2_change_the_l4_ses_reject_is_error(store):
    lib, reporter = make_reporter(store, {L4: {'l4se'}, L7G: {'l7se'}})
    store.create_loadbalancer(graph())
    store.record_agent('l7se', L7G, applied_generation=1)
    store.record_agent('l4se', L4, rejected_generation=1,
                       error='bad snapshot')
    reporter.run_once()
    (status,) = [st for st in lib.statuses if 'loadbalancers' in st]
    assert status['loadbalancers'][0]['provisioning_status'] == 'ERROR'
    # A member change is the L7 SEs' alone: ACTIVE without the L4 SEs.
    store.put_member({'member_id': 'm23', 'pool_id': 'p2',
                      'address': '198.19.3.2', 'protocol_port': 9000})
    store.record_agent('l7se', L7G, applied_generation=2)
    reporter.run_once()
    assert any(item['id'] == 'm23' and
               item['provisioning_status'] == 'ACTIVE'
               for st in lib.statuses for item in st.get('members', ()))


def test_an_se_group_is_either_l4_or_l7(store):
    """A tier-2 load balancer whose L7 group is somebody's L4 group, or a
    load balancer on an L7 group, is refused whole (ERROR, no agent waits)
    and the other group's documents are unchanged."""
    store.create_loadbalancer(graph1())                   # L4 group g1
    bad = dict(graph(), loadbalancer_id='lb3', listeners=[], pools=[],
               dsr=dict(graph()['dsr'], l7_se_group='g1'))
    store.create_loadbalancer(bad)
    with store.db.session() as s:
        reason = s.get(models.LoadBalancer, 'lb3').rejected
        assert s.get(models.SEGroup, 'g1').role is None
    assert 'l7_se_group g1 serves load balancers as their L4' in reason
    ((gen, status),) = [p for p in pending(store)
                        if p[1]['loadbalancers'][0]['id'] == 'lb3']
    assert gen == 0 and status['loadbalancers'][0]['rejected'] == reason
    assert 'role' not in store.snapshot('g1')
    assert [lb['id'] for lb in store.snapshot('g1')['load_balancers']] == [
        'lb1']
    # A rename does not bring it back (it did: the update cleared it).
    store.update_loadbalancer({'loadbalancer_id': 'lb3', 'name': 'renamed'})
    with store.db.session() as s:
        assert s.get(models.LoadBalancer, 'lb3').rejected == reason
        assert s.get(models.SEGroup, 'g1').role is None
    assert pending(store)[-1][1]['loadbalancers'][0]['rejected'] == reason
    assert [lb['id'] for lb in store.snapshot('g1')['load_balancers']] == [
        'lb1']

    store.create_loadbalancer(graph())                    # L7 group L7G
    on_l7 = dict(graph1(), loadbalancer_id='lb4', listeners=[], pools=[],
                 dsr={'se_group': L7G, 'tier': 1})
    store.create_loadbalancer(on_l7)
    with store.db.session() as s:
        assert 'se_group edge-l7 is the L7 SE group' in s.get(
            models.LoadBalancer, 'lb4').rejected
    doc = store.snapshot(L7G)
    l7.check_document(doc)
    assert [lb['id'] for lb in doc['load_balancers']] == ['lb2']
    # An L7 group whose last load balancer is gone is still watched.
    store.delete_loadbalancer('lb2')
    assert store.l7_groups() == [L7G]


def test_the_fleet_view_compares_each_group_with_its_own_generation(store):
    """A tier-2 change waits for L7 generation N and L4 generation M:
    dsr-status reports each group's agents against their own."""
    from dsr_provider.cmd import status
    store.create_loadbalancer(graph())      # L4 gen 1, L7 gen 1
    store.put_member({'member_id': 'm23', 'pool_id': 'p2',
                      'address': '198.19.3.2', 'protocol_port': 9000})
    store.put_listener({'listener_id': 'l4', 'loadbalancer_id': 'lb2',
                        'protocol': 'HTTP', 'protocol_port': 81})
    # L4 generation 2, L7 generation 3.
    store.record_agent('l4se', L4, applied_generation=2)
    store.record_agent('l7se', L7G, applied_generation=2)
    groups = {g['se_group']: g for g in status.fleet(store.db)['se_groups']}
    assert groups[L4]['load_balancers_not_as_desired'] == []
    (lb,) = groups[L7G]['load_balancers_not_as_desired']
    assert lb['id'] == 'lb2'
    assert lb['reasons'] == ['generation 3 not applied by l7se']


def _owed(store, kind, obj_id):
    """(provisioning status, rejection reason) the last change owes the
    object."""
    for item in pending(store)[-1][1].get(kind, ()):
        if item['id'] == obj_id:
            return item['provisioning_status'], item.get('rejected')
    return None


def test_an_object_the_l7_ses_cannot_run_is_rejected_alone(store):
    """What the L7 schema refuses (the driver's checks may miss it: stored
    before they existed, or the VIPs could not be looked up) is rejected
    alone, ERROR, with what is below it; its load balancer's other
    objects stay in the L7 document.  Before, the whole load balancer was
    left out while its statuses said ACTIVE."""
    store.create_loadbalancer(graph())
    store.put_l7policy(policy('polx', 1, listener_id='l3', rules=[{
        'l7rule_id': 'rx', 'l7policy_id': 'polx', 'type': 'PATH',
        'compare_type': 'EQUAL_TO', 'value': '/'}]))
    status, reason = _owed(store, 'l7policies', 'polx')
    assert status == 'ERROR' and 'L7 policies on HTTP or TERMINATED_HTTPS' \
        in reason and 'the listener is UDP' in reason
    assert _owed(store, 'l7rules', 'rx')[0] == 'ERROR'
    store.put_member({'member_id': 'mv', 'pool_id': 'p2',
                      'address': '192.0.2.20', 'protocol_port': 80,
                      'weight': 1, 'admin_state_up': True})
    status, reason = _owed(store, 'members', 'mv')
    assert status == 'ERROR' and 'VIP' in reason
    doc = store.snapshot(L7G)
    l7.check_document(doc)
    (lb,) = doc['load_balancers']
    listeners = {i['id']: i for i in lb['listeners']}
    assert set(listeners) == {'l2', 'l3'}
    assert listeners['l3']['l7policies'] == []
    assert [p['id'] for p in listeners['l2']['l7policies']] == ['pol1']
    (pool,) = lb['pools']
    assert [m['id'] for m in pool['members']] == ['m21', 'm22']

    # A new pool it cannot run is rejected alone, with its members; the
    # listener it was created for serves without it, until fixed.
    bad = {'pool_id': 'p9', 'loadbalancer_id': 'lb2', 'listener_id': 'l3',
           'lb_algorithm': 'ROUND_ROBIN', 'protocol': 'UDP',
           'admin_state_up': True,
           'session_persistence': {'type': 'SOURCE_IP',
                                   'persistence_timeout': -1},
           'members': [{'member_id': 'm91', 'pool_id': 'p9',
                        'address': '198.19.9.1', 'protocol_port': 53,
                        'weight': 1, 'admin_state_up': True}]}
    store.put_pool(bad)
    status, reason = _owed(store, 'pools', 'p9')
    assert status == 'ERROR' and 'persistence_timeout' in reason
    assert _owed(store, 'members', 'm91')[0] == 'ERROR'
    (lb,) = store.snapshot(L7G)['load_balancers']
    assert [p['id'] for p in lb['pools']] == ['p2']
    assert 'default_pool_id' not in {
        i['id']: i for i in lb['listeners']}['l3']
    store.put_pool(dict(bad, session_persistence={
        'type': 'SOURCE_IP', 'persistence_timeout': 60}), update=True)
    assert _owed(store, 'pools', 'p9') == ('ACTIVE', None)
    (lb,) = store.snapshot(L7G)['load_balancers']
    assert [p['id'] for p in lb['pools']] == ['p2', 'p9']
    assert {i['id']: i for i in lb['listeners']}['l3'][
        'default_pool_id'] == 'p9'
    with store.db.session() as s:
        # Still at the VIP: still rejected; the policy too.
        assert s.get(models.Member, 'mv').rejected
        assert s.get(models.L7Policy, 'polx').rejected
    store.delete_l7policy('polx')
    l7.check_document(store.snapshot(L7G))


def test_the_l7_document_leaves_out_an_object_stored_before_the_check(
        store):
    """An object the store did not reject (stored by an earlier release)
    is left out of the L7 document alone, not its load balancer."""
    store.create_loadbalancer(graph())
    with store.db.session() as s:
        s.add(models.L7Policy(id='old', listener_id='l3', doc={
            'action': 'REJECT', 'position': 1, 'admin_state_up': True}))
    (lb,) = store.snapshot(L7G)['load_balancers']
    assert {i['id']: [p['id'] for p in i['l7policies']]
            for i in lb['listeners']} == {'l2': ['pol1'], 'l3': []}


def test_a_load_balancer_an_l7_se_could_not_run_is_error(store):
    """An L7 SE reports the load balancers its HAProxy did not take
    (rejected_objects, amphora_agent/l7/engine.py): the change is ERROR
    and so is the load balancer's operating status, as for an L4 SE's
    rejection; reported ACTIVE/ONLINE before, the reason nowhere."""
    lib, reporter = make_reporter(store, {L4: {'l4se'}, L7G: {'l7se'}})
    store.create_loadbalancer(graph())
    reason = 'L7 SE l7se: HAProxy for lb2 exited with 1: cannot bind socket'
    applied_everywhere(store)
    with store.db.session() as s:
        current = s.get(models.SEGroup, L7G).generation
    endpoints.AgentEndpoint(store).report_state(
        {}, 'l7se', L7G, {'role': 'tier2', 'applied_generation': current,
                          'rejected_objects': {'loadbalancers': {
                              'lb2': reason}}})
    reporter.run_once()

    def last(kind, obj_id, field):
        return [i[field] for st in lib.statuses for i in st.get(kind, ())
                if i['id'] == obj_id and field in i][-1]
    assert last('loadbalancers', 'lb2', 'provisioning_status') == 'ERROR'
    assert last('loadbalancers', 'lb2', 'operating_status') == 'ERROR'
    assert last('listeners', 'l2', 'provisioning_status') == 'ERROR'


def test_a_member_batch_rejects_alone_the_members_the_l7_ses_cannot_run(
        store):
    """A member is checked alone (a pool's members change one by one or
    in batches; the whole load balancer's document is not checked for
    each): one at the VIP in a batch is ERROR, the others are served."""
    store.create_loadbalancer(graph())
    m21, m22 = graph()['pools'][0]['members']
    store.batch_update_members('p2', [
        m21, m22,
        {'member_id': 'mv', 'pool_id': 'p2', 'address': '192.0.2.20',
         'protocol_port': 80, 'weight': 1, 'admin_state_up': True},
        {'member_id': 'm23', 'pool_id': 'p2', 'address': '198.19.3.2',
         'protocol_port': 80, 'weight': 1, 'admin_state_up': True}])
    status, reason = _owed(store, 'members', 'mv')
    assert status == 'ERROR' and 'VIP' in reason
    assert _owed(store, 'members', 'm23')[0] == 'ACTIVE'
    (lb,) = store.snapshot(L7G)['load_balancers']
    (pool,) = lb['pools']
    assert [m['id'] for m in pool['members']] == ['m21', 'm22', 'm23']


def test_remembered_member_checks_follow_content_and_vips():
    """The L7 check remembers member verdicts by content and VIPs (a pool
    change re-checks its load balancer's whole document): the same member
    at another load balancer's VIP, or changed, is checked again."""
    member = {'id': 'm1', 'address': '192.0.2.20', 'protocol_port': 8080,
              'weight': 1, 'admin_state_up': True, 'backup': False}
    assert l7_snapshot._member_refusal(member, ['192.0.2.9']) is None
    assert 'VIP' in l7_snapshot._member_refusal(member, ['192.0.2.20'])
    assert l7_snapshot._member_refusal(member, ['192.0.2.9']) is None
    bad = dict(member, protocol_port=70000)
    assert 'protocol_port' in l7_snapshot._member_refusal(bad, ['192.0.2.9'])
    # The document's objects: a refused member leaves, the rest stays.
    item = {'id': 'lb', 'admin_state_up': True,
            'vips': [{'address': '192.0.2.20'}], 'listeners': [],
            'pools': [{'id': 'p', 'protocol': 'HTTP',
                       'lb_algorithm': 'ROUND_ROBIN',
                       'session_persistence': None, 'healthmonitor': None,
                       'members': [member, dict(member, id='m2',
                                                address='198.19.1.2')]}]}
    kept, refused = l7_snapshot.runnable(item)
    assert [m['id'] for m in kept['pools'][0]['members']] == ['m2']
    assert [(k, i) for k, i, _ in refused] == [('members', 'm1')]
    assert len(item['pools'][0]['members']) == 2      # the caller's copy


def _row(store, kind, obj_id):
    """(rejected, diverged, doc) of a stored object."""
    with store.db.session() as s:
        row = s.get(store_mod._MODELS[kind], obj_id)
        return row.rejected, getattr(row, 'diverged', None), dict(row.doc)


def _l7_lb(store):
    (lb,) = store.snapshot(L7G)['load_balancers']
    return lb


def test_an_update_the_l7_ses_cannot_run_changes_nothing(store):
    """An update of a running tier-2 object that its L7 SEs could not run
    is refused as capacity refuses one: what runs goes on running its
    previous version, the update is ERROR and its fields are remembered
    as diverged (docs/refusals.md).  Before, the object itself was
    rejected: one bad update took a running pool off the L7 SEs."""
    store.create_loadbalancer(graph())
    pool = {k: v for k, v in graph()['pools'][0].items()
            if k not in ('members', 'healthmonitor')}   # as Octavia sends
    store.put_pool(dict(pool, session_persistence={
        'type': 'SOURCE_IP', 'persistence_timeout': -1}), update=True)
    status, reason = _owed(store, 'pools', 'p2')
    assert status == 'ERROR' and 'persistence_timeout' in reason
    assert pending(store)[-1][0] == 0           # settled: nothing applies
    rejected, diverged, doc = _row(store, 'pools', 'p2')
    assert rejected is None
    assert diverged['session_persistence']['persistence_timeout'] == -1
    assert doc['session_persistence']['type'] == 'HTTP_COOKIE'
    (running,) = _l7_lb(store)['pools']
    assert running['id'] == 'p2' and len(running['members']) == 2
    assert running['session_persistence'] == {'type': 'HTTP_COOKIE'}
    assert {i['id']: i for i in _l7_lb(store)['listeners']}['l2'][
        'default_pool_id'] == 'p2'
    # An accepted update sending the field again is served, and converges.
    store.put_pool(dict(pool, session_persistence={
        'type': 'SOURCE_IP', 'persistence_timeout': 60}), update=True)
    assert _owed(store, 'pools', 'p2') == ('ACTIVE', None)
    assert _row(store, 'pools', 'p2')[1] is None
    assert _l7_lb(store)['pools'][0]['session_persistence'] == {
        'type': 'SOURCE_IP', 'persistence_timeout': 60}
    # A listener (with its port check's savepoint inside this one).
    listener = {k: v for k, v in graph()['listeners'][0].items()
                if k != 'l7policies'}
    store.put_listener(dict(listener, timeout_client_data=-5), update=True)
    status, reason = _owed(store, 'listeners', 'l2')
    assert status == 'ERROR' and 'timeout_client_data' in reason
    assert _row(store, 'listeners', 'l2')[:2] == (
        None, {'timeout_client_data': -5})
    l2 = {i['id']: i for i in _l7_lb(store)['listeners']}['l2']
    assert l2['timeout_client_data'] == 50000 and l2['l7policies']


def test_a_rule_update_that_would_stop_its_running_policy_is_refused(
        store):
    """A rule's problem is its policy's (the policy would match more
    without it): an update of a rule that would take its running policy
    off the L7 SEs is refused, the reason naming the policy."""
    store.create_loadbalancer(graph())
    rule = graph()['listeners'][0]['l7policies'][0]['rules'][0]
    store.put_l7rule(dict(rule, type='HEADER', key=None), update=True)
    status, reason = _owed(store, 'l7rules', 'r1')
    assert status == 'ERROR' and 'l7policy pol1 would not run' in reason
    rejected, _, doc = _row(store, 'l7rules', 'r1')
    assert rejected is None and doc['type'] == 'PATH'
    assert _row(store, 'l7policies', 'pol1')[0] is None
    (running,) = {i['id']: i for i in _l7_lb(store)['listeners']}['l2'][
        'l7policies']
    assert [(r['id'], r['type']) for r in running['rules']] == [
        ('r1', 'PATH')]
    # The policy itself: kept, its refused fields diverged until an
    # accepted update sends them again.
    pol1 = {k: v for k, v in graph()['listeners'][0]['l7policies'][0]
            .items() if k != 'rules'}
    store.put_l7policy(dict(pol1, redirect_http_code=999), update=True)
    status, reason = _owed(store, 'l7policies', 'pol1')
    assert status == 'ERROR' and 'redirect_http_code' in reason
    assert _row(store, 'l7policies', 'pol1')[:2] == (
        None, {'redirect_http_code': 999})
    assert {i['id']: i for i in _l7_lb(store)['listeners']}['l2'][
        'l7policies'][0]['redirect_http_code'] == 302
    store.put_l7policy(dict(pol1, redirect_http_code=301), update=True)
    assert _owed(store, 'l7policies', 'pol1') == ('ACTIVE', None)
    assert _row(store, 'l7policies', 'pol1')[1] is None
    # A new rule it cannot run rejects its (new) policy alone, as before.
    store.put_l7policy(policy('pol2', 2, listener_id='l2', rules=[{
        'l7rule_id': 'r2', 'l7policy_id': 'pol2', 'type': 'HEADER',
        'compare_type': 'EQUAL_TO', 'value': 'x'}]))
    assert _owed(store, 'l7policies', 'pol2')[0] == 'ERROR'
    assert _row(store, 'l7policies', 'pol2')[0].startswith(
        l7_snapshot.REFUSED)


def test_a_member_update_the_l7_ses_cannot_run_changes_nothing(store):
    """Alone or in a batch, a running member's update its L7 SEs could
    not run leaves it serving as it was (ERROR until its next update: a
    member is nobody's parent, nothing to keep diverged)."""
    store.create_loadbalancer(graph())
    m21, m22 = graph()['pools'][0]['members']
    store.put_member(dict(m21, monitor_port=70000), update=True)
    status, reason = _owed(store, 'members', 'm21')
    assert status == 'ERROR' and 'monitor_port' in reason
    rejected, _, doc = _row(store, 'members', 'm21')
    assert rejected is None and 'monitor_port' not in doc
    store.batch_update_members('p2', [m21, dict(m22, monitor_port=70000)])
    status, reason = _owed(store, 'members', 'm22')
    assert status == 'ERROR' and 'monitor_port' in reason
    rejected, _, doc = _row(store, 'members', 'm22')
    assert rejected is None and 'monitor_port' not in doc
    assert [m['id'] for m in _l7_lb(store)['pools'][0]['members']] == [
        'm21', 'm22']
    # A valid update is served.
    store.put_member(dict(m21, monitor_port=9000), update=True)
    assert _owed(store, 'members', 'm21') == ('ACTIVE', None)
    assert _l7_lb(store)['pools'][0]['members'][0]['monitor_port'] == 9000


def test_a_load_balancer_its_l7_ses_cannot_run_at_all_is_rejected(store):
    """A tier-2 load balancer refused whole by the L7 schema (its VIPs) is
    rejected with everything created with it -- ERROR, in neither
    group's document -- not left ACTIVE while no L7 SE runs it and its L4
    SEs steer its traffic there."""
    bad = dict(graph(), vip_address=None, additional_vips=[])
    store.create_loadbalancer(bad)
    status, reason = _owed(store, 'loadbalancers', 'lb2')
    assert status == 'ERROR' and reason.startswith(l7_snapshot.REFUSED)
    assert _owed(store, 'listeners', 'l2')[0] == 'ERROR'
    assert _owed(store, 'members', 'm21')[0] == 'ERROR'
    assert pending(store)[-1][0] == 0
    assert _row(store, 'loadbalancers', 'lb2')[0] == reason
    assert store.snapshot(L7G)['load_balancers'] == []
    assert not snapshot_mod.parse(store.snapshot(L4)).load_balancers


def _pool_update(**fields):
    """An update of pool p2 as Octavia sends it (no members, no
    monitor)."""
    pool = {k: v for k, v in graph()['pools'][0].items()
            if k not in ('members', 'healthmonitor')}
    return dict(pool, **fields)


def test_what_never_ran_does_not_refuse_an_update(store):
    """An object its L7 SEs cannot run, stored before the check (left out
    of the L7 document, never marked): an update of something else goes
    ahead, and that object is rejected on its own."""
    store.create_loadbalancer(graph())
    with store.db.session() as s:
        s.add(models.L7Policy(id='old', listener_id='l3', doc={
            'action': 'REJECT', 'position': 1, 'admin_state_up': True}))
    store.put_pool(_pool_update(lb_algorithm='LEAST_CONNECTIONS'),
                   update=True)
    assert _owed(store, 'pools', 'p2') == ('ACTIVE', None)
    assert _row(store, 'pools', 'p2')[1] is None
    assert _l7_lb(store)['pools'][0]['lb_algorithm'] == 'LEAST_CONNECTIONS'
    assert _row(store, 'l7policies', 'old')[0].startswith(
        l7_snapshot.REFUSED)
    assert _owed(store, 'l7policies', 'old')[0] == 'ERROR'   # Octavia told
    # One rejected by the check before: the same.
    store.put_l7policy(policy('polx', 1, listener_id='l3'))
    assert _owed(store, 'l7policies', 'polx')[0] == 'ERROR'
    store.put_pool(_pool_update(lb_algorithm='ROUND_ROBIN'), update=True)
    assert _owed(store, 'pools', 'p2') == ('ACTIVE', None)


def test_a_load_balancer_stored_without_vips_is_rejected_not_its_child(
        store):
    store.create_loadbalancer(graph())
    with store.db.session() as s:
        lb = s.get(models.LoadBalancer, 'lb2')
        lb.doc = dict(lb.doc, vip_address=None, additional_vips=[])
    store.put_pool(_pool_update(lb_algorithm='LEAST_CONNECTIONS'),
                   update=True)
    assert _row(store, 'loadbalancers', 'lb2')[0].startswith(
        l7_snapshot.REFUSED)
    assert _row(store, 'pools', 'p2')[:2] == (None, None)
    assert store.snapshot(L7G)['load_balancers'] == []


def test_a_new_rule_never_takes_its_running_policy_off(store):
    """A rule's problem is its policy's: a new rule (or an update of a
    rejected one) the L7 SEs cannot run is rejected alone; its policy
    goes on running as it was."""
    store.create_loadbalancer(graph())
    bad = {'l7rule_id': 'r9', 'l7policy_id': 'pol1', 'type': 'HEADER',
           'compare_type': 'EQUAL_TO', 'value': 'x', 'admin_state_up': True}
    store.put_l7rule(bad)
    status, reason = _owed(store, 'l7rules', 'r9')
    assert status == 'ERROR' and 'l7policy pol1 would not run' in reason
    assert _row(store, 'l7rules', 'r9')[0] == reason
    assert _row(store, 'l7policies', 'pol1')[0] is None
    (running,) = {i['id']: i for i in _l7_lb(store)['listeners']}['l2'][
        'l7policies']
    assert [r['id'] for r in running['rules']] == ['r1']
    store.put_l7rule(dict(bad, compare_type='CONTAINS'), update=True)
    assert _owed(store, 'l7rules', 'r9')[0] == 'ERROR'
    assert _row(store, 'l7policies', 'pol1')[0] is None
    store.put_l7rule(dict(bad, key='X-Key'), update=True)
    assert _owed(store, 'l7rules', 'r9') == ('ACTIVE', None)
    (running,) = {i['id']: i for i in _l7_lb(store)['listeners']}['l2'][
        'l7policies']
    assert [r['id'] for r in running['rules']] == ['r1', 'r9']


def test_a_policy_converges_whether_it_ran_or_not(store):
    store.create_loadbalancer(graph())
    pol1 = {k: v for k, v in graph()['listeners'][0]['l7policies'][0]
            .items() if k != 'rules'}
    store.put_l7policy(dict(pol1, redirect_http_code=999), update=True)
    assert _row(store, 'l7policies', 'pol1')[1] == {
        'redirect_http_code': 999}
    with store.db.session() as s:      # its listener refused meanwhile
        s.get(models.Listener, 'l2').rejected = 'capacity'
    store.put_l7policy(dict(pol1, redirect_http_code=301), update=True)
    assert _owed(store, 'l7policies', 'pol1') == ('ACTIVE', None)
    assert _row(store, 'l7policies', 'pol1')[1] is None


def test_what_a_refused_update_carried_is_refused_with_it(store):
    """A refused update of a listener that nested a new policy: the
    policy was never stored, so it is ERROR too, not owed ACTIVE."""
    store.create_loadbalancer(graph())
    listener = {k: v for k, v in graph()['listeners'][0].items()
                if k != 'l7policies'}
    store.put_listener(dict(listener, timeout_client_data=-5, l7policies=[
        policy('polN', 2, listener_id='l2')]), update=True)
    assert _owed(store, 'listeners', 'l2')[0] == 'ERROR'
    status, reason = _owed(store, 'l7policies', 'polN')
    assert status == 'ERROR' and 'listener l2 refused' in reason
    assert pending(store)[-1][0] == 0
    with store.db.session() as s:
        assert s.get(models.L7Policy, 'polN') is None


def test_a_member_below_a_rejected_pool_is_not_kept(store):
    """A member of a pool the L7 SEs do not run does not run either: its
    refused update rejects it (no previous version runs)."""
    store.create_loadbalancer(graph())
    with store.db.session() as s:
        s.get(models.Pool, 'p2').rejected = l7_snapshot.REFUSED + 'x'
    m21 = graph()['pools'][0]['members'][0]
    store.put_member(dict(m21, monitor_port=70000), update=True)
    (item,) = [i for i in pending(store)[-1][1]['members']
               if i['id'] == 'm21']
    assert item['provisioning_status'] == 'ERROR' and 'kept' not in item
    assert _row(store, 'members', 'm21')[0].startswith(l7_snapshot.REFUSED)


def test_a_tier2_update_refused_for_its_port_stays_diverged(store):
    """The L7 check's savepoint holds the port check's: an update refused
    for a VIP clash keeps its diverged fields."""
    store.create_loadbalancer(graph())
    g = graph()
    store.create_loadbalancer({
        'loadbalancer_id': 'lb3', 'vip_address': '192.0.2.20',
        'admin_state_up': True, 'flavor': g['flavor'], 'dsr': g['dsr'],
        'listeners': [{'listener_id': 'l9', 'loadbalancer_id': 'lb3',
                       'protocol': 'TCP', 'protocol_port': 8080,
                       'admin_state_up': True, 'l7policies': []}],
        'pools': []})
    listener = {k: v for k, v in graph()['listeners'][0].items()
                if k != 'l7policies'}
    store.put_listener(dict(listener, protocol_port=8080), update=True)
    assert _owed(store, 'listeners', 'l2')[0] == 'ERROR'
    assert _row(store, 'listeners', 'l2')[1] == {'protocol_port': 8080}


def test_a_later_verdict_that_keeps_nothing_is_not_kept():
    status = store_mod.Status()
    status.add('pools', 'p')
    status.reject('pools', 'p', 'capacity', kept=True)
    status.reject('pools', 'p', 'refused whole')
    (item,) = status.doc['pools']
    assert item['rejected'] == 'refused whole' and 'kept' not in item


def test_a_change_records_the_generations_that_run_it(store):
    """LoadBalancer.changed_generation (its L7 group's) and
    l4_changed_generation (its L4 group's, when the change reached the
    L4 SEs): what dsr-status compares with each SE's applied generation
    once the change's status was sent."""
    store.create_loadbalancer(graph())

    def recorded():
        with store.db.session() as s:
            row = s.get(models.LoadBalancer, 'lb2')
            return row.changed_generation, row.l4_changed_generation
    l7_gen, l4_gen = (store.snapshot(L7G)['generation'],
                      store.snapshot(L4)['generation'])
    assert recorded() == (l7_gen, l4_gen)
    # A member: the L7 SEs only.
    store.put_member({'member_id': 'm23', 'pool_id': 'p2',
                      'address': '198.19.3.2', 'protocol_port': 8080,
                      'weight': 1, 'admin_state_up': True, 'backup': False})
    assert recorded() == (store.snapshot(L7G)['generation'], l4_gen)
    assert store.snapshot(L7G)['generation'] > l7_gen
