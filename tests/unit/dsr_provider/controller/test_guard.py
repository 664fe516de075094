"""AgentGuard: enrolment, groups and object ownership on a real SQLite
database with real keys."""

import time

import pytest

from dsr_provider.controller import enrolment
from dsr_provider.controller import guard as guard_mod
from dsr_wire import auth


@pytest.fixture
def signers(tmp_path, store):
    return enrolled(store, tmp_path, (('se1', 'g1'), ('se2', 'g2')))


def _lb(store, lb_id, group, member_id):
    store.create_loadbalancer({'loadbalancer_id': lb_id,
                               'vip_address': '192.0.2.10',
                               'dsr': {'se_group': group}})
    store.put_listener({'listener_id': f'l-{lb_id}',
                        'loadbalancer_id': lb_id, 'protocol': 'TCP',
                        'protocol_port': 80,
                        'default_pool_id': f'p-{lb_id}'})
    store.put_pool({'pool_id': f'p-{lb_id}', 'loadbalancer_id': lb_id,
                    'listener_id': f'l-{lb_id}', 'protocol': 'TCP',
                    'lb_algorithm': 'SOURCE_IP_PORT'})
    store.put_member({'member_id': member_id, 'pool_id': f'p-{lb_id}',
                      'address': '198.19.1.2', 'protocol_port': 80})


def check(guard, signer, method, **args):
    guard.check(signer.context(method, args), method, args)


def test_enrolled_se_of_the_group_only(store, signers):
    guard = guard_mod.AgentGuard(store.db)
    check(guard, signers['se1'], 'get_config', se_id='se1', se_group='g1')
    with pytest.raises(guard_mod.Refused, match='enrolled in group g2'):
        check(guard, signers['se2'], 'get_config', se_id='se2',
              se_group='g1')
    with pytest.raises(guard_mod.Refused, match='bad signature'):
        check(guard, signers['se2'], 'get_config', se_id='se1',
              se_group='g1')
    enrolment.revoke(store.db, 'se1')
    with pytest.raises(guard_mod.Refused, match='not enrolled'):
        check(guard, signers['se1'], 'get_config', se_id='se1',
              se_group='g1')
    assert guard.refusals.total() == 3


def test_reports_on_another_groups_objects_are_refused(store, signers):
    _lb(store, 'lb1', 'g1', 'm1')
    _lb(store, 'lb2', 'g2', 'm2')
    guard = guard_mod.AgentGuard(store.db)
    check(guard, signers['se1'], 'report_member_status', se_id='se1',
          se_group='g1', generation=1, statuses={'m1': 'ONLINE',
                                                 'gone': 'ONLINE'})
    with pytest.raises(guard_mod.Refused, match='member m2 .group g2'):
        check(guard, signers['se1'], 'report_member_status', se_id='se1',
              se_group='g1', generation=1, statuses={'m2': 'ERROR'})
    with pytest.raises(guard_mod.Refused, match='member m2'):
        check(guard, signers['se1'], 'report_stats', se_id='se1',
              se_group='g1', stats={'listeners': {}, 'members': {
                  'm2': {'bytes_in': 1}}})
    with pytest.raises(guard_mod.Refused, match='listener l-lb2'):
        check(guard, signers['se1'], 'report_state', se_id='se1',
              se_group='g1', state={'rejected_objects': {
                  'listeners': {'l-lb2': 'x'}}})


def test_replay_is_refused_by_every_controller_and_after_a_restart(
        store, signers, caplog):
    """Two guards on one database are two controllers of a deployment: a
    message one accepted is a replay for the other, and for a guard built
    afterwards (a restarted controller)."""
    ctl1 = guard_mod.AgentGuard(store.db)
    ctl2 = guard_mod.AgentGuard(store.db)
    args = {'se_id': 'se1', 'se_group': 'g1',
            'state': {'applied_generation': 3}}
    ctxt = signers['se1'].context('report_state', args)
    ctl1.check(ctxt, 'report_state', args)
    for guard in (ctl2, ctl1, guard_mod.AgentGuard(store.db)):
        with pytest.raises(guard_mod.Refused, match='replayed message'):
            guard.check(ctxt, 'report_state', args)
        assert guard.refusals.total() == 1
    lines = [r.getMessage() for r in caplog.records
             if 'replayed message' in r.getMessage()]
    assert len(lines) == 3, lines
    assert all('refused report_state from se_id=se1 se_group=g1' in line
               for line in lines)
    # A fresh message of the same SE is not a replay.
    ctl2.check(signers['se1'].context('report_state', args),
               'report_state', args)


