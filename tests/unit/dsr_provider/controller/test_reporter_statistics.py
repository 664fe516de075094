"""Listener statistics as Octavia shows them (reporter.report_statistics,
listener_totals.py): cumulative totals that never go down when an SE's
dataplane restarts, an SE leaves or another controller leads, active
connections from the SEs heard from only."""

import threading

from cryptography.hazmat.primitives.asymmetric import ed25519

from dsr_provider.controller import db as db_mod
from dsr_provider.controller import enrolment
from dsr_provider.controller import listener_totals
from dsr_provider.controller import models
from dsr_provider.controller import reporter as reporter_mod
from dsr_provider.controller import store as store_mod
from tests.unit.dsr_provider.controller.test_reporter import backdate
from tests.unit.dsr_provider.controller.test_store import FakeDriverLib
from tests.unit.dsr_provider.controller.test_store import graph
from tests.unit.dsr_provider.controller import test_store_tier2 as tier2
from tests.unit.dsr_provider import fakes


def make(store, live, **kw):
    lib = FakeDriverLib()
    store.create_loadbalancer(graph())
    return lib, reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                      lambda group: set(live), **kw)


def enrol(store, se_id):
    enrolment.enrol(store.db, 'g1', se_id,
                    ed25519.Ed25519PrivateKey.generate().public_key())


def report(store, se_id, bytes_in, total, errors=0, active=0):
    store.record_agent(se_id, 'g1', stats={'listeners': {'l1': {
        'bytes_in': bytes_in, 'bytes_out': 0, 'packets': total,
        'total_connections': total, 'active_connections': active,
        'request_errors': errors}}})


def shown(lib):
    """What Octavia shows for l1: the last value sent of each counter."""
    entry = {}
    for stats in lib.stats:
        for item in stats['listeners']:
            if item['id'] == 'l1':
                entry = item
    return {k: v for k, v in entry.items() if k != 'id'}


def test_a_dataplane_restart_never_lowers_the_totals(store):
    """An SE's counters start again from 0 when its dataplane is loaded
    again (reboot, dsrctl reset): Octavia's totals went down with them."""
    lib, reporter = make(store, {'se1', 'se2'})
    report(store, 'se1', 100, 10, errors=2)
    report(store, 'se2', 50, 5)
    reporter.report_statistics()
    assert shown(lib) == {'bytes_in': 150, 'bytes_out': 0,
                          'total_connections': 15, 'request_errors': 2,
                          'active_connections': 0}
    report(store, 'se1', 7, 1)                  # restarted
    reporter.report_statistics()
    assert shown(lib)['bytes_in'] == 157
    assert shown(lib)['total_connections'] == 16
    assert shown(lib)['request_errors'] == 2
    report(store, 'se1', 20, 3, errors=1)       # and counts on
    reporter.report_statistics()
    assert shown(lib)['bytes_in'] == 170
    assert shown(lib)['total_connections'] == 18
    assert shown(lib)['request_errors'] == 3
    report(store, 'se1', 5, 1)                  # restarted again
    reporter.report_statistics()
    assert shown(lib)['bytes_in'] == 175
    assert shown(lib)['total_connections'] == 19


def test_active_connections_come_from_the_ses_heard_from_only(store):
    """A stopped SE's last active_connections counted forever; its
    traffic still counts in the totals."""
    live = {'se1', 'se2', 'se3'}
    lib, reporter = make(store, live)
    report(store, 'se1', 100, 10, active=4)
    report(store, 'se2', 50, 5, active=6)
    report(store, 'se3', 10, 1, active=1)
    reporter.report_statistics()
    assert shown(lib)['active_connections'] == 11
    backdate(store, models.AgentState, 31, se_id='se2')     # silent
    reporter.report_statistics()
    assert shown(lib)['active_connections'] == 5
    assert shown(lib)['bytes_in'] == 160
    live.discard('se3')                         # left tooz, row still here
    reporter.report_statistics()
    assert shown(lib) == {'bytes_in': 160, 'bytes_out': 0,
                          'total_connections': 16, 'request_errors': 0,
                          'active_connections': 4}
    report(store, 'se2', 60, 6, active=2)       # heard from again
    reporter.report_statistics()
    assert shown(lib)['active_connections'] == 6
    assert shown(lib)['bytes_in'] == 170


def test_a_revoked_se_keeps_its_traffic_in_the_totals(store):
    """revoke-se deletes the SE's row: its history went with it."""
    enrol(store, 'se2')
    lib, reporter = make(store, {'se1', 'se2'})
    report(store, 'se1', 100, 10, active=3)
    report(store, 'se2', 50, 5, active=2)
    reporter.report_statistics()
    assert enrolment.revoke(store.db, 'se2')
    reporter.report_statistics()
    assert shown(lib) == {'bytes_in': 150, 'bytes_out': 0,
                          'total_connections': 15, 'request_errors': 0,
                          'active_connections': 3}
    # Enrolled again, it counts from its new dataplane on.
    report(store, 'se2', 4, 1, active=1)
    reporter.report_statistics()
    assert shown(lib)['bytes_in'] == 154
    assert shown(lib)['active_connections'] == 4


