"""The leader's L7 membership watcher with a fake coordinator: which
members count as ready, when the L4 groups get a new generation, and that
an unreadable backend keeps the last known set.  The L7 contract (which
fields the L7 group's document carries) with tooz's real file://
backend."""

import json
import logging
import threading

import pytest
from tooz import coordination

from dsr_provider.controller import l7_snapshot
from dsr_provider.controller import models
from dsr_provider.controller import tier2
from dsr_wire import l7
from dsr_wire import membership
from tests.unit.dsr_provider.controller.test_l7_contract import l7_listener
from tests.unit.dsr_provider.controller.test_l7_contract import OCTAVIA_TLS
from tests.unit.dsr_provider.controller.test_l7_contract import tls_listener
from tests.unit.dsr_provider.controller.test_store_tier2 import graph
from tests.unit.dsr_provider.controller.test_store_tier2 import L4
from tests.unit.dsr_provider.controller.test_store_tier2 import L7G
from tests.unit.dsr_provider import fakes


@pytest.fixture(autouse=True)
def contract_source(monkeypatch):
    """tier2.start installs the controller's contract reader: undone after
    each test."""
    monkeypatch.setattr(l7_snapshot, 'contract_of', None, raising=False)


class _Result:
    def __init__(self, value=None, error=None):
        self.value, self.error = value, error

    def get(self):
        if self.error is not None:
            raise self.error
        return self.value


class FakeCoordinator:
    """tooz's get_members / get_member_capabilities over a dict."""

    def __init__(self):
        self.groups = {}            # group id (bytes) -> {member: caps}
        self.down = False

    def join(self, l7_group, se_id, **caps):
        self.groups.setdefault(membership.group_id(l7_group), {})[
            se_id.encode()] = json.dumps(caps).encode()

    def leave(self, l7_group, se_id):
        del self.groups[membership.group_id(l7_group)][se_id.encode()]

    def get_members(self, group):
        if self.down:
            return _Result(error=coordination.ToozConnectionError('down'))
        if group not in self.groups:
            return _Result(error=coordination.GroupNotCreated(group))
        return _Result(set(self.groups[group]))

    def get_member_capabilities(self, group, member):
        caps = self.groups.get(group, {}).get(member)
        if caps is None:
            return _Result(error=coordination.MemberNotJoined(group, member))
        return _Result(caps)


def ready(address4='198.51.100.1', address6=None, **kw):
    caps = {'role': 'tier2', 'ready': True, 'draining': False,
            'tunnel_addresses': {'4': address4}}
    if address6:
        caps['tunnel_addresses']['6'] = address6
    caps.update(kw)
    return caps


def l4_members(store):
    lb = store.snapshot(L4)['load_balancers'][0]
    return [(m['id'], m['address'], m['weight'])
            for m in lb['listeners'][0]['pool']['members']]


def make(store):
    coord = FakeCoordinator()
    changes = []
    watcher = tier2.MembershipWatcher(store, tier2.tooz_members(coord),
                                      on_change=lambda: changes.append(1))
    return coord, watcher, changes


def test_join_drain_leave(store):
    store.create_loadbalancer(graph())
    coord, watcher, changes = make(store)
    assert watcher.run_once() == [] and changes == []   # no group yet
    coord.join(L7G, 'se-a', **ready())
    gen = store.snapshot(L4)['generation']
    assert watcher.run_once() == [L4] and changes == [1]
    assert store.snapshot(L4)['generation'] == gen + 1
    assert l4_members(store) == [('l7se:se-a@l2', '198.51.100.1', 1)]
    assert watcher.run_once() == []                     # nothing changed
    # The L7 agent says ready false while it drains: still in the rings,
    # at weight 0 (established flows stay; no new ones).
    coord.join(L7G, 'se-a', **ready(ready=False, draining=True))
    assert watcher.run_once() == [L4]
    assert l4_members(store) == [('l7se:se-a@l2', '198.51.100.1', 0)]
    coord.join(L7G, 'se-a', **ready(draining=True))
    assert watcher.run_once() == []                 # same set
    coord.leave(L7G, 'se-a')
    assert watcher.run_once() == [L4]
    assert l4_members(store) == []
    assert len(changes) == 3


