"""Listener totals on the real MariaDB, shared by the controllers of a
deployment: whichever controller handles an SE's reports and whichever
leads, Octavia's totals are the same and never go down -- an SE's
dataplane restart, an SE revoked, a leader change.  Each controller here
has its own Database, Store and Reporter (nothing of another one's
memory), as separate processes would."""

import threading

from cryptography.hazmat.primitives.asymmetric import ed25519
import pytest
import sqlalchemy as sa

from dsr_provider.controller import db as db_mod
from dsr_provider.controller import enrolment
from dsr_provider.controller import listener_totals
from dsr_provider.controller import reporter as reporter_mod
from dsr_provider.controller import store as store_mod
from tests.unit.dsr_provider.controller.test_store import FakeDriverLib
from tests.unit.dsr_provider.controller.test_store import graph
from tests.unit.dsr_provider import fakes

LIVE = {'se1', 'se2', 'se3'}


@pytest.fixture
def database_url(mariadb_url):
    return mariadb_url


class Controller:
    """One controller process: its own engine, Store and Reporter."""

    def __init__(self, url):
        self.database = db_mod.Database(url)
        self.store = store_mod.Store(self.database, 'g1')
        self.lib = FakeDriverLib()
        self.reporter = reporter_mod.Reporter(
            self.store, fakes.FakeNotifier(), self.lib, lambda group: LIVE)

    def report(self, se_id, bytes_in, total, errors=0):
        """An SE's statistics report, handled by this controller."""
        self.store.record_agent(se_id, 'g1', stats={'listeners': {'l1': {
            'bytes_in': bytes_in, 'bytes_out': 0, 'packets': total,
            'total_connections': total, 'request_errors': errors,
            'active_connections': 1}}})

    def totals(self):
        """Lead one statistics round: what Octavia is told of l1."""
        self.reporter._stats_refreshed = None   # send even if unchanged
        self.reporter.report_statistics()
        (entry,) = [e for e in self.lib.stats[-1]['listeners']
                    if e['id'] == 'l1']
        return {k: v for k, v in entry.items()
                if k in listener_totals.CUMULATIVE}

    def close(self):
        self.database.engine.dispose()


@pytest.fixture
def controllers(database_url):
    made = []

    def make():
        made.append(Controller(database_url))
        return made[-1]
    yield make
    for controller in made:
        controller.close()


def never_down(history):
    for earlier, later in zip(history, history[1:]):
        for counter, value in earlier.items():
            assert later[counter] >= value, (counter, history)


def test_totals_survive_restarts_revocations_and_leader_changes(
        controllers):
    a, b = controllers(), controllers()
    a.store.create_loadbalancer(graph())
    enrolment.enrol(a.database, 'g1', 'se2',
                    ed25519.Ed25519PrivateKey.generate().public_key())
    a.report('se1', 1000, 100, errors=3)
    b.report('se2', 500, 50)
    b.report('se3', 10, 1)
    history = [a.totals()]
    assert history[0] == {'bytes_in': 1510, 'bytes_out': 0,
                          'request_errors': 3, 'total_connections': 151}
    a.report('se1', 1200, 120, errors=4)
    history.append(a.totals())
    a.report('se1', 7, 1)                       # se1's dataplane restarted
    history.append(a.totals())
    assert history[-1]['bytes_in'] == 1200 + 7 + 500 + 10
    # b leads now, never having seen se1's earlier counters.
    history.append(b.totals())
    assert history[-1] == history[-2]
    b.report('se1', 20, 2)                      # se1 counts on (to b)
    b.report('se3', 3, 1)                       # se3 restarted (to b)
    history.append(b.totals())
    a.report('se1', 5, 1)                       # se1 restarted again
    history.append(b.totals())
    assert enrolment.revoke(b.database, 'se2')  # se2 leaves
    history.append(b.totals())
    assert history[-1] == history[-2]
    # a restarted controller (new objects) leads again.
    c = controllers()
    history.append(c.totals())
    assert history[-1] == history[-2] == {
        'bytes_in': 1200 + 20 + 5 + 500 + 10 + 3, 'bytes_out': 0,
        'request_errors': 4,
        'total_connections': 120 + 2 + 1 + 50 + 1 + 1}
    history.append(a.totals())
    assert history[-1] == history[-2]
    never_down(history)


def test_a_report_during_the_round_is_counted_once(controllers,
                                                   monkeypatch):
    """The leader reads the SEs' rows and what was carried in one snapshot,
    also where the server's default isolation is READ COMMITTED (a
    restart's report moves counters from one to the other in between)."""
    a, leader = controllers(), controllers()
    sa.event.listen(leader.database.engine, 'connect',
                    lambda dbapi, record: dbapi.cursor().execute(
                        'SET SESSION TRANSACTION ISOLATION LEVEL '
                        'READ COMMITTED'))
    a.store.create_loadbalancer(graph())
    a.report('se1', 1000, 100)
    history = [leader.totals()]
    real = listener_totals.carried_totals

    def restart_meanwhile(session, counted_by):
        writer = threading.Thread(target=a.report, args=('se1', 7, 1))
        writer.start()
        writer.join()
        return real(session, counted_by)
    monkeypatch.setattr(listener_totals, 'carried_totals',
                        restart_meanwhile)
    history.append(leader.totals())
    monkeypatch.setattr(listener_totals, 'carried_totals', real)
    history.append(leader.totals())
    assert [h['bytes_in'] for h in history] == [1000, 1000, 1007]
    never_down(history)
