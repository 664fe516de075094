"""The agent on a real pinned dataplane (bpffs maps, no network): what a
restart adopts, and changes that only fit with their removals first.

The controller, BGP and the member next hops are faked at their
boundaries; the maps are the kernel's.
"""

import os
import secrets
import shutil

from oslo_config import cfg
import oslo_messaging as messaging
import pytest

from amphora_agent.dataplane import dataplane as dp_mod
from amphora_agent.health import monitor as hm
from amphora_agent import opts
from amphora_agent import service
from tests.unit.amphora_agent.dataplane.test_delta_apply import FakeResolver
from tests.unit.amphora_agent.test_service import document
from tests.unit.amphora_agent.test_service import FakeBgp
from tests.unit.amphora_agent.test_service import FakeController
from tests.unit.amphora_agent.test_service import FakeHealth
from tests.unit.amphora_agent.test_service import http_monitor
from tests.unit.amphora_agent.test_service import lb
from tests.unit.amphora_agent.test_service import member

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason='needs root')


@pytest.fixture
def pinned():
    """make(health, **limits) -> an Agent on the dataplane pinned in this
    test's bpffs directory (the same maps for every agent made)."""
    root = f'/sys/fs/bpf/octavia-dsr-test-pinned-{secrets.token_hex(4)}'
    conf = cfg.ConfigOpts()
    opts.register_agent_opts(conf)
    for key, value in (('se_id', 'se-1'), ('se_group', 'g1'),
                       ('tunnel_source4', '198.18.1.2'),
                       ('tunnel_source6', '2001:db8:1::2')):
        conf.set_override(key, value, 'agent')
    conf.set_override('enabled', False, 'auth')
    conf([], project='octavia-dsr-test')
    agents = []

    def make(health, **limits):
        agent = service.Agent(
            conf, health=health, bgp=FakeBgp(),
            transport=messaging.get_rpc_transport(cfg.CONF, url='fake:/'))
        agents.append(agent)
        agent.controller = FakeController()
        base = dict(max_listeners=4, ring_size=251, max_reals=9,
                    max_nexthops=4, conn_table_size=1024, max_cidrs=4)
        base.update(limits)
        agent.dp = dp_mod.Dataplane.open(root, limits=dp_mod.Limits(**base))
        agent.dp._resolver = FakeResolver()
        return agent
    yield make
    for agent in agents:
        agent._control.stop()
        if agent.dp is not None:
            agent.dp.close()
    shutil.rmtree(root, ignore_errors=True)


def rings(agent):
    """{listener: sorted member addresses} of the live maps."""
    return {str(key): sorted(map(str, spec.members))
            for key, spec in agent.dp.read_state().listeners.items()}


class FoundDown(FakeHealth):
    """The previous agent's checker: its probes found `down` down."""

    def __init__(self, down):
        super().__init__()
        self.down = set(down)

    def usable(self, member_id):
        return member_id not in self.down

    def status(self, member_id):
        return 'ERROR' if member_id in self.down else 'ONLINE'


def test_a_restart_keeps_the_members_it_found_down_down(pinned):
    """A restarted agent adopts the pinned rings: the monitored members
    they leave out (found down before the restart) start down, so they
    are not put back, an all-dead VIP is not announced and they are not
    reported ONLINE before any probe; the members in the rings start up;
    a listener the rings do not have starts as today (up)."""
    lbs = [lb(1, [member('a1', '198.19.1.1'), member('a2', '198.19.1.2')],
              monitor=http_monitor('hm1')),
           lb(2, [member('b1', '198.19.2.1'), member('b2', '198.19.2.2')],
              monitor=http_monitor('hm2'))]
    first = pinned(FoundDown({'a2', 'b1', 'b2'}))
    first.controller.document = document(1, lbs)
    assert first._fetch()
    first._reconcile()
    before = rings(first)
    assert before == {'192.0.2.11:80/tcp': ['198.19.1.1'],
                      '192.0.2.12:80/tcp': []}
    assert first.bgp.intent == {'192.0.2.11/32'}
    first.dp.close()

    # The restart (kill -9 or systemctl restart): same pins, a new
    # checker that has not probed anything yet; lb3 is new.
    second = pinned(hm.HealthChecker())
    second.controller.document = document(2, lbs + [
        lb(3, [member('c1', '198.19.3.1')], monitor=http_monitor('hm3'))])
    assert second._fetch()
    second._reconcile()
    assert rings(second) == dict(before, **{
        '192.0.2.13:80/tcp': ['198.19.3.1']})
    assert second.bgp.intent == {'192.0.2.11/32', '192.0.2.13/32'}
    assert second.controller.statuses[-1] == {
        'a1': 'ONLINE', 'a2': 'ERROR', 'b1': 'ERROR', 'b2': 'ERROR',
        'c1': 'ONLINE'}
    # A member that starts down comes back with its first good probe.
    state = second.health._entries['b1'].state
    assert state.record(True) == ('ERROR', 'ONLINE')


