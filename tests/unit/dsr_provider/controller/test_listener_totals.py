"""What an SE counted before its current counters, kept in the database
where its reports are written (listener_totals.carry from
Store.record_agent and enrolment.revoke) and summed by the leader
(carried_totals, totals)."""

from cryptography.hazmat.primitives.asymmetric import ed25519

from dsr_provider.controller import enrolment
from dsr_provider.controller import listener_totals
from dsr_provider.controller import models


def counters(bytes_in, total=1, errors=0, bytes_out=0, active=0):
    return {'bytes_in': bytes_in, 'bytes_out': bytes_out, 'packets': total,
            'total_connections': total, 'request_errors': errors,
            'active_connections': active}


def stats(**listeners):
    return {'listeners': listeners, 'members': {}}


def carried(store):
    """{(se_id, se_group, listener id): (bytes_in, bytes_out,
    request_errors, total_connections)}"""
    with store.db.session() as s:
        return {(r.se_id, r.se_group, r.listener_id): (
            r.bytes_in, r.bytes_out, r.request_errors, r.total_connections)
            for r in s.query(models.CarriedStats)}


def test_counters_that_go_on_carry_nothing(store):
    store.record_agent('se1', 'g1', stats=stats(l1=counters(10)))
    store.record_agent('se1', 'g1', stats=stats(l1=counters(10)))
    store.record_agent('se1', 'g1', stats=stats(l1=counters(50, total=3)))
    store.record_agent('se1', 'g1', applied_generation=0)    # no stats
    assert carried(store) == {}


def test_a_counter_going_down_carries_the_last_ones(store):
    """Any of the four: the dataplane counted again from 0."""
    store.record_agent('se1', 'g1', stats=stats(
        l1=counters(100, total=10, errors=2), l2=counters(40)))
    store.record_agent('se1', 'g1', stats=stats(
        l1=counters(200, total=10, errors=1), l2=counters(41)))
    assert carried(store) == {('se1', 'g1', 'l1'): (100, 0, 2, 10)}
    store.record_agent('se1', 'g1', stats=stats(
        l1=counters(5, total=1), l2=counters(1)))
    assert carried(store) == {('se1', 'g1', 'l1'): (300, 0, 3, 20),
                              ('se1', 'g1', 'l2'): (41, 0, 0, 1)}


def test_a_listener_the_report_no_longer_has_is_carried(store):
    """Taken off the SE's dataplane: put back, it counts from 0."""
    store.record_agent('se1', 'g1', stats=stats(l1=counters(100),
                                                l2=counters(7)))
    store.record_agent('se1', 'g1', stats=stats(l2=counters(8)))
    assert carried(store) == {('se1', 'g1', 'l1'): (100, 0, 0, 1)}


def test_an_se_moving_group_carries_everything_in_its_old_group(store):
    store.record_agent('se1', 'g1', stats=stats(l1=counters(100)))
    store.record_agent('se1', 'g2', applied_generation=0)
    assert carried(store) == {('se1', 'g1', 'l1'): (100, 0, 0, 1)}
    with store.db.session() as s:
        assert s.get(models.AgentState, 'se1').stats is None
    # Its first report in the new group is not compared with the old one.
    store.record_agent('se1', 'g2', stats=stats(l1=counters(1)))
    assert carried(store) == {('se1', 'g1', 'l1'): (100, 0, 0, 1)}


def test_a_revoked_se_carries_everything(store):
    enrolment.enrol(store.db, 'g1', 'se1',
                    ed25519.Ed25519PrivateKey.generate().public_key())
    store.record_agent('se1', 'g1', stats=stats(l1=counters(100),
                                                l2=counters(3)))
    assert enrolment.revoke(store.db, 'se1')
    assert carried(store) == {('se1', 'g1', 'l1'): (100, 0, 0, 1),
                              ('se1', 'g1', 'l2'): (3, 0, 0, 1)}
    with store.db.session() as s:
        assert s.get(models.AgentState, 'se1') is None


def test_junk_counters_count_as_zero(store):
    store.record_agent('se1', 'g1', stats=stats(
        l1={'bytes_in': 'x', 'total_connections': -4}, l2=None))
    store.record_agent('se1', 'g1', stats=stats())
    assert carried(store) == {('se1', 'g1', 'l1'): (0, 0, 0, 0),
                              ('se1', 'g1', 'l2'): (0, 0, 0, 0)}


def test_carried_totals_count_the_counting_group_only(store):
    """And drop what was carried for listeners that no longer exist."""
    with store.db.session() as s:
        for se_id, group, lid, n in (('a', 'g1', 'l1', 10),
                                     ('b', 'g1', 'l1', 5),
                                     ('c', 'l4', 'l1', 1000),
                                     ('a', 'g1', 'gone', 7)):
            s.add(models.CarriedStats(
                se_id=se_id, se_group=group, listener_id=lid, bytes_in=n,
                bytes_out=0, request_errors=1, total_connections=n))
    with store.db.session() as s:
        listener_totals.one_snapshot(s)
        sums = listener_totals.carried_totals(s, {'l1': 'g1', 'l9': 'g1'})
    assert sums == {'l1': {'bytes_in': 15, 'bytes_out': 0,
                           'request_errors': 2, 'total_connections': 15}}
    assert {k[2] for k in carried(store)} == {'l1'}
    assert listener_totals.totals(sums, [
        ('l1', counters(3, active=4), True),
        ('l1', counters(2, active=9), False),
        ('l9', counters(1, active=1), True)]) == {
        'l1': {'bytes_in': 20, 'bytes_out': 0, 'request_errors': 2,
               'total_connections': 17, 'active_connections': 4},
        'l9': {'bytes_in': 1, 'bytes_out': 0, 'request_errors': 0,
               'total_connections': 1, 'active_connections': 1}}
