"""dsr-status's view of a controller database (SQLite, real schema and
store): SEs, ring ABI mismatch, load balancers not as desired, exit
status, table and JSON output."""

import json
import time

from dsr_provider.cmd import status
from dsr_provider.controller import endpoints
from dsr_provider.controller import models


def lb(i, listeners=1):
    """A pool of one member per listener, on the listener's port (the
    controller rejects a member on another port)."""
    lb_id = f'lb{i}'

    def suffix(n):
        return f'-{n}' if n else ''
    return {'loadbalancer_id': lb_id, 'vip_address': f'192.0.2.{i}',
            'admin_state_up': True,
            'listeners': [{'listener_id': f'l{i}-{n}',
                           'loadbalancer_id': lb_id, 'protocol': 'TCP',
                           'protocol_port': 80 + n,
                           'default_pool_id': f'p{i}{suffix(n)}',
                           'admin_state_up': True}
                          for n in range(listeners)],
            'pools': [{'pool_id': f'p{i}{suffix(n)}',
                       'loadbalancer_id': lb_id,
                       'lb_algorithm': 'SOURCE_IP_PORT', 'protocol': 'TCP',
                       'admin_state_up': True,
                       'members': [{'member_id': f'm{i}{suffix(n)}',
                                    'pool_id': f'p{i}{suffix(n)}',
                                    'address': '198.19.1.2',
                                    'protocol_port': 80 + n, 'weight': 1,
                                    'admin_state_up': True}]}
                      for n in range(listeners)]}


def report(store, se_id, generation, ring_abi=2, **state):
    """What the controller's endpoint records for an agent's report."""
    state = dict({'applied_generation': generation, 'error': None,
                  'ring_abi': ring_abi,
                  'announced': ['192.0.2.1/32'],
                  'bgp': {'peers': {'198.18.1.1': 'established'}},
                  'limits': {'max_listeners': 8, 'max_members': 100,
                             'ring_size': 65537, 'conn_table_size': 1024,
                             'ring_slots': 20000},
                  'helpers': {'bgp': {'state': 'running'}},
                  'serviceable': True}, **state)
    endpoints.AgentEndpoint(store).report_state({}, se_id, 'g1', state)


def test_a_healthy_group(store):
    gen = store.create_loadbalancer(lb(1, listeners=2))
    report(store, 'se1', gen)
    report(store, 'se2', gen)
    view = status.fleet(store.db)
    (group,) = view['se_groups']
    assert group['se_group'] == 'g1' and group['generation'] == gen
    assert not group['ring_abi_mismatch']
    assert group['load_balancers_not_as_desired'] == []
    se1 = group['ses'][0]
    assert se1['ring_abi'] == 2 and se1['behind'] == 0
    assert se1['bgp'] == {'peers': {'198.18.1.1': 'established'},
                          'established': 1, 'announced': ['192.0.2.1/32']}
    # These agents say nothing of what they hold (older agents).
    assert se1['capacity']['listeners'] == {'used': 2, 'limit': 8,
                                            'held': None}
    # Two pools of one member: a first-tier ring (4001 slots) each.
    assert se1['capacity']['ring slots'] == {'used': 2 * 4001,
                                             'limit': 20000, 'held': None}
    assert se1['capacity']['flows'] == {'used': None, 'limit': 1024,
                                        'held': None}
    assert se1['problems'] == []
    assert group['desired_use'] == {
        'listeners': 2, 'members': 2, 'largest pool': 1,
        'ring slots': 8002, 'allowed cidrs': 0}
    assert not status.needs_attention(view)
    json.dumps(view)
    text = status.render_table(view)
    assert 'se1' in text and '1/1 up' in text and 'MISMATCH' not in text
    # A column per limit, in the legend's order: '?' for what an SE does
    # not say it holds, '-' for allowed cidrs, a limit these SEs do not
    # report.
    se1_line = next(line for line in text.splitlines()
                    if line.strip().startswith('se1'))
    assert ' ?/8 ?/100 ?/65537 ?/20000 - ?/1024 ' in se1_line, se1_line
    assert ('desired state, as the controller counts it: 2 listeners, '
            '2 members, 1 largest pool, 8002 ring slots, 0 allowed cidrs'
            ) in text
    assert ('(capacity: listeners members largest-pool ring-slots '
            'allowed-cidrs flows: what each SE holds/its limit') in text