def weights(agent, listener):
    spec = agent.dp.read_state().listeners
    return {str(a): m.weight for key, s in spec.items()
            if str(key) == listener for a, m in s.members.items()}


def full_se(pinned, **limits):
    """An SE whose two pools (4 members each) fill max_members 8."""
    agent = pinned(FakeHealth(), **limits)
    a = [member(f'a{i}', f'198.19.0.{i}') for i in range(1, 5)]
    b = [member(f'b{i}', f'198.19.1.{i}') for i in range(1, 5)]
    agent.controller.document = document(1, [lb(0, a), lb(1, b)])
    assert agent._fetch()
    agent._reconcile()
    assert agent.applied_generation == 1
    return agent, a, b


def test_members_swapped_at_max_members_are_applied(pinned):
    """At max_members, a batch update replacing two members of a pool (and
    an unrelated change elsewhere) fits once the leaving members are out:
    the agent applies the removals first (repro_slots.py)."""
    agent, a, b = full_se(pinned)
    b2 = b[:2] + [member(f'b{i}', f'198.19.1.{i}') for i in (5, 6)]
    agent.controller.document = document(2, [
        lb(0, [dict(a[0], weight=5)] + a[1:]), lb(1, b2)])
    assert agent._fetch()
    agent._reconcile()
    state = agent.controller.states[-1]
    assert (state['applied_generation'], state['error'],
            state['rejected_objects']) == (2, None, {})
    assert rings(agent)['192.0.2.11:80/tcp'] == [
        '198.19.1.1', '198.19.1.2', '198.19.1.5', '198.19.1.6']
    assert weights(agent, '192.0.2.10:80/tcp')['198.19.0.1'] == 5


def test_a_load_balancer_replaced_with_the_ring_space_full(pinned):
    """ring_slots holds two rings: deleting one load balancer and creating
    another of the same ring size in one generation fits once the old ring
    is freed (repro_rings.py)."""
    agent, _a, b = full_se(pinned, max_reals=64, ring_slots=502)
    c = [member(f'c{i}', f'198.19.2.{i}') for i in range(1, 5)]
    agent.controller.document = document(2, [lb(1, b), lb(2, c)])
    assert agent._fetch()
    agent._reconcile()
    state = agent.controller.states[-1]
    assert (state['applied_generation'], state['error'],
            state['rejected_objects']) == (2, None, {})
    assert sorted(rings(agent)) == ['192.0.2.11:80/tcp', '192.0.2.12:80/tcp']
    assert agent.bgp.intent == {'192.0.2.11/32', '192.0.2.12/32'}


def test_what_does_not_fit_after_the_removals_is_rejected_alone(pinned):
    """A change the dataplane refuses even after the removals (five
    allowed_cidrs prefixes, max_cidrs 4): a new listener is rejected
    alone; a running listener is never taken down for it, it keeps running
    as applied (named in rejected_objects, its VIP still announced); the
    rest of the generation is applied (repro_cidrs.py)."""
    agent, a, b = full_se(pinned, max_reals=64)
    cidrs = [f'203.0.113.{i * 16}/28' for i in range(5)]
    refused = lb(1, b)
    refused['listeners'][0]['allowed_cidrs'] = cidrs
    new = lb(2, [member('c1', '198.19.2.1')])
    new['listeners'][0]['allowed_cidrs'] = cidrs
    agent.controller.document = document(2, [
        lb(0, [dict(a[0], weight=5)] + a[1:]), refused, new])
    assert agent._fetch()
    agent._reconcile()
    state = agent.controller.states[-1]
    assert (state['applied_generation'], state['error']) == (2, None)
    assert list(state['rejected_objects']) == ['listeners']
    assert sorted(state['rejected_objects']['listeners']) == ['l1', 'l2']
    assert 'allowed_cidrs' in state['rejected_objects']['listeners']['l1']
    assert 'allowed_cidrs' in state['rejected_objects']['listeners']['l2']
    assert weights(agent, '192.0.2.10:80/tcp')['198.19.0.1'] == 5
    assert rings(agent) == {
        '192.0.2.10:80/tcp': [f'198.19.0.{i}' for i in range(1, 5)],
        '192.0.2.11:80/tcp': [f'198.19.1.{i}' for i in range(1, 5)]}
    assert agent.dp.read_state().listeners[
        next(k for k in agent.dp.read_state().listeners
             if str(k) == '192.0.2.11:80/tcp')].allowed_cidrs is None
    assert agent.bgp.intent == {'192.0.2.10/32', '192.0.2.11/32'}