def test_the_watcher_follows_what_an_l7_se_reports_error(store):
    """What an L7 SE's signed report names ERROR alone leaves its L4
    pools at the watcher's next look; tooz capabilities saying otherwise
    (anybody who reaches the backend can write them) count for nothing."""
    store.create_loadbalancer(graph())
    coord, watcher, changes = make(store)
    coord.join(L7G, 'se-a', **ready())
    coord.join(L7G, 'se-b', **ready('198.51.100.2'))
    watcher.run_once()
    assert [m[0] for m in l4_members(store)] == ['l7se:se-a@l2',
                                                 'l7se:se-b@l2']
    store.record_agent('se-b', L7G, rejected_objects={
        'loadbalancers': {'lb2': 'L7 SE se-b: HAProxy exited'}})
    assert watcher.run_once() == [L4]
    assert [m[0] for m in l4_members(store)] == ['l7se:se-a@l2']
    assert watcher.run_once() == []
    coord.join(L7G, 'se-b', **ready('198.51.100.2', unserved={}))
    assert watcher.run_once() == []
    store.record_agent('se-b', L7G, rejected_objects=None)
    assert watcher.run_once() == [L4]
    assert [m[0] for m in l4_members(store)] == ['l7se:se-a@l2',
                                                 'l7se:se-b@l2']
    assert len(changes) == 3


def test_only_ready_tier2_members_with_a_tunnel_address_count(store):
    store.create_loadbalancer(graph())
    coord, watcher, _ = make(store)
    coord.join(L7G, 'starting', **ready(ready=False))
    coord.join(L7G, 'tier1', **ready(role='tier1'))
    coord.join(L7G, 'no-address', **ready(address4='not-an-ip'))
    coord.join(L7G, 'wrong-family', **ready(address4='2001:db8::1'))
    coord.join(L7G, 'v6', **ready(address4=None, address6='2001:db8:7::6'))
    watcher.run_once()
    assert l4_members(store) == [('l7se:v6@l2', '2001:db8:7::6', 1)]
    coord.join(L7G, 'starting', **ready())            # now ready
    watcher.run_once()
    assert [m[0] for m in l4_members(store)] == ['l7se:starting@l2',
                                                 'l7se:v6@l2']


def run_terms(watcher, answers):
    """watcher.run with leading() answering `answers` one look each, the
    last as the run stops (True: that look runs too)."""
    stop, answers = threading.Event(), list(answers)

    def lead():
        if len(answers) == 1:
            stop.set()
        return answers.pop(0)
    watcher.run(stop, lead, interval=0)


def left_out(store):
    """{se_id: why} the leader recorded of L7G (Store.set_l7_left_out)."""
    with store.db.session() as s:
        return {r.se_id: r.reason for r in s.query(
            models.L7SELeftOut).filter_by(l7_se_group=L7G)}


def test_the_leader_records_why_it_left_l7_ses_out(store):
    """What dsr-status shows of an L7 SE that reports but is not in the
    rings: the watcher's reason, written when it changes (not every
    look), gone once the SE is in."""
    store.create_loadbalancer(graph())
    coord, watcher, _ = make(store)
    coord.join(L7G, 'starting', **ready(ready=False))
    coord.join(L7G, 'tier1', **ready(role='tier1'))
    coord.join(L7G, 'no-address', **ready(address4='not-an-ip'))
    coord.join(L7G, 'v6', **ready(address4=None, address6='2001:db8:7::6'))
    coord.join(L7G, 'stranger', **ready(ready=False))   # never reported
    for se_id in ('starting', 'tier1', 'no-address', 'v6'):
        store.record_agent(se_id, L7G, applied_generation=0)
    writes = []
    real = store.set_l7_left_out

    def counted(*args):
        writes.append(args)
        return real(*args)
    store.set_l7_left_out = counted
    watcher.run_once()
    assert left_out(store) == {
        'starting': 'not ready', 'tier1': "not an L7 SE (its role is "
        "'tier1')", 'no-address': 'no usable tunnel address'}
    watcher.run_once()
    assert len(writes) == 1                     # unchanged: not written
    coord.join(L7G, 'starting', **ready())
    watcher.run_once()
    assert set(left_out(store)) == {'tier1', 'no-address'}
    assert len(writes) == 2
    # A term it did not lead: another leader may have written meanwhile,
    # so its next term's first look writes again.
    run_terms(watcher, [False, True, False])
    assert len(writes) == 3