def test_nonces_outlive_their_window_by_one_window_then_go(store, signers):
    from dsr_provider.controller import models
    from dsr_provider.controller import replay
    nonces = replay.SharedNonces(store.db, window=60)
    now = time.time()
    assert nonces.add('k:old', now - 130)      # expires now - 70: purged
    assert nonces.add('k:recent', now - 110)   # expires now - 50: kept
    nonces._next_purge = 0.0
    assert nonces.add('k:new', now)
    with store.db.session() as s:
        kept = s.query(models.SeenNonce).count()
    assert kept == 2
    assert not nonces.add('k:recent', now - 110)
    assert nonces.add('k:old', now - 130)      # no longer remembered


def test_database_unavailable_refuses_every_message(store, signers, caplog):
    """Fail-closed: without the database neither the enrolment nor a
    replay can be checked."""
    from dsr_provider.controller import db as db_mod
    guard = guard_mod.AgentGuard(db_mod.Database(
        'sqlite:////nonexistent-dir/controller.db'))
    args = {'se_id': 'se1', 'se_group': 'g1'}
    with pytest.raises(guard_mod.Refused, match='database unavailable'):
        guard.check(signers['se1'].context('get_config', args),
                    'get_config', args)
    assert guard.refusals.total() == 1
    assert 'refused get_config from se_id=se1 se_group=g1: controller ' \
        'database unavailable' in caplog.text


def enrolled(store, tmp_path, ses):
    """{se_id: auth.Signer} of SEs ((se_id, group), ...) each enrolled in
    its group with a key of its own."""
    signers = {}
    for se, group in ses:
        path = str(tmp_path / f'{se}.key')
        auth.generate_key(path)
        signers[se] = auth.Signer(path)
        enrolment.enrol(store.db, group, se,
                        auth.load_private_key(path).public_key())
    return signers


def test_l7_ses_report_on_their_tier2_load_balancers(store, tmp_path):
    """A tier-2 load balancer's L7 SEs run its listeners, pools, members
    and monitors: their member status and listener statistics are theirs
    to report (its se_group is the L4 group, whose SEs run its listeners
    only); another group's L7 SEs may not."""
    from tests.unit.dsr_provider.controller import test_store_tier2 as t2
    store.create_loadbalancer(t2.graph())
    signers = enrolled(store, tmp_path, (('l7se', t2.L7G), ('l4se', t2.L4),
                                         ('other', 'other-l7')))
    guard = guard_mod.AgentGuard(store.db)
    check(guard, signers['l7se'], 'report_member_status', se_id='l7se',
          se_group=t2.L7G, generation=1,
          statuses={'m21': 'ONLINE', 'm22': 'ERROR'})
    check(guard, signers['l7se'], 'report_stats', se_id='l7se',
          se_group=t2.L7G, stats={'listeners': {'l2': {'bytes_in': 1}},
                                  'members': {}})
    check(guard, signers['l7se'], 'report_state', se_id='l7se',
          se_group=t2.L7G, state={'rejected_objects': {
              'pools': {'p2': 'x'}, 'healthmonitors': {'hm2': 'x'},
              'loadbalancers': {'lb2': 'x'}}})
    # The L4 SEs run its load balancer and listeners, not its pools.
    check(guard, signers['l4se'], 'report_stats', se_id='l4se',
          se_group=t2.L4, stats={'listeners': {'l2': {'bytes_in': 1}},
                                 'members': {}})
    with pytest.raises(guard_mod.Refused, match='member m21 .group edge-l7'):
        check(guard, signers['l4se'], 'report_member_status', se_id='l4se',
              se_group=t2.L4, generation=1, statuses={'m21': 'ONLINE'})
    with pytest.raises(guard_mod.Refused, match='listener l2'):
        check(guard, signers['other'], 'report_stats', se_id='other',
              se_group='other-l7', stats={'listeners': {
                  'l2': {'bytes_in': 1}}, 'members': {}})


def test_reports_on_l7_policies_and_rules_are_checked_like_the_rest(
        store, tmp_path):
    """A tier-2 load balancer's L7 policies and rules run on its L7 SEs
    alone: another group's SE reporting them rejected (an ERROR for the
    tenant) is refused, as is a report on a kind nobody reports on."""
    from tests.unit.dsr_provider.controller import test_store_tier2 as t2
    store.create_loadbalancer(t2.graph())
    signers = enrolled(store, tmp_path, (('l7se', t2.L7G), ('other', 'g1')))
    guard = guard_mod.AgentGuard(store.db)
    rejected = {'l7policies': {'pol1': 'x'}, 'l7rules': {'r1': 'x'}}
    check(guard, signers['l7se'], 'report_state', se_id='l7se',
          se_group=t2.L7G, state={'rejected_objects': rejected})
    with pytest.raises(guard_mod.Refused, match='l7policy pol1'):
        check(guard, signers['other'], 'report_state', se_id='other',
              se_group='g1', state={'rejected_objects': rejected})
    with pytest.raises(guard_mod.Refused, match='l7rule r1'):
        check(guard, signers['other'], 'report_state', se_id='other',
              se_group='g1', state={'rejected_objects': {
                  'l7rules': {'r1': 'x'}}})
    with pytest.raises(guard_mod.Refused, match='unknown kind bogus'):
        check(guard, signers['l7se'], 'report_state', se_id='l7se',
              se_group=t2.L7G, state={'rejected_objects': {
                  'bogus': {'x': 'y'}}})


