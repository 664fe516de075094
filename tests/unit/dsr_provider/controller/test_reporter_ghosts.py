"""An object Octavia never committed (its API called the provider, then
its transaction failed): the driver agent refuses every status document
that names it, and the reporter dropped it only... never, so every later
status of its load balancer stayed queued (PENDING_* forever).  Now it is
dropped once refused GHOST_REFUSALS times over GHOST_AFTER seconds and not
found by a get, and deleted from the store (off the SEs)."""

import logging

from octavia_lib.api.drivers import exceptions as driver_exceptions
import pytest

from dsr_provider.controller import models
from dsr_provider.controller import reporter as reporter_mod
from tests.unit.dsr_provider.controller.test_reporter import reported
from tests.unit.dsr_provider.controller.test_store import FakeDriverLib
from tests.unit.dsr_provider.controller.test_store import graph
from tests.unit.dsr_provider.controller.test_store import pending
from tests.unit.dsr_provider.controller import test_store_tier2 as t2
from tests.unit.dsr_provider import fakes

# The order octavia-driver-agent applies a document in, one object (one
# transaction) at a time (driver_updater.update_loadbalancer_status).
ORDER = ('members', 'healthmonitors', 'pools', 'l7rules', 'l7policies',
         'listeners', 'loadbalancers')
# The kinds whose repository update raises NotFound for a missing row
# (the others update no row, silently).
NOT_FOUND = ('l7rules', 'l7policies', 'listeners')


class Octavia(FakeDriverLib):
    """octavia-driver-agent over Octavia's database.  missing: objects it
    does not have (a status of one of NOT_FOUND is refused naming it, a
    DELETED skipped as _decrement_quota does); refuse: objects it has but
    refuses anyway."""

    def __init__(self, missing=(), refuse=()):
        super().__init__()
        self.missing = set(missing)
        self.refuse = set(refuse)
        self.gets = []

    def update_loadbalancer_status(self, status):
        for kind in ORDER:
            for item in status.get(kind, ()):
                if item.get('provisioning_status') == 'DELETED':
                    continue
                if item['id'] in self.refuse or (
                        kind in NOT_FOUND and item['id'] in self.missing):
                    raise driver_exceptions.UpdateStatusError(
                        fault_string=f'{kind} {item["id"]} not found.',
                        status_object=kind, status_object_id=item['id'])
        super().update_loadbalancer_status(status)

    def _get(self, obj_id):
        self.gets.append(obj_id)
        return None if obj_id in self.missing else {'id': obj_id}

    get_loadbalancer = get_listener = get_pool = get_member = \
        get_healthmonitor = get_l7policy = get_l7rule = _get


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(reporter_mod.time, 'monotonic', lambda: now[0])
    return now


def stored(store, model, obj_id):
    with store.db.session() as s:
        return s.get(model, obj_id) is not None


def listener(listener_id, port, **kw):
    doc = {'listener_id': listener_id, 'loadbalancer_id': 'lb1',
           'protocol': 'TCP', 'protocol_port': port, 'admin_state_up': True}
    doc.update(kw)
    return doc


def member(member_id, address):
    return {'member_id': member_id, 'pool_id': 'p1', 'address': address,
            'protocol_port': 80}