def test_recording_why_is_never_the_end_of_a_look(store):
    """Writing the reasons is a hint for dsr-status: when it fails (two
    leaders for a moment of a failover), the look still stores and
    announces the pools, and the next look writes again; unchanged
    reasons are written again every GROUPS_REFRESH (another leader may
    have written others meanwhile)."""
    from sqlalchemy import exc as sa_exc
    store.create_loadbalancer(graph())
    coord = FakeCoordinator()
    clock = fakes.Clock()
    changes = []
    watcher = tier2.MembershipWatcher(store, tier2.tooz_members(coord),
                                      on_change=lambda: changes.append(1),
                                      clock=clock)
    coord.join(L7G, 'se-a', **ready())
    coord.join(L7G, 'starting', **ready(ready=False))
    store.record_agent('starting', L7G, applied_generation=0)
    real, calls = store.set_l7_left_out, []

    def failing(*args):
        calls.append(args)
        raise sa_exc.IntegrityError('INSERT', {}, Exception('duplicate'))
    store.set_l7_left_out = failing
    assert watcher.run_once() == [L4] and changes == [1]
    assert [m[0] for m in l4_members(store)] == ['l7se:se-a@l2']
    store.set_l7_left_out = real
    watcher.run_once()
    assert left_out(store) == {'starting': 'not ready'}
    with store.db.session() as s:       # another leader's, meanwhile
        s.query(models.L7SELeftOut).delete()
    watcher.run_once()
    assert left_out(store) == {}        # not looked at yet
    clock.now += tier2.GROUPS_REFRESH
    watcher.run_once()
    assert left_out(store) == {'starting': 'not ready'}


def test_another_threads_call_does_not_change_whom_a_look_left_out(store):
    """The contract reader calls the same trusted_only from RPC threads:
    what a look reads of whom it left out is its own call's."""
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from dsr_provider.controller import enrolment
    enrolment.enrol(store.db, L7G, 'se-a',
                    ed25519.Ed25519PrivateKey.generate().public_key())
    live = {'se-a': ready()}            # unsealed: no signed state says so
    members_of = tier2.trusted_only(store.db, lambda group: dict(live),
                                    store.l7_reports)
    members_of(L7G)
    mine = members_of.left_out_of(L7G)
    assert list(mine) == ['se-a']
    other = threading.Thread(target=lambda: (live.clear(),
                                             members_of(L7G)))
    other.start()
    other.join()
    assert members_of.left_out_of(L7G) == mine


def test_an_unreadable_backend_keeps_the_last_set(store):
    store.create_loadbalancer(graph())
    coord, watcher, _ = make(store)
    coord.join(L7G, 'se-a', **ready())
    watcher.run_once()
    coord.down = True
    gen = store.snapshot(L4)['generation']
    assert watcher.run_once() == []
    assert store.snapshot(L4)['generation'] == gen
    assert l4_members(store) == [('l7se:se-a@l2', '198.51.100.1', 1)]
    coord.down = False
    coord.leave(L7G, 'se-a')
    assert watcher.run_once() == [L4]


