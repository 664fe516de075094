"""Listener statistics as Octavia shows them (reporter.report_statistics,
listener_totals.py): cumulative totals that never go down when an SE's
dataplane restarts or an SE leaves, active connections from the SEs heard
from only."""

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
from tests.unit.dsr_provider import fakes


def make(store, live, **kw):
    lib = FakeDriverLib()
    store.create_loadbalancer(graph())
    return lib, reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                      lambda group: set(live), **kw)


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
    enrolment.enrol(store.db, 'g1', 'se2',
                    ed25519.Ed25519PrivateKey.generate().public_key())
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


def test_a_deleted_listener_is_forgotten(store):
    lib, reporter = make(store, {'se1'})
    report(store, 'se1', 100, 10)
    reporter.report_statistics()
    assert ('se1', 'l1') in reporter.totals._seen
    store.delete_listener('l1')
    reporter.report_statistics()
    assert len(lib.stats) == 1                  # nothing more about l1
    assert reporter.totals._seen == {}


def test_a_rebuilt_reporter_goes_on_a_new_process_starts_afresh(store):
    """A SIGHUP reload (or a new term of the same process) rebuilds the
    Reporter: it goes on from the process's totals.  Another controller
    process taking the lead has none: it starts from the SEs' current
    counters (docs/operations.md, "Listener statistics")."""
    lib, reporter = make(store, {'se1'})
    report(store, 'se1', 100, 10)
    reporter.report_statistics()
    report(store, 'se1', 7, 1)                  # restarted
    reporter.report_statistics()
    assert shown(lib)['bytes_in'] == 107
    rebuilt = reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                    lambda group: {'se1'})
    assert rebuilt.totals is reporter.totals is listener_totals.of(store)
    report(store, 'se1', 9, 2)
    rebuilt.report_statistics()
    assert shown(lib)['bytes_in'] == 109
    # Another process: another Store over the same database.
    other = store_mod.Store(db_mod.Database(str(store.db.engine.url)), 'g1')
    lib2 = FakeDriverLib()
    new_leader = reporter_mod.Reporter(other, fakes.FakeNotifier(), lib2,
                                       lambda group: {'se1'})
    assert new_leader.totals is not reporter.totals
    new_leader.report_statistics()
    assert shown(lib2)['bytes_in'] == 9