def test_a_message_is_checked_in_one_transaction(store, signers,
                                                 count_sessions):
    """Every SE sends two messages every stats interval: the enrolment,
    the objects' owners and the nonce are one transaction.  A report
    refused for another group's object still spends its nonce."""
    _lb(store, 'lb1', 'g1', 'm1')
    _lb(store, 'lb2', 'g2', 'm2')
    guard = guard_mod.AgentGuard(store.db)
    opened = count_sessions()
    guard.nonces._next_purge = float('inf')     # the purge's own, apart
    args = {'se_id': 'se1', 'se_group': 'g1', 'stats': {
        'listeners': {'l-lb1': {'bytes_in': 1}},
        'members': {'m1': {'bytes_in': 1}}}}
    guard.check(signers['se1'].context('report_stats', args),
                'report_stats', args)
    assert len(opened) == 1
    foreign = {'se_id': 'se1', 'se_group': 'g1', 'generation': 1,
               'statuses': {'m2': 'ONLINE'}}
    ctxt = signers['se1'].context('report_member_status', foreign)
    with pytest.raises(guard_mod.Refused, match='member m2'):
        guard.check(ctxt, 'report_member_status', foreign)
    assert len(opened) == 2
    with pytest.raises(guard_mod.Refused, match='replayed message'):
        guard.check(ctxt, 'report_member_status', foreign)


def test_objects_known_to_be_the_senders_are_not_read_again(store,
                                                            signers):
    """An object's groups never change while it exists: once seen run by
    the sender's group it is not looked up again.  Another group's SE
    naming it is still refused, and objects not known yet are read."""
    import sqlalchemy as sa
    _lb(store, 'lb1', 'g1', 'm1')
    _lb(store, 'lb2', 'g2', 'm2')
    statements = []
    sa.event.listen(store.db.engine, 'before_cursor_execute',
                    lambda conn, cursor, sql, *a: statements.append(sql))

    def member_reads():
        return sum(1 for sql in statements if 'FROM members' in sql)

    guard = guard_mod.AgentGuard(store.db, known_objects=3)

    def reads(signer, **args):
        """Member reads while the guard checks a member status report."""
        before = member_reads()
        guard.check(signer.context('report_member_status', args),
                    'report_member_status', args)
        return member_reads() - before

    assert reads(signers['se1'], se_id='se1', se_group='g1', generation=1,
                 statuses={'m1': 'ONLINE', 'gone': 'ONLINE'}) == 1
    assert reads(signers['se1'], se_id='se1', se_group='g1', generation=1,
                 statuses={'m1': 'ERROR'}) == 0
    with pytest.raises(guard_mod.Refused, match='member m1 .group g1'):
        reads(signers['se2'], se_id='se2', se_group='g2', generation=1,
              statuses={'m1': 'ONLINE'})
    # A new member of g1: read once, then known.  Past known_objects the
    # guard forgets and reads again.
    store.put_member({'member_id': 'm1b', 'pool_id': 'p-lb1',
                      'address': '198.19.1.3', 'protocol_port': 80})
    both = {'m1': 'ONLINE', 'm1b': 'ONLINE'}
    assert reads(signers['se1'], se_id='se1', se_group='g1', generation=1,
                 statuses=both) == 1
    assert reads(signers['se1'], se_id='se1', se_group='g1', generation=1,
                 statuses=both) == 0
    # One set of groups per combination, shared by its objects.
    assert guard._groups[('members', 'm1')] is \
        guard._groups[('members', 'm1b')]
    guard.known_objects = 1
    assert reads(signers['se1'], se_id='se1', se_group='g1', generation=1,
                 statuses={'m2x': 'ONLINE', 'm1b': 'ONLINE'}) == 1
    assert reads(signers['se1'], se_id='se1', se_group='g1', generation=1,
                 statuses={'m1': 'ONLINE'}) == 1
    assert guard.refusals.total() == 1


def test_a_forged_identity_cannot_forge_log_lines(store, signers, caplog):
    """A refusal is logged before anything is trusted: an se_id with a
    line break (or ten thousand characters) stays on one short line."""
    guard = guard_mod.AgentGuard(store.db)
    forged = 'se1\n2026-12-06 00:00:00 CRITICAL all SEs down' + 'x' * 10000
    with caplog.at_level('WARNING'):
        with pytest.raises(guard_mod.Refused):
            guard.check({}, 'report_state',
                        {'se_id': forged, 'se_group': 'g1', 'state': {}})
    [line] = [r.getMessage() for r in caplog.records]
    assert '\n' not in line and len(line) < 300, line
    assert 'se_id=se1\\n2026-12-06 00:00:00 CRITICAL' in line
