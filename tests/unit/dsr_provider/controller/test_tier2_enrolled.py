"""The coordination backend (tooz) is not authenticated: with
authentication on, the controller believes the L7 group membership only of
SEs enrolled in that group -- a stranger joining it cannot get the L4 SEs
to steer tier-2 traffic to its address, nor hold the group's contract down
(TLS settings left out).  Real enrolment table (SQLite)."""

import logging

from cryptography.hazmat.primitives.asymmetric import ed25519

from dsr_provider.controller import enrolment
from dsr_provider.controller import tier2
from dsr_wire import l7


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