def carried_rows(store):
    with store.db.session() as s:
        return sorted((r.se_id, r.se_group, r.listener_id, r.bytes_in)
                      for r in s.query(models.CarriedStats))


def test_a_deleted_listener_is_forgotten(store):
    lib, reporter = make(store, {'se1'})
    report(store, 'se1', 100, 10)
    report(store, 'se1', 7, 1)                  # restarted: 100 carried
    reporter.report_statistics()
    assert carried_rows(store) == [('se1', 'g1', 'l1', 100)]
    store.delete_listener('l1')
    report(store, 'se1', 2, 1)                  # not applied yet, restarted
    reporter.report_statistics()
    assert len(lib.stats) == 1                  # nothing more about l1
    assert carried_rows(store) == []


def another_controller(store, live):
    """(driver lib, Reporter) of another controller process on the same
    database: nothing of the first one's memory."""
    other = store_mod.Store(db_mod.Database(str(store.db.engine.url)), 'g1')
    lib = FakeDriverLib()
    return lib, reporter_mod.Reporter(other, fakes.FakeNotifier(), lib,
                                      lambda group: set(live))


def test_a_new_leader_shows_the_same_totals(store):
    """Another controller taking the lead (or this one restarted) computes
    the totals from the database alone: what the SEs' restarts and the
    revoked SEs carried is there, and the totals do not step down."""
    enrol(store, 'se2')
    lib, reporter = make(store, {'se1', 'se2'})
    report(store, 'se1', 100, 10, errors=1)
    report(store, 'se2', 50, 5, active=2)
    reporter.report_statistics()
    report(store, 'se1', 7, 1)                  # restarted
    assert enrolment.revoke(store.db, 'se2')    # left
    reporter.report_statistics()
    assert shown(lib) == {'bytes_in': 157, 'bytes_out': 0,
                          'total_connections': 16, 'request_errors': 1,
                          'active_connections': 0}
    lib2, new_leader = another_controller(store, {'se1'})
    new_leader.report_statistics()
    assert shown(lib2) == shown(lib)
    report(store, 'se1', 9, 2)                  # and counts on
    new_leader.report_statistics()
    assert shown(lib2)['bytes_in'] == 159


def test_a_moved_se_keeps_its_traffic_in_its_old_groups_listeners(store):
    """An SE enrolled in another group reports its new group (its state
    first): what it counted for its old group's listeners stays."""
    lib, reporter = make(store, {'se1'})
    report(store, 'se1', 100, 10)
    reporter.report_statistics()
    store.record_agent('se1', 'g2', applied_generation=0)
    reporter.report_statistics()
    assert shown(lib)['bytes_in'] == 100
    store.record_agent('se1', 'g2', stats={'listeners': {}})
    report(store, 'se2', 5, 1)
    lib2, new_leader = another_controller(store, {'se2'})
    new_leader.report_statistics()
    assert shown(lib2)['bytes_in'] == 105
    assert carried_rows(store) == [('se1', 'g1', 'l1', 100)]


def test_what_an_l4_se_of_a_tier2_listener_carries_never_counts(store):
    """Only the group counting a listener's traffic adds to its totals,
    carried counters included (a tier-2 listener: its L7 SEs')."""
    lib, reporter = make(store, set())
    store.create_loadbalancer(tier2.graph())

    def counters(n):
        return {'listeners': {'l2': {'bytes_in': n, 'total_connections': 1,
                                     'bytes_out': 0, 'request_errors': 0}}}
    store.record_agent('l4se', tier2.L4, stats=counters(70))
    store.record_agent('l7se', tier2.L7G, stats=counters(20))
    reporter.report_statistics()
    store.record_agent('l4se', tier2.L4, stats=counters(1))     # restarted
    store.record_agent('l7se', tier2.L7G, stats=counters(3))    # restarted
    for lib, reporter in ((lib, reporter), another_controller(store, ())):
        reporter.report_statistics()
        (entry,) = [e for e in lib.stats[-1]['listeners']
                    if e['id'] == 'l2']
        assert (entry['bytes_in'], entry['total_connections']) == (23, 2)


def test_a_report_during_the_round_is_counted_once(store, monkeypatch):
    """A restarted SE's report moves its counters from its row to
    carried_stats in one transaction: the round reading both must see them
    before or after, or it counts them twice (and steps down the round
    after).  On SQLite the report waits for the round's reads."""
    lib, reporter = make(store, {'se1'})
    report(store, 'se1', 100, 10)
    reporter.report_statistics()
    assert shown(lib)['bytes_in'] == 100
    real = listener_totals.carried_totals

    def report_meanwhile(session, counted_by):
        # The SE's row was read: its restart commits before carried_stats
        # is read (or waits for the round, on SQLite).
        writer = threading.Thread(target=report, args=(store, 'se1', 7, 1))
        writer.start()
        writer.join(0.5)
        writers.append(writer)
        return real(session, counted_by)
    writers = []
    monkeypatch.setattr(listener_totals, 'carried_totals', report_meanwhile)
    reporter.report_statistics()
    monkeypatch.setattr(listener_totals, 'carried_totals', real)
    writers[0].join()
    seen = [shown(lib)['bytes_in']]
    reporter.report_statistics()
    seen.append(shown(lib)['bytes_in'])
    assert seen == [100, 107]