def test_the_watcher_thread_works_only_while_leading(store):
    store.create_loadbalancer(graph())
    coord = FakeCoordinator()
    coord.join(L7G, 'se-a', **ready())
    leading = threading.Event()
    changed = threading.Event()
    thread, stop, _watcher = tier2.start(store, tier2.tooz_members(coord),
                                         changed.set, leading.is_set,
                                         interval=0.01)
    try:
        assert not changed.wait(0.2)        # not leading: nothing done
        assert l4_members(store) == []
        leading.set()
        assert changed.wait(5)
        assert l4_members(store) == [('l7se:se-a@l2', '198.51.100.1', 1)]
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_a_dead_l7_se_leaves_the_l4_rings_within_the_bound():
    """Issue 11: 2 s from an L7 SE's death to the L4 rings without it.  Its
    tooz membership expires (membership_timeout=1, as docs/tier2.md sets
    it), the watcher sees that within one POLL_INTERVAL, then the L4 SEs
    fetch and apply the new generation (0.3-0.5 s end to end,
    tests/functional/e2e/test_tier2_scale.py).  Polling every 0.5 s left
    the L4 side nothing: 1.86-2.02 s measured from SIGKILL."""
    membership_timeout, l4_apply = 1.0, 0.5
    assert membership_timeout + tier2.POLL_INTERVAL + l4_apply < 2.0


# --- the L7 contract: TLS settings once every L7 SE understands them -----

@pytest.fixture
def tooz_url(tmp_path):
    return f'file://{tmp_path}/tooz'


@pytest.fixture
def controller_view(tooz_url):
    """members_of over a controller's own tooz coordinator (file://)."""
    coord = membership.coordinator(tooz_url, 'controller')
    coord.start()
    yield tier2.tooz_members(coord)
    coord.stop()


class L7SEs:
    """L7 SEs' memberships of L7G (file://): join, leave."""

    def __init__(self, url):
        self.url, self.joined = url, {}

    def join(self, se_id, **caps):
        member = membership.Membership(self.url, se_id, L7G, ready(**caps))
        member.start()
        self.joined[se_id] = member

    def leave(self, se_id):
        self.joined.pop(se_id).stop()


@pytest.fixture
def l7_ses(tooz_url):
    ses = L7SEs(tooz_url)
    yield ses
    for se_id in list(ses.joined):
        ses.leave(se_id)


def tls_fields(item):
    return {k: item[k] for k in l7.LISTENER_TLS_FIELDS if k in item}


def test_listener_tls_settings_wait_until_every_live_l7_se_publishes_them(
        store, controller_view, l7_ses, monkeypatch, caplog):
    """Controller upgraded first: an L7 SE of the earlier release (no
    l7_contract; its schema refuses the TLS fields) -- here one that is
    restarting, not ready yet -- keeps them out of the group's document;
    once it is upgraded the group gets a new generation with them."""
    caplog.set_level(logging.INFO, logger=tier2.__name__)
    store.create_loadbalancer(graph())
    store.put_listener(tls_listener(**OCTAVIA_TLS))
    monkeypatch.setattr(l7_snapshot, 'contract_of',
                        tier2.ContractReader(controller_view))
    changes = []
    watcher = tier2.MembershipWatcher(store, controller_view,
                                      on_change=lambda: changes.append(1))
    l7_ses.join('se-new', l7_contract=l7.CONTRACT_VERSION)
    l7_ses.join('se-old', ready=False)
    watcher.run_once()
    _, item = l7_listener(store)
    assert tls_fields(item) == {}
    generation = store.snapshot(L7G)['generation']
    watcher.run_once()
    waiting = [r.getMessage() for r in caplog.records
               if 'wait for their upgrade' in r.getMessage()]
    assert len(waiting) == 1 and 'se-old' in waiting[0] \
        and 'se-new' not in waiting[0], waiting

    # se-old upgraded: it comes back publishing this release's contract.
    l7_ses.leave('se-old')
    l7_ses.join('se-old', ready=False, l7_contract=l7.CONTRACT_VERSION)
    changes.clear()
    assert watcher.run_once() == [L7G] and changes == [1]
    assert store.snapshot(L7G)['generation'] == generation + 1
    _, item = l7_listener(store)
    assert tls_fields(item) == OCTAVIA_TLS
    assert watcher.run_once() == []                     # nothing changed

    # An L7 SE of the earlier release joins again (a rollback, a spare):
    # its first fetch already leaves the fields out, and a new generation
    # tells the others.
    l7_ses.join('se-spare', ready=False)
    _, item = l7_listener(store)
    assert tls_fields(item) == {}
    assert watcher.run_once() == [L7G]


