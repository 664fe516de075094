"""The coordination backend (tooz) is not authenticated: with
authentication on, the controller believes the L7 group membership only of
SEs enrolled in that group -- a stranger joining it cannot get the L4 SEs
to steer tier-2 traffic to its address, nor hold the group's contract down
(TLS settings left out).  Real enrolment table (SQLite)."""

import logging

from cryptography.hazmat.primitives.asymmetric import ed25519

from dsr_provider.controller import endpoints
from dsr_provider.controller import enrolment
from dsr_provider.controller import guard as guard_mod
from dsr_provider.controller import tier2
from dsr_wire import l7
from tests.unit.dsr_provider.controller.test_guard import enrolled
from tests.unit.dsr_provider.controller import test_store_tier2 as t2


def caps(address, contract=None):
    doc = {'role': tier2.ROLE, 'ready': True,
           'tunnel_addresses': {'4': address}}
    if contract is not None:
        doc['l7_contract'] = contract
    return doc


def test_only_enrolled_members_are_believed(store, caplog):
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    enrolment.enrol(store.db, 'edge-l7', 'l7a', key)
    enrolment.enrol(store.db, 'other-l7', 'l7b', key)
    live = {'l7a': caps('198.18.7.1', l7.CONTRACT_VERSION),
            'l7b': caps('198.18.7.2'),           # enrolled elsewhere
            'intruder': caps('203.0.113.66')}    # no contract: the oldest
    members_of = tier2.enrolled_only(store.db, lambda group: dict(live))
    with caplog.at_level(logging.WARNING):
        seen = members_of('edge-l7')
        members_of('edge-l7')
    assert set(seen) == {'l7a'}
    assert set(tier2.ready_members(seen)) == {'l7a'}
    # The intruder's missing contract does not hold the group back.
    assert l7.group_contract(seen) == l7.CONTRACT_VERSION
    assert caplog.text.count('member intruder of the coordination group '
                             'is not enrolled') == 1


def test_an_enrolled_ses_tooz_entry_steers_only_to_its_signed_addresses(
        store, caplog, tmp_path):
    """Anybody who reaches the backend can also write an enrolled SE's
    entry.  With authentication on, the L4 pools take an L7 SE's tunnel
    addresses from its signed report_state (the endpoint through the real
    guard), and an SE that has not reported is not a member yet; an L7
    agent from before reported addresses (its report has none) is
    believed from tooz, as before."""
    signers = enrolled(store, tmp_path,
                       (('l7a', 'edge-l7'), ('l7old', 'edge-l7')))
    ep = endpoints.AgentEndpoint(store, guard=guard_mod.AgentGuard(store.db))
    live = {'l7a': caps('203.0.113.66'),            # rewritten by someone
            'l7old': caps('198.18.7.9')}
    watcher = tier2.MembershipWatcher(
        store, tier2.enrolled_only(store.db, lambda group: dict(live)),
        signed_only=True)
    store.create_loadbalancer(t2.graph())           # names L7 group edge-l7

    def pool():
        return store.l7_members(t2.L7G)
    assert t2.L7G == 'edge-l7'
    watcher.run_once()
    assert pool() == {}                             # nobody reported yet

    # Another kind of report stored first is not its state.
    stats = {'se_id': 'l7a', 'se_group': 'edge-l7',
             'stats': {'listeners': {}}}
    ep.report_stats(signers['l7a'].context('report_stats', stats), **stats)
    watcher.run_once()
    assert pool() == {}

    def report(se, state):
        args = {'se_id': se, 'se_group': 'edge-l7', 'state': state}
        ep.report_state(signers[se].context('report_state', args), **args)
    report('l7a', {'applied_generation': 0,
                   'tunnel_addresses': {'4': '198.18.7.1'}})
    report('l7old', {'applied_generation': 0})
    with caplog.at_level(logging.WARNING):
        watcher.run_once()
        watcher.run_once()
    # l7a's entry names another address than its signed state: out until
    # they agree (an impostor, or a new address not reported yet).
    assert pool() == {'l7old': {'tunnel_addresses': {'4': '198.18.7.9'},
                                'draining': False}}
    assert caplog.text.count("L7 SE l7a: the coordination backend gives "
                             "tunnel addresses {'4': '203.0.113.66'}") == 1
    live['l7a'] = caps('198.18.7.1')
    watcher.run_once()
    assert pool()['l7a'] == {'tunnel_addresses': {'4': '198.18.7.1'},
                             'draining': False}
    live['l7a'] = caps('203.0.113.66')
    # Without authentication (tests of older controllers) tooz is believed.
    open_watcher = tier2.MembershipWatcher(store, lambda group: dict(live))
    open_watcher.run_once()
    assert pool()['l7a']['tunnel_addresses'] == {'4': '203.0.113.66'}
