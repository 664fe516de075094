"""The controller's Neutron hook: off by default, options checked at
start, and the leader-only thread."""

import threading
import time

from oslo_config import cfg
import pytest

from dsr_provider.controller import neutron_sync
from dsr_provider import opts


def conf(**overrides):
    c = cfg.ConfigOpts()
    opts.register_controller_opts(c)
    c([])
    for name, value in overrides.items():
        c.set_override(name, value, group='dsr_controller')
    return c


def test_off_by_default():
    assert neutron_sync.start(conf(), database=None,
                              is_leader=lambda: True) is None
    # SE ports left unmanaged: still nothing to run.
    assert not neutron_sync.enabled(conf(neutron_se_ports=['g1:p1'],
                                         neutron_se_port_mode='unmanaged'))
    assert neutron_sync.enabled(conf(neutron_se_ports=['g1:p1']))


def test_se_ports_are_group_colon_port():
    assert neutron_sync.parse_se_ports(['g1:p1', 'edge:g2:p2']) == {
        'p1': 'g1', 'p2': 'edge:g2'}
    with pytest.raises(ValueError, match='SE_GROUP:PORT_ID'):
        neutron_sync.start(conf(neutron_se_ports=['p1']), None,
                           lambda: True)


class CountingSync:
    def __init__(self):
        self.rounds = []

    def run_once(self, full=False):
        self.rounds.append(full)


def test_each_term_starts_with_a_full_round():
    leading = threading.Event()
    made = []

    def make():
        made.append(CountingSync())
        return made[-1]
    thread = neutron_sync.SyncThread(make, leading.is_set,
                                     resync_interval=3600,
                                     interval=0.01).start()
    try:
        def wait(cond):
            deadline = time.monotonic() + 10
            while not cond():
                assert time.monotonic() < deadline
                time.sleep(0.01)
        wait(lambda: thread.rounds >= 5)
        assert made == []
        leading.set()
        wait(lambda: made and len(made[0].rounds) >= 3)
        assert made[0].rounds[0] is True and not any(made[0].rounds[1:])
        leading.clear()
        rounds = thread.rounds
        wait(lambda: thread.rounds >= rounds + 3)
        leading.set()
        wait(lambda: len(made) == 2 and made[1].rounds)
        assert made[1].rounds[0] is True
    finally:
        thread.stop()


class AnsweringSync:
    """run_once answers {port: refusal} for the rounds in `answers`."""

    def __init__(self, answers):
        self.answers = list(answers)

    def run_once(self, full=False):
        return self.answers.pop(0) if self.answers else {}


def test_a_round_that_touched_ports_wakes_the_leader():
    woken = []
    sync = AnsweringSync([{}, {'port1': 'port security off'}, {}, {},
                          {'port2': None}])
    thread = neutron_sync.SyncThread(lambda: sync, lambda: True,
                                     resync_interval=3600, interval=0.01,
                                     on_change=lambda: woken.append(1))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while sync.answers and time.monotonic() < deadline:
            thread._stop.wait(0.01)
        assert not sync.answers
    finally:
        thread.stop()
    # Rounds that updated or checked no port wake nobody.
    assert woken == [1, 1]