def test_the_contract_is_the_lowest_of_the_live_l7_ses():
    new = ready(l7_contract=l7.CONTRACT_VERSION)
    assert l7.group_contract({}) == l7.CONTRACT_VERSION
    assert l7.group_contract({'a': new, 'b': new}) == l7.CONTRACT_VERSION
    # Not ready, or draining, it still fetches the document.
    assert l7.group_contract({'a': new, 'b': ready(ready=False)}) \
        == l7.BASE_CONTRACT
    # Not an L7 SE (a tier-1 agent in the wrong group): not counted.
    assert l7.group_contract({'a': new, 'b': ready(role='tier1')}) \
        == l7.CONTRACT_VERSION
    assert l7.group_contract({'a': new, 'b': ready(l7_contract='2')}) \
        == l7.BASE_CONTRACT


def test_the_l7_groups_are_read_again_when_told_or_after_a_while(store):
    """Four looks a second must not each query the L7 groups: the list
    moves only with changes, and every change wakes the leader, which
    tells the watcher.  A tier-2 load balancer on a new L7 group is then
    watched from the next look."""
    reads = []
    l7_groups = store.l7_groups

    def counted():
        reads.append(1)
        return l7_groups()
    store.l7_groups = counted
    coord, clock = FakeCoordinator(), fakes.Clock()
    watcher = tier2.MembershipWatcher(store, tier2.tooz_members(coord),
                                      clock=clock)
    coord.join(L7G, 'se-a', **ready())
    assert watcher.run_once() == [] and len(reads) == 1     # no group yet
    store.create_loadbalancer(graph())
    for _ in range(5):
        assert watcher.run_once() == []     # trusted: not read again
    assert len(reads) == 1
    watcher.groups_changed()                # the change woke the leader
    assert watcher.run_once() == [L4]
    assert l4_members(store) == [('l7se:se-a@l2', '198.51.100.1', 1)]
    assert len(reads) == 2
    watcher.run_once()
    assert len(reads) == 2
    clock.now += tier2.GROUPS_REFRESH       # and anyway, now and then
    watcher.run_once()
    assert len(reads) == 3


def test_the_watcher_damps_a_flapping_l7_se(store):
    """The watcher's looks go through the damping: the third death in
    a row keeps se-b out when it rejoins (se-a serves); an unreadable
    look counts no flap; a term it stops leading in is forgotten."""
    from dsr_provider.controller import l7_damping
    store.create_loadbalancer(graph())
    coord = FakeCoordinator()
    coord.join(L7G, 'se-a', **ready())
    store.record_agent('se-b', L7G, applied_generation=0)   # it reports
    damping = l7_damping.FlapDamping(half_life=60.0)
    watcher = tier2.MembershipWatcher(store, tier2.tooz_members(coord),
                                      damping=damping)
    for _ in range(3):
        coord.join(L7G, 'se-b', **ready('198.51.100.2'))
        watcher.run_once()
        coord.leave(L7G, 'se-b')
        watcher.run_once()
    coord.join(L7G, 'se-b', **ready('198.51.100.2'))
    watcher.run_once()
    assert [m[0] for m in l4_members(store)] == ['l7se:se-a@l2']
    assert damping.suppressed(L7G) == ['se-b']
    assert left_out(store) == {'se-b': 'kept out by flap damping (it left '
                               'without draining too often lately)'}
    run_terms(watcher, [False, True, True])
    assert damping.suppressed(L7G) == []
    assert sorted(m[0] for m in l4_members(store)) == [
        'l7se:se-a@l2', 'l7se:se-b@l2']