def test_a_running_listener_whose_ring_cannot_grow_keeps_serving(pinned):
    """A running listener's pool grows past a ring size step (4 -> 5
    members: 4001 -> 8009 slots): the controller's count fits (ring_slots
    10,000) but the new ring cannot be placed beside the one in place.
    The listener keeps its members and ring, only the new member is
    rejected, and its VIP is never withdrawn."""
    agent = pinned(FakeHealth(), max_reals=64, ring_size=65537,
                   ring_slots=10000)
    four = [member(f'a{i}', f'198.19.1.{i}') for i in range(1, 5)]
    agent.controller.document = document(1, [lb(1, four)])
    assert agent._fetch()
    agent._reconcile()
    assert agent.bgp.intent == {'192.0.2.11/32'}
    agent.controller.document = document(2, [lb(1, four + [
        member('a5', '198.19.1.5')])])
    assert agent._fetch()
    agent._reconcile()
    state = agent.controller.states[-1]
    assert (state['applied_generation'], state['error']) == (2, None)
    assert list(state['rejected_objects']) == ['members']
    assert list(state['rejected_objects']['members']) == ['a5']
    assert rings(agent) == {
        '192.0.2.11:80/tcp': [f'198.19.1.{i}' for i in range(1, 5)]}
    assert agent.bgp.intent == {'192.0.2.11/32'}
    (live,) = agent.dp._live_listeners().values()
    assert live.ring_size == 4001


def test_a_restart_starts_down_only_members_out_for_their_health(pinned):
    """Members out of the rings by design start as any member after a
    restart: admin-down (not probed), weight 0 (drained: in the maps), a
    backup while a primary serves, a member rejected for capacity (its
    pool grew past a ring size step the ring space could not take).  A
    member found down does start down, a backup too when only weight-0
    primaries serve (it would be in the ring if it were up)."""
    lbs = [lb(1, [member('a1', '198.19.1.1'), member('a2', '198.19.1.2'),
                  member('a3', '198.19.1.3', weight=0),
                  member('a4', '198.19.1.4', admin_state_up=False),
                  member('a5', '198.19.1.5', backup=True)],
              monitor=http_monitor('hm1')),
           lb(2, [member('p1', '198.19.2.1', weight=0),
                  member('b1', '198.19.2.2', backup=True)],
              monitor=http_monitor('hm2')),
           lb(3, [member(f'c{i}', f'198.19.3.{i}') for i in range(1, 5)],
              monitor=http_monitor('hm3'))]
    # Rings of 8009 (lb1), 4001 and 4001 slots; lb3 growing to 8009 fits
    # the count (20,019) but not beside its ring in place.
    limits = dict(max_reals=64, ring_size=65537, ring_slots=20020)
    first = pinned(FoundDown({'a2', 'b1'}), **limits)
    first.controller.document = document(1, lbs)
    assert first._fetch()
    first._reconcile()
    lbs[2]['listeners'][0]['pool']['members'].append(
        member('c5', '198.19.3.5'))
    first.controller.document = document(2, lbs)
    assert first._fetch()
    first._reconcile()
    rejected = first.controller.states[-1]['rejected_objects']
    assert list(rejected) == ['members']
    assert list(rejected['members']) == ['c5']
    before = rings(first)
    assert before == {
        '192.0.2.11:80/tcp': ['198.19.1.1', '198.19.1.3'],
        '192.0.2.12:80/tcp': ['198.19.2.1'],
        '192.0.2.13:80/tcp': [f'198.19.3.{i}' for i in range(1, 5)]}
    first.dp.close()

    second = pinned(hm.HealthChecker(), **limits)
    second.controller.document = document(2, lbs)
    assert second._fetch()
    second._reconcile()
    state = second.controller.states[-1]
    assert (state['applied_generation'], state['error']) == (2, None)
    assert list(state['rejected_objects']) == ['members']
    assert list(state['rejected_objects']['members']) == ['c5']
    assert rings(second) == before
    assert second.controller.statuses[-1] == dict(
        a1='ONLINE', a2='ERROR', a3='ONLINE', a4='OFFLINE', a5='ONLINE',
        p1='ONLINE', b1='ERROR',
        **{f'c{i}': 'ONLINE' for i in range(1, 5)})
    assert second.bgp.intent == {'192.0.2.11/32', '192.0.2.13/32'}


def test_after_a_restart_a_running_listener_is_not_taken_down_to_fit(
        pinned):
    """The first generation after a restart has no applied configuration
    to fall back to: a running listener whose own change does not fit
    leaves the generation unapplied (error, retried), its ring and VIP as
    they are, instead of being removed."""
    agent, a, b = full_se(pinned, max_reals=64)
    agent.dp.close()
    second = pinned(FakeHealth(), max_reals=64)
    refused = lb(1, b)
    refused['listeners'][0]['allowed_cidrs'] = [
        f'203.0.113.{i * 16}/28' for i in range(5)]
    second.controller.document = document(2, [lb(0, a), refused])
    assert second._fetch()
    with pytest.raises(Exception, match='allowed_cidrs'):
        second._reconcile()
    assert second.applied_generation is None
    assert 'generation 2 not applied' in second.last_error
    assert sorted(rings(second)) == ['192.0.2.10:80/tcp', '192.0.2.11:80/tcp']
    assert second._intent is None      # nothing announced or withdrawn