def test_what_each_se_holds_is_its_own(store):
    """Each SE's own count of what its dataplane holds, per limit: one
    that left objects out holds less than the controller counts, and
    flows are the SE's alone.  A malformed count is dropped."""
    gen = store.create_loadbalancer(lb(1, listeners=2))
    report(store, 'se1', gen, held={
        'max_listeners': 2, 'max_members': 2, 'ring_size': 1,
        'ring_slots': 8002, 'max_cidrs': 0, 'conn_table_size': 17})
    report(store, 'se2', gen, held={
        'max_listeners': 1, 'max_members': -1, 'ring_size': True,
        'ring_slots': '4001', 'conn_table_size': 3, 'bogus': 5})
    view = status.fleet(store.db)
    se1, se2 = view['se_groups'][0]['ses']
    assert se1['capacity']['flows'] == {'used': None, 'limit': 1024,
                                        'held': 17}
    assert se1['capacity']['members'] == {'used': 2, 'limit': 100,
                                          'held': 2}
    assert {label: c['held'] for label, c in se2['capacity'].items()} == {
        'listeners': 1, 'members': None, 'largest pool': None,
        'ring slots': None, 'flows': 3}
    assert se1['problems'] == se2['problems'] == []
    text = status.render_table(view)
    lines = {line.split()[0]: line for line in text.splitlines()
             if line.strip().startswith('se')}
    assert ' 2/8 2/100 1/65537 8002/20000 - 17/1024 ' in lines['se1'], text
    assert ' 1/8 ?/100 ?/65537 ?/20000 - 3/1024 ' in lines['se2'], text


def test_an_se_holding_more_than_its_limit_is_flagged(store):
    """Whatever the controller counts (here within the limit), an SE that
    says it holds more than a limit needs an operator (a second writer of
    its maps, a lowered limit)."""
    gen = store.create_loadbalancer(lb(1))
    report(store, 'se1', gen, held={'max_listeners': 9})
    view = status.fleet(store.db)
    (se1,) = view['se_groups'][0]['ses']
    assert se1['capacity']['listeners'] == {'used': 1, 'limit': 8,
                                            'held': 9}
    assert se1['problems'] == ['listeners over capacity (holds 9 of 8)']
    assert status.needs_attention(view)


def test_a_desired_state_that_does_not_fit_is_flagged(store):
    """The controller's count of the desired state over an SE's limit,
    though the SE holds no more than its limit (it left the rest out)."""
    gen = store.create_loadbalancer(lb(1, listeners=9))
    report(store, 'se1', gen, held={'max_listeners': 8})
    view = status.fleet(store.db)
    (se1,) = view['se_groups'][0]['ses']
    assert se1['capacity']['listeners'] == {'used': 9, 'limit': 8,
                                            'held': 8}
    assert se1['problems'][0] == (
        'listeners over capacity (the desired state needs 9 of 8)')
    assert status.needs_attention(view)


def test_ring_abi_mismatch_lagging_se_and_rejections_are_flagged(store):
    gen1 = store.create_loadbalancer(lb(1))
    report(store, 'se1', gen1)
    report(store, 'se2', gen1, ring_abi=1,
           bgp={'peers': {'198.18.1.1': 'active'}})
    gen2 = store.create_loadbalancer(lb(2))
    # se1 runs generation 2 but left lb2's listener out; se2 is behind.
    report(store, 'se1', gen2, rejected_objects={'listeners': {
        'l2-0': 'listener l2-0: exceeds max_listeners 8 of SE se1'}})
    view = status.fleet(store.db)
    (group,) = view['se_groups']
    assert group['ring_abi_mismatch']
    assert group['ring_abis'] == {'se1': 2, 'se2': 1}
    (lb2,) = group['load_balancers_not_as_desired']
    assert lb2['id'] == 'lb2'
    assert any('not applied by se2' in r for r in lb2['reasons'])
    assert any('exceeds max_listeners' in r and 'SE se1' in r
               for r in lb2['reasons'])
    se2 = group['ses'][1]
    assert se2['behind'] == 1
    assert '1 generation(s) behind' in se2['problems']
    assert 'BGP session down' in se2['problems']
    assert status.needs_attention(view)
    text = status.render_table(view)
    assert 'RING ABI MISMATCH: se1 runs 2, se2 runs 1' in text
    assert 'lb2' in text and 'lb1' not in text.split('not as desired')[1]