def test_a_listener_octavia_never_committed_stops_blocking(
        store, clock, caplog):
    lib = Octavia()
    reporter = reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                     lambda group: set())
    store.create_loadbalancer(graph())
    reporter.run_once()
    assert reported(lib, 'loadbalancers', 'lb1') == ['ACTIVE']
    # Octavia's API called the provider, then its commit failed.
    store.put_listener(listener('l2', 81))
    lib.missing.add('l2')
    store.put_member(member('m3', '198.19.3.2'))    # a later change
    with caplog.at_level(logging.WARNING):
        for _ in range(3):                      # refused, within 30 s
            reporter.run_once()
            clock[0] += 14
    assert reported(lib, 'members', 'm3') == []
    assert lib.gets == []                       # no get before the bounds
    assert 'load balancer lb1 waits a round' in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        reporter.run_once()                     # 4th refusal, 42 s
    assert reported(lib, 'members', 'm3') == ['ACTIVE']
    assert lib.gets == ['l2']
    assert reported(lib, 'loadbalancers', 'lb1') == ['ACTIVE', 'ACTIVE']
    assert reported(lib, 'listeners', 'l2') == []
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert 'listener l2 of load balancer lb1' in error.getMessage()
    assert 'has no such object' in error.getMessage()
    # Off the SEs: deleted, and a redelivered create is not taken again.
    assert not stored(store, models.Listener, 'l2')
    assert 'l2' not in {i['id'] for lb in store.snapshot('g1')[
        'load_balancers'] for i in lb['listeners']}
    assert not any(i['id'] == 'l2' and i['provisioning_status'] != 'DELETED'
                   for _gen, st in pending(store)
                   for i in st.get('listeners', ()))
    # Its delete (DELETED, which Octavia skips) goes, nothing stays owed,
    # and the load balancer's next change flows at once.
    reporter.run_once()
    assert pending(store) == []
    store.put_member(member('m4', '198.19.4.2'))
    reporter.run_once()
    assert reported(lib, 'members', 'm4') == ['ACTIVE']
    assert lib.gets == ['l2']


def test_an_object_octavia_has_is_never_dropped(store, clock):
    """Refused for another reason: its load balancer waits as before, and
    Octavia is asked again only after another GHOST_AFTER."""
    lib = Octavia()
    reporter = reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                     lambda group: set())
    store.create_loadbalancer(graph())
    reporter.run_once()
    store.put_listener(listener('l2', 81))
    lib.refuse.add('l2')
    for _ in range(6):
        reporter.run_once()
        clock[0] += 10
    assert lib.gets == ['l2']
    assert reported(lib, 'listeners', 'l2') == []
    assert stored(store, models.Listener, 'l2')
    for _ in range(3):                          # 60 s: asked again
        reporter.run_once()
        clock[0] += 10
    assert lib.gets == ['l2', 'l2']
    lib.refuse.clear()
    reporter.run_once()
    assert reported(lib, 'listeners', 'l2') == ['ACTIVE']
    assert pending(store) == []


def test_a_ghost_listener_goes_with_its_l7_policies_and_rules(store, clock):
    """Octavia updates rules first: the refusal names the rule; its policy
    and listener are not there either, and all three go at once."""
    lib = Octavia()
    reporter = reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                     lambda group: set())
    store.create_loadbalancer(t2.graph())
    reporter.run_once()
    doc = dict(t2.graph()['listeners'][0], listener_id='l4',
               protocol_port=8080, default_pool_id=None, l7policies=[{
                   'l7policy_id': 'pol4', 'listener_id': 'l4',
                   'action': 'REJECT', 'position': 1,
                   'admin_state_up': True,
                   'rules': [{'l7rule_id': 'r4', 'l7policy_id': 'pol4',
                              'type': 'PATH', 'compare_type': 'STARTS_WITH',
                              'value': '/x', 'invert': False, 'key': None,
                              'admin_state_up': True}]}])
    store.put_listener(doc)
    lib.missing.update({'l4', 'pol4', 'r4'})
    for _ in range(4):
        reporter.run_once()
        clock[0] += 11
    assert reported(lib, 'loadbalancers', 'lb2') == ['ACTIVE'] * 2
    assert lib.gets == ['r4', 'pol4', 'l4']
    for model, obj_id in ((models.Listener, 'l4'), (models.L7Policy, 'pol4'),
                          (models.L7Rule, 'r4')):
        assert not stored(store, model, obj_id)
    assert stored(store, models.L7Policy, 'pol1')
    reporter.run_once()
    assert pending(store) == []
    assert reported(lib, 'loadbalancers', 'lb2') == ['ACTIVE'] * 3
