"""An SE's reports on the real MariaDB, handled at once as a controller's
RPC threads handle them: the first reports of many new SEs neither
deadlock nor fail (READ COMMITTED: no gap lock for a row not there yet),
and of two reports of one SE the newer stands whatever order they commit
in (Store.record_agent, docs/agent-protocol.md "Reports"), with how late
it was stored (tier2.SealClock's seed)."""

import logging
import threading
import time

import pytest

from dsr_provider.controller import store as store_mod


@pytest.fixture
def store(mariadb_store):
    return mariadb_store


def at_once(calls):
    barrier = threading.Barrier(len(calls))
    errors = []

    def run(call):
        barrier.wait(10)
        try:
            call()
        except Exception as exc:  # noqa: BLE001 -- asserted below
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_first_reports_of_new_ses_at_once_do_not_deadlock(store, caplog):
    now = time.time()
    with caplog.at_level(logging.WARNING):
        for rnd in range(5):
            errors = at_once([
                lambda i=i: store.record_agent(
                    f'se{rnd}-{i}', 'g1', sent=('report_state', now),
                    applied_generation=1)
                for i in range(8)])
            assert errors == []
    assert 'Deadlock' not in caplog.text
    with store.db.session() as s:
        assert s.query(store_mod.models.AgentState).count() == 40


def test_the_newer_of_two_reports_at_once_stands(store):
    now = time.time()
    for rnd in range(10):
        se = f'se-{rnd}'
        store.record_agent(se, 'g1', sent=('report_state', now - 10),
                           applied_generation=0)
        assert at_once([
            lambda: store.record_agent(se, 'g1',
                                       sent=('report_state', now - 2),
                                       applied_generation=1),
            lambda: store.record_agent(se, 'g1',
                                       sent=('report_state', now - 1),
                                       applied_generation=2)]) == []
        with store.db.session() as s:
            row = s.get(store_mod.models.AgentState, se)
            assert row.applied_generation == 2
            # How late it was stored is the standing report's too.
            signed, lag = row.report_times['lags']['report_state']
        assert signed == now - 1 and lag >= 1
        assert store.l7_reports('g1', {se})[se]['state_lag'] == lag