def test_enrolled_silent_and_stale_ses(store):
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from dsr_provider.controller import enrolment
    enrolment.enrol(store.db, 'g1', 'se9',
                    ed25519.Ed25519PrivateKey.generate().public_key())
    gen = store.create_loadbalancer(lb(1))
    report(store, 'se1', gen)
    view = status.fleet(store.db, stale_after=5, now=time.time() + 60)
    ses = {se['se_id']: se for se in view['se_groups'][0]['ses']}
    assert ses['se9'] == {'se_id': 'se9', 'reported': False,
                          'problems': ['enrolled, never reported']}
    assert any(p.startswith('no report for') for p in ses['se1']['problems'])
    # This host's clock 60 s behind the controller's: said, not hidden.
    view = status.fleet(store.db, stale_after=5, now=time.time() - 60)
    (se1,) = [se for se in view['se_groups'][0]['ses']
              if se['se_id'] == 'se1']
    assert se1['last_report_age_s'] == 0
    assert any('ahead of this host\'s clock' in p for p in se1['problems'])
    assert status.fleet(store.db, se_group='other')['se_groups'] == []


def test_older_agent_without_ring_abi_or_bgp(store):
    gen = store.create_loadbalancer(lb(1))
    endpoints.AgentEndpoint(store).report_state(
        {}, 'se1', 'g1', {'applied_generation': gen, 'ring_abi': 'two',
                          'bgp': ['junk']})
    (se,) = status.fleet(store.db)['se_groups'][0]['ses']
    assert se['ring_abi'] is None
    assert se['bgp'] == {'peers': {}, 'established': 0, 'announced': []}
    assert '?' in status.render_table(status.fleet(store.db))


def test_an_error_an_se_reported_is_shown_escaped(store):
    """What an SE reported is not trusted with the operator's terminal."""
    gen = store.create_loadbalancer(lb(1))
    report(store, 'se1', gen, error='boom\x1b[2J\x1b]0;pwned\x07 end')
    text = status.render_table(status.fleet(store.db))
    assert '\x1b' not in text and '\x07' not in text
    assert 'boom\\x1b[2J' in text


def test_a_change_an_se_does_not_run_stays_listed_after_its_status(store):
    """The reporter sends a change's verdict (ERROR for an SE that refused
    it or did not apply it in time) and forgets what it waited for; the
    load balancer is still not as desired while an SE heard from runs
    an older generation of it, and listed until that SE applies it."""
    gen1 = store.create_loadbalancer(lb(1))
    report(store, 'se1', gen1)
    report(store, 'se2', gen1)
    gen2 = store.create_loadbalancer(lb(2))
    report(store, 'se1', gen2)
    report(store, 'se2', gen1, rejected_generation=gen2,
           error=f'generation {gen2} refused')
    with store.db.session() as s:
        s.query(models.PendingStatus).delete()      # the verdict was sent
    (group,) = status.fleet(store.db)['se_groups']
    (lb2,) = group['load_balancers_not_as_desired']
    assert lb2 == {'id': 'lb2', 'reasons': [
        f'generation {gen2} refused by se2']}
    gen3 = store.create_loadbalancer(lb(3))
    report(store, 'se2', gen3)
    report(store, 'se1', gen3)
    (group,) = status.fleet(store.db)['se_groups']
    assert group['load_balancers_not_as_desired'] == []


def test_what_changes_nothing_records_no_generation(store):
    """LoadBalancer.changed_generation moves with a change the SEs must
    run, not with one refused whole (over capacity: nothing stored runs
    differently), and a deleted load balancer records nothing."""
    store.live_agents = lambda group: {'se1'}   # its limits enforced
    gen = store.create_loadbalancer(lb(1, listeners=8))
    report(store, 'se1', gen)

    def changed():
        with store.db.session() as s:
            row = s.get(models.LoadBalancer, 'lb1')
            return None if row is None else row.changed_generation
    assert changed() == gen
    store.put_listener({
        'listener_id': 'l1-9', 'loadbalancer_id': 'lb1', 'protocol': 'TCP',
        'protocol_port': 99, 'admin_state_up': True})
    with store.db.session() as s:
        assert s.get(models.Listener, 'l1-9').rejected
    assert changed() == gen
    store.delete_loadbalancer('lb1')
    assert changed() is None
