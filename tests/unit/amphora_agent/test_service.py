"""Agent._fetch / _reconcile / _report_state with the controller, the
dataplane and the health checker faked at their boundaries (the real agent
and BPF dataplane run in tests/functional/amphora_agent/test_agent.py)."""

import concurrent.futures
import copy
import logging
import os
import threading
import time

from oslo_config import cfg
import oslo_messaging as messaging
import pytest

from amphora_agent import control
from amphora_agent.dataplane import dataplane as dp_mod
from amphora_agent.dataplane import model
from amphora_agent import opts
from amphora_agent import processes
from amphora_agent import service
from dsr_wire import auth
from tests.unit.amphora_agent.test_control import raised_within


class FakeController:
    def __init__(self):
        self.document = None
        self.states = []
        self.statuses = []

    def get_config(self, se_group, se_id, packed=False):
        # As the controller answers (endpoints.AgentEndpoint.get_config).
        document = copy.deepcopy(self.document)
        if packed and isinstance(document, dict) and isinstance(
                document.get('load_balancers'), list):
            # What the agent's trust.open_snapshot makes of a packed
            # envelope.
            document = auth.unpack(auth.pack(document))
        return document

    def report_state(self, se_id, se_group, state):
        self.states.append(copy.deepcopy(state))

    def report_member_status(self, se_id, se_group, generation, statuses):
        self.statuses.append(statuses)

    def report_stats(self, se_id, se_group, stats):
        pass

    def submit(self, name, *args, **kwargs):
        """As control.ControllerProxy.submit, answered at once."""
        future = concurrent.futures.Future()
        try:
            future.set_result(getattr(self, name)(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 -- to the caller
            future.set_exception(exc)
        return future


class FakeDataplane:
    def __init__(self, limits):
        self.limits = limits
        self.applied = None
        self.fail = None
        self.refuse = None  # refuse(state) -> True: InvalidConfig
        self.full = []      # the full argument of every apply
        self.flood_guard_rates = []
        self.flows = self.flows6 = 0    # connection-table entries

    def apply(self, state, full=False):
        self.full.append(full)
        if self.fail:
            raise self.fail
        if self.refuse is not None and self.refuse(state):
            raise model.InvalidConfig('does not fit')
        self.applied = state
        return {'listeners_added': len(state.listeners)}

    def read_state(self):
        return self.applied or model.DesiredState()

    def stats(self, conn_table_entries=True):
        return {'listeners': [], 'members': []}

    def conn_census(self):
        return {4: self.flows, 6: self.flows6}, {}

    def held(self):
        """As Written.held: None before an apply."""
        if self.applied is None:
            return None
        return {'max_listeners': len(self.applied.listeners)}

    def set_flood_guard_rate(self, rate):
        self.flood_guard_rates.append(rate)


class FakeHealth:
    def __init__(self):
        self.targets = None
        self.fail = None

    def set_targets(self, targets, down=()):
        if self.fail:
            raise self.fail
        self.targets = targets

    def usable(self, member_id):
        return True

    def status(self, member_id):
        return 'ONLINE'


@pytest.fixture
def make_agent():
    agents = []

    def factory(tunnel6='2001:db8:1::2', max_listeners=16, max_members=64,
                ring_slots=0):
        conf = cfg.ConfigOpts()
        opts.register_agent_opts(conf)
        conf.set_override('se_id', 'se-1', 'agent')
        conf.set_override('se_group', 'g1', 'agent')
        conf.set_override('tunnel_source4', '198.18.1.2', 'agent')
        conf.set_override('tunnel_source6', tunnel6, 'agent')
        # Message authentication has its own tests (test_trust.py).
        conf.set_override('enabled', False, 'auth')
        conf([], project='octavia-dsr-test')
        transport = messaging.get_rpc_transport(cfg.CONF, url='fake:/')
        agent = service.Agent(conf, health=FakeHealth(), transport=transport)
        agents.append(agent)
        agent.controller = FakeController()
        agent.dp = FakeDataplane(dp_mod.Limits(
            max_listeners=max_listeners, ring_size=251,
            max_reals=max_members + 1, conn_table_size=4096,
            ring_slots=ring_slots))
        return agent
    yield factory
    for agent in agents:
        agent._control.stop()


def member(id_, address, **kw):
    return dict(id=id_, address=address, protocol_port=80, **kw)


def lb(index, members, monitor=None, vips=None):
    pool = {'id': f'p{index}', 'algorithm': 'SOURCE_IP_PORT',
            'members': members}
    if monitor:
        pool['health_monitor'] = monitor
    return {'id': f'lb{index}',
            'vips': [{'address': a}
                     for a in vips or [f'192.0.2.{10 + index}']],
            'listeners': [{'id': f'l{index}', 'protocol': 'TCP', 'port': 80,
                           'pool': pool}]}


def http_monitor(id_, codes='200'):
    return {'id': id_, 'type': 'HTTP', 'delay': 2, 'timeout': 1,
            'max_retries': 1, 'expected_codes': codes}


def document(generation, lbs):
    return {'schema_version': 1, 'se_group': 'g1', 'generation': generation,
            'load_balancers': lbs}


def programmed(agent):
    return {str(a) for spec in agent.dp.applied.listeners.values()
            for a in spec.members}


def step(agent):
    if agent._fetch():
        agent._reconcile()


def test_a_bad_monitor_is_rejected_alone_and_everything_else_applies(
        make_agent):
    agent = make_agent()
    agent.controller.document = document(3, [
        lb(1, [member('a1', '198.19.1.2'), member('a2', '198.19.2.2')],
           monitor=http_monitor('hm-bad', '999')),
        lb(2, [member('b1', '198.19.3.2')], monitor=http_monitor('hm-ok')),
        lb(3, [member('c1', '127.0.0.1'), member('c2', '198.19.4.2')])])
    step(agent)
    assert programmed(agent) == {'198.19.1.2', '198.19.2.2', '198.19.3.2',
                                 '198.19.4.2'}
    state = agent.controller.states[-1]
    assert state['applied_generation'] == 3 and state['error'] is None
    rejected = state['rejected_objects']
    assert set(rejected) == {'healthmonitors', 'members'}
    assert "expected_codes '999'" in rejected['healthmonitors']['hm-bad']
    assert 'loopback' in rejected['members']['c1']
    assert state['limits'] == {'max_listeners': 16, 'max_members': 64,
                               'ring_size': 251, 'conn_table_size': 4096,
                               'ring_slots': 16 * 251, 'max_cidrs': 16384}
    # What its dataplane holds; flows once a statistics report counted
    # them: the fuller of the two tables (each has conn_table_size).
    assert state['held'] == {'max_listeners': 3}
    agent.dp.flows, agent.dp.flows6 = 12, 5
    agent.report_stats()
    assert agent.controller.states[-1]['held'] == {
        'max_listeners': 3, 'conn_table_size': 12}
    agent.dp.flows6 = 4000
    agent.report_stats()
    assert agent.controller.states[-1]['held'] == {
        'max_listeners': 3, 'conn_table_size': 4000}
    # The pool of the rejected monitor runs unmonitored; the other one is
    # probed; targets come from validated objects only.
    targets = agent.health.targets
    assert set(targets) == {'a1', 'a2', 'b1', 'c2'}
    assert targets['a1'].monitor is None
    assert targets['b1'].monitor.codes == {200}
    assert agent.member_statuses() == {'a1': 'NO_MONITOR',
                                       'a2': 'NO_MONITOR', 'b1': 'ONLINE',
                                       'c2': 'NO_MONITOR'}


def test_members_of_a_disabled_load_balancer_or_listener_are_not_probed():
    """They serve nothing (as an amphora renders no HAProxy for them);
    enabled again, they are probed."""
    from amphora_agent import snapshot
    off_listener = lb(1, [member('a1', '198.19.1.2')],
                      monitor=http_monitor('hm-1'))
    off_listener['listeners'][0]['admin_state_up'] = False
    off_lb = dict(lb(2, [member('b1', '198.19.2.2')],
                     monitor=http_monitor('hm-2')), admin_state_up=False)
    on = lb(3, [member('c1', '198.19.3.2')], monitor=http_monitor('hm-3'))
    targets, rejected = service.health_targets(snapshot.parse(
        document(1, [off_listener, off_lb, on])))
    assert not rejected
    assert {m: t.probed for m, t in targets.items()} == {
        'a1': False, 'b1': False, 'c1': True}
    off_listener['listeners'][0]['admin_state_up'] = True
    off_lb['admin_state_up'] = True
    targets, _ = service.health_targets(snapshot.parse(
        document(2, [off_listener, off_lb, on])))
    assert all(t.probed for t in targets.values())


def test_set_targets_failure_never_reports_the_generation_applied(
        make_agent):
    agent = make_agent()
    agent.controller.document = document(1, [lb(1, [member('a1',
                                                           '198.19.1.2')])])
    step(agent)
    agent.controller.document = document(2, [lb(1, [
        member('a1', '198.19.1.2'), member('a2', '198.19.2.2')])])
    agent.health.fail = RuntimeError('checker gone')
    with pytest.raises(RuntimeError):
        step(agent)
    assert agent.applied_generation == 1
    assert agent.snapshot.generation == 1
    assert all(s['applied_generation'] == 1 for s in agent.controller.states)
    # The worker retries the fetch: once the checker takes the targets,
    # the generation is applied.
    agent.health.fail = None
    step(agent)
    assert agent.applied_generation == 2
    assert set(agent.health.targets) == {'a1', 'a2'}
    assert programmed(agent) == {'198.19.1.2', '198.19.2.2'}


def test_a_failed_apply_sets_error_and_keeps_the_applied_generation(
        make_agent):
    agent = make_agent()
    agent.controller.document = document(1, [lb(1, [member('a1',
                                                           '198.19.1.2')])])
    step(agent)
    agent.controller.document = document(2, [lb(2, [member('b1',
                                                           '198.19.3.2')])])
    agent.dp.fail = dp_mod.DataplaneError('map update failed')
    with pytest.raises(dp_mod.DataplaneError):
        step(agent)
    state = agent.controller.states[-1]
    assert state['applied_generation'] == 1
    assert 'generation 2 not applied: map update failed' in state['error']
    agent.dp.fail = None
    agent._reconcile()      # the worker's retry
    state = agent.controller.states[-1]
    assert (state['applied_generation'], state['error']) == (2, None)


def test_capacity_rejects_what_does_not_fit_in_snapshot_order(make_agent):
    agent = make_agent(max_listeners=3, max_members=3)
    agent.controller.document = document(1, [
        lb(1, [member('a1', '198.19.1.2')],
           vips=['192.0.2.11', '2001:db8:f::11']),
        lb(2, [member('b1', '198.19.3.2'), member('b2', '198.19.3.3')],
           vips=['192.0.2.12', '2001:db8:f::12']),
        lb(3, [member('c1', '198.19.4.2'), member('c2', '198.19.4.3')])])
    step(agent)
    rejected = agent.controller.states[-1]['rejected_objects']
    assert rejected['listeners'] == {'l2': (
        'listener l2: 4 dataplane listeners (VIP addresses x listeners) '
        'exceed max_listeners 3 of SE se-1')}
    assert rejected['members'] == {'c2': (
        'member c2: 4 dataplane members exceed max_members 3 of SE se-1')}
    assert len(agent.dp.applied.listeners) == 3
    assert programmed(agent) == {'198.19.1.2', '198.19.4.2'}


def test_a_listener_whose_rings_do_not_fit_is_rejected_alone(make_agent):
    # ring_size 251 caps every ring at 251 slots: room for three rings
    # (the map holds an even number of slots).
    agent = make_agent(ring_slots=3 * 251 + 1)
    agent.controller.document = document(1, [
        lb(1, [member('a1', '198.19.1.2')]),
        lb(2, [member('b1', '198.19.3.2')],
           vips=['192.0.2.12', '2001:db8:f::12']),
        lb(3, [member('c1', '198.19.4.2')])])
    step(agent)
    state = agent.controller.states[-1]
    assert state['applied_generation'] == 1 and state['error'] is None
    assert state['rejected_objects'] == {'listeners': {'l3': (
        'listener l3: its rings (1 x 251 slots for a pool of 1 members) '
        'exceed ring_slots 754 of SE se-1 (753 in use)')}}
    assert programmed(agent) == {'198.19.1.2', '198.19.3.2'}


def test_a_ring_is_sized_by_its_pool_not_by_its_usable_members(make_agent):
    agent = make_agent()
    agent.controller.document = document(1, [
        lb(1, [member('a1', '198.19.1.2'), member('a2', '198.19.1.3'),
               member('a3', '198.19.1.4'), member('a4', '198.19.1.5'),
               member('a5', '198.19.1.6', admin_state_up=False)])])
    step(agent)
    (spec,) = agent.dp.applied.listeners.values()
    assert len(spec.members) == 4 and spec.pool_members == 5
    # Five configured members: the 5-8 tier, whatever their state.
    assert spec.ring_size(65537) == 8009


def test_members_without_a_tunnel_source_are_rejected_alone(make_agent):
    agent = make_agent(tunnel6=None)
    agent.controller.document = document(1, [
        lb(1, [member('a1', '198.19.1.2'), member('a6', '2001:db8:2::2')])])
    step(agent)
    state = agent.controller.states[-1]
    assert state['applied_generation'] == 1
    assert list(state['rejected_objects']['members']) == ['a6']
    assert 'needs an IPv6 tunnel source, which SE se-1 does not have' in \
        state['rejected_objects']['members']['a6']
    assert programmed(agent) == {'198.19.1.2'}


def test_document_problems_still_reject_the_snapshot(make_agent):
    agent = make_agent()
    agent.controller.document = document(1, [lb(1, [member('a1',
                                                           '198.19.1.2')])])
    step(agent)
    agent.controller.document = dict(document(2, []), schema_version=2)
    step(agent)
    state = agent.controller.states[-1]
    assert state['rejected_generation'] == 2
    assert state['applied_generation'] == 1
    assert 'schema_version' in state['error']
    assert programmed(agent) == {'198.19.1.2'}


def test_lost_reports_are_sent_again(make_agent):
    # A report lost on its way (the controller's database away at that
    # moment) is sent again, unchanged or not: the state at the stats
    # pace, the member statuses (O(members)) at the resync pace.
    agent = make_agent()
    agent.controller.document = document(1, [lb(1, [member('a1',
                                                           '198.19.1.2')])])
    step(agent)
    states, statuses = (len(agent.controller.states),
                        len(agent.controller.statuses))
    agent.report_stats()
    agent.report_stats()
    assert len(agent.controller.states) == states + 2
    assert agent.controller.states[-1]['applied_generation'] == 1
    assert len(agent.controller.statuses) == statuses
    agent.resync()
    agent.resync()
    assert agent.controller.statuses[statuses:] == [
        {'a1': 'NO_MONITOR'}] * 2
    assert agent._fetch_wanted
    # A refused snapshot stays refused in every later report, until a
    # generation is applied.
    agent.controller.document = dict(document(2, []), schema_version=2)
    step(agent)
    agent.report_stats()
    assert agent.controller.states[-1]['rejected_generation'] == 2
    agent.controller.document = document(3, [])
    step(agent)
    agent.report_stats()
    state = agent.controller.states[-1]
    assert (state['applied_generation'], state['rejected_generation']) == \
        (3, None)


def test_each_rejection_is_logged_once(make_agent, caplog):
    agent = make_agent()
    caplog.set_level(logging.WARNING, logger='amphora_agent.service')
    for generation in (1, 2, 3):
        agent.controller.document = document(generation, [
            lb(1, [member('a1', '224.0.0.5'), member('a2', '198.19.1.2')])])
        step(agent)
    assert agent.applied_generation == 3
    logged = [r for r in caplog.records if 'a1' in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert 'multicast' in logged[0].getMessage()


def test_a_health_change_replans_its_load_balancer(make_agent):
    agent = make_agent()
    down = set()
    agent.health.usable = lambda member_id: member_id not in down
    agent.controller.document = document(1, [
        lb(1, [member('a1', '198.19.1.2'), member('a2', '198.19.2.2')]),
        lb(2, [member('b1', '198.19.3.2')])])
    step(agent)
    assert programmed(agent) == {'198.19.1.2', '198.19.2.2', '198.19.3.2'}
    # The planner asks only about what the checker reported, so a member
    # going down unreported stays programmed...
    down.add('a1')
    agent._reconcile()
    assert '198.19.1.2' in programmed(agent)
    # ...and its report takes it out.
    agent.health_changed('a1', 'ONLINE', 'ERROR')
    agent._reconcile()
    assert programmed(agent) == {'198.19.2.2', '198.19.3.2'}
    # After a failed apply every member is asked about again.
    down.add('b1')
    agent.dp.fail = RuntimeError('boom')
    with pytest.raises(RuntimeError):
        agent._reconcile()
    agent.dp.fail = None
    agent._reconcile()
    assert programmed(agent) == {'198.19.2.2'}


def test_the_worker_checks_every_dataplane_map_on_its_interval(make_agent):
    """Changes apply from what the dataplane wrote; every
    dataplane_check_interval the worker asks for a full apply (maps
    re-read, differences repaired), also when nothing changed."""
    agent = make_agent()
    agent.conf.set_override('dataplane_check_interval', 1.0, 'agent')
    agent.controller.document = document(1, [lb(1, [member('a1',
                                                           '198.19.1.2')])])
    step(agent)
    assert agent.dp.full == [False]
    worker = threading.Thread(target=agent._loop, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while True not in agent.dp.full:
            assert time.monotonic() < deadline, agent.dp.full
            time.sleep(0.05)
    finally:
        agent._stop.set()
        agent._wake.set()
        worker.join(30)
    assert agent.applied_generation == 1 and agent.last_error is None
    # A failed check is due again at the next reconcile.
    agent.dp.fail = dp_mod.DataplaneError('map read failed')
    agent._check_wanted = True
    with pytest.raises(dp_mod.DataplaneError):
        agent._reconcile()
    agent.dp.fail = None
    agent.dp.full.clear()
    agent._reconcile()
    agent._reconcile()
    assert agent.dp.full == [True, False]


def test_a_reload_writes_the_flood_guard_rate(make_agent):
    """[dataplane] flood_guard_rate is mutable: SIGHUP hands the new value
    to the dataplane (which writes se_config.flood_rate)."""
    agent = make_agent()
    agent.conf.set_override('flood_guard_rate', 5000, 'dataplane')
    agent._apply_reload()
    assert agent.dp.flood_guard_rates == [5000]


class FakeBgp:
    def __init__(self):
        self.intent = set()

    def set_announced(self, prefixes):
        self.intent = set(prefixes)


class BlockingClient(FakeController):
    """A ControllerClient whose broker stops answering while `down` is
    set: every message waits (as the rabbit driver does with retry=None)
    until it is cleared."""

    def __init__(self):
        super().__init__()
        self.up = threading.Event()
        self.up.set()
        self.blocked = threading.Event()     # a message is waiting

    def _wait(self):
        if not self.up.is_set():
            self.blocked.set()
        self.up.wait()

    def get_config(self, *args, **kwargs):
        self._wait()
        return super().get_config(*args, **kwargs)

    def report_state(self, *args):
        self._wait()
        super().report_state(*args)

    def report_member_status(self, *args):
        self._wait()
        super().report_member_status(*args)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_member_failure_is_acted_on_while_the_broker_is_away(make_agent):
    """The worker never waits on the broker: with every message to the
    controller blocked, a member failure still takes the member out of
    the ring and withdraws its VIP; once the broker is back the newest
    state reaches the controller, the older unsent ones dropped."""
    agent = make_agent()
    agent.conf.set_override('stats_interval', 0.5, 'agent')
    up = {'b1': True}
    agent.health.usable = lambda member_id: up[member_id]
    agent.bgp = FakeBgp()
    client = BlockingClient()
    client.document = document(1, [lb(1, [member('b1', '198.19.1.1')])])
    agent.controller = control.ControllerProxy(client, agent._control)
    reports = []        # every state report the worker made
    report_state = agent._report_state

    def count_reports():
        reports.append(1)
        report_state()
    agent._report_state = count_reports
    worker = threading.Thread(target=agent._loop, daemon=True)
    worker.start()
    try:
        wait_for(lambda: agent.bgp.intent == {'192.0.2.11/32'}, 30,
                 'generation 1 applied and announced')
        client.up.clear()
        # A heartbeat (stats_interval) is now stuck at the broker.
        wait_for(client.blocked.is_set, 30, 'a report sent to the broker')
        up['b1'] = False
        agent.health_changed('b1', 'ONLINE', 'ERROR')
        client.document = document(2, [lb(1, [member('b1', '198.19.1.1')])])
        agent.config_changed('g1', 2)       # a fetch is stuck too
        wait_for(lambda: programmed(agent) == set() and
                 agent.bgp.intent == set(), 10,
                 'b1 out of the ring and the VIP withdrawn')
        # More heartbeats while the broker is away.
        made = len(reports)
        wait_for(lambda: len(reports) >= made + 3, 10, 'heartbeats')
        sent = len(client.states)
        client.up.set()
        wait_for(lambda: len(client.states) > sent and
                 client.states[-1]['announced'] == [] and
                 client.states[-1]['applied_generation'] == 2, 10,
                 'generation 2 fetched and the newest state sent once the '
                 'broker is back')
        # Of generation 1, the one stuck on the broker and the newest: the
        # reports queued meanwhile were replaced.
        assert [s['announced'] for s in client.states[sent:]
                if s['applied_generation'] == 1] == [['192.0.2.11/32'], []]
    finally:
        client.up.set()
        agent._stop.set()
        agent._wake.set()
        worker.join(30)
    assert not worker.is_alive()


def test_the_agents_reports_give_up_on_an_unreachable_broker(make_agent):
    """oslo.messaging's rabbit driver waits for the broker forever unless
    told how often to retry: the agent's client is bounded, so the control
    thread is free again for the newest report (cast_block.py)."""
    agent = make_agent()
    transport = messaging.get_rpc_transport(
        cfg.CONF, url='rabbit://guest:guest@127.0.0.1:1//')
    dead = service.Agent(agent.conf, health=FakeHealth(),
                         transport=transport)
    try:
        # Given up (kombu's OperationalError: connection refused).
        assert raised_within(lambda: dead.controller._client.report_state(
            'se-1', 'g1', {})), 'report_state still waiting for the broker'
    finally:
        dead._control.stop()


def test_an_older_generation_is_never_applied(make_agent):
    """A late get_config answer (or a controller behind the others) must
    not take the SE back to an older generation."""
    agent = make_agent()
    agent.controller.document = document(3, [lb(1, [member('a1',
                                                           '198.19.1.2')])])
    step(agent)
    assert agent.applied_generation == 3
    agent.controller.document = document(2, [lb(1, [member('a2',
                                                           '198.19.1.3')])])
    assert agent._fetch() is False
    agent._reconcile()
    assert (agent.snapshot.generation, agent.applied_generation) == (3, 3)
    assert programmed(agent) == {'198.19.1.2'}
    agent.controller.document = document(4, [lb(1, [member('a2',
                                                           '198.19.1.3')])])
    step(agent)
    assert programmed(agent) == {'198.19.1.3'}


class FlakySpeaker:
    """A BgpSpeaker whose first command times out although ExaBGP lives
    (a wedged API); start() then adopts it and re-syncs the intent."""

    def __init__(self):
        self.intent = set()         # persisted, and what ExaBGP announces
        self.fail = 1
        self.pid = os.getpid()      # a live process to watch
        self._proc = (self.pid, processes.process_start_time(self.pid))

    def start(self):
        return 'adopted'

    def process(self):
        return self._proc

    def set_announced(self, prefixes):
        from amphora_agent.bgp import speaker as bgp_speaker
        self.intent = set(prefixes)
        if self.fail:
            self.fail -= 1
            raise bgp_speaker.BgpError('ExaBGP API: command timed out')

    def announced(self):
        return set(self.intent)

    def log_tail(self, n=30):
        return ''


def test_announced_is_read_again_after_exabgp_is_adopted(make_agent):
    from amphora_agent.bgp import supervisor as bgp_supervisor
    agent = make_agent()
    agent.bgp = FlakySpeaker()
    agent._bgp_sup = bgp_supervisor.BgpSupervisor(agent.bgp)
    agent._bgp_sup.start()
    try:
        agent.controller.document = document(1, [lb(1, [member(
            'a1', '198.19.1.2')])])
        step(agent)
        assert agent.announced == set()     # the command failed
        agent._supervise()                  # adopts ExaBGP, re-synced
        assert agent.announced == {'192.0.2.11/32'}
        agent.report_stats()
        assert agent.controller.states[-1]['announced'] == ['192.0.2.11/32']
    finally:
        agent._bgp_sup.close()


class SessionSpeaker(FakeBgp):
    """A BgpSpeaker whose sessions the test sets."""

    def __init__(self):
        super().__init__()
        self.peers = {'198.18.1.1': 'established'}

    def status(self):
        from amphora_agent.bgp import speaker as bgp_speaker
        return {address: bgp_speaker.PeerStatus(
            address, 65001, 4, state == 'established', state)
            for address, state in self.peers.items()}


def test_a_bgp_session_change_is_reported_at_once(make_agent):
    """The controller's operating statuses follow the SE's BGP sessions
    (dsr_provider/controller/routing.py): a session going down or up is
    reported by the next supervision round, not the next heartbeat."""
    agent = make_agent()
    agent.bgp = SessionSpeaker()
    agent.bgp_sessions.max_age = 0
    agent._report_state()
    agent._supervise()
    reports = len(agent.controller.states)
    agent.bgp.peers['198.18.1.1'] = 'active'
    agent._supervise()
    assert len(agent.controller.states) == reports + 1
    assert agent.controller.states[-1]['bgp']['peers'] == {
        '198.18.1.1': 'active'}
    agent._supervise()
    assert len(agent.controller.states) == reports + 1
    agent.bgp.peers['198.18.1.1'] = 'established'
    agent._supervise()
    assert agent.controller.states[-1]['bgp']['peers'] == {
        '198.18.1.1': 'established'}


def test_what_the_dataplane_refuses_is_rejected_alone(make_agent):
    """What the dataplane refuses even after the removals is rejected
    alone: a listener that fits without its new members loses only them,
    a new listener that does not fit is rejected; the rest applies."""
    agent = make_agent()
    agent.controller.document = document(1, [lb(1, [member('a1',
                                                           '198.19.1.2')])])
    step(agent)

    def refuse(state):
        members = {str(a) for spec in state.listeners.values()
                   for a in spec.members}
        return '198.19.1.3' in members or any(
            str(key.vip) == '192.0.2.13' for key in state.listeners)
    agent.dp.refuse = refuse
    agent.controller.document = document(2, [
        lb(1, [member('a1', '198.19.1.2'), member('a2', '198.19.1.3'),
               member('a3', '198.19.1.4')]),
        lb(2, [member('b1', '198.19.2.2')]),
        lb(3, [member('c1', '198.19.3.2')])])
    step(agent)
    state = agent.controller.states[-1]
    assert (state['applied_generation'], state['error']) == (2, None)
    assert {kind: sorted(items) for kind, items in
            state['rejected_objects'].items()} == {
        'members': ['a2'], 'listeners': ['l3']}
    assert programmed(agent) == {'198.19.1.2', '198.19.1.4', '198.19.2.2'}


def test_a_running_listener_whose_ring_cannot_grow_keeps_serving(make_agent):
    """A running listener's pool grows past a ring size step (4 -> 5
    members: 4001 -> 8009 slots) and the new ring does not fit beside the
    one in place: the listener keeps its running members and ring, only
    the new member is rejected (reported), and its VIP stays announced."""
    agent = make_agent()
    agent.bgp = FakeBgp()
    four = [member(f'a{i}', f'198.19.1.{i + 2}') for i in range(4)]
    agent.controller.document = document(1, [lb(1, four)])
    step(agent)
    assert agent.bgp.intent == {'192.0.2.11/32'}

    def refuse(state):  # the next ring size does not fit
        return any(max(s.pool_members, len(s.members)) >= 5
                   for s in state.listeners.values())
    agent.dp.refuse = refuse
    agent.controller.document = document(2, [lb(1, four + [
        member('a4', '198.19.1.9')])])
    step(agent)
    state = agent.controller.states[-1]
    assert (state['applied_generation'], state['error']) == (2, None)
    assert {k: sorted(v) for k, v in state['rejected_objects'].items()} == \
        {'members': ['a4']}
    assert programmed(agent) == {f'198.19.1.{i + 2}' for i in range(4)}
    (spec,) = agent.dp.applied.listeners.values()
    assert spec.pool_members == 4
    assert agent.bgp.intent == {'192.0.2.11/32'}
    assert set(agent.member_statuses()) == {'a0', 'a1', 'a2', 'a3'}
    # A later reconcile (a health change) keeps it so.
    agent.health_changed('a0', 'ONLINE', 'ONLINE')
    agent._reconcile()
    assert programmed(agent) == {f'198.19.1.{i + 2}' for i in range(4)}
    assert agent.bgp.intent == {'192.0.2.11/32'}


def test_a_running_listener_whose_change_does_not_fit_runs_as_applied(
        make_agent):
    """A running listener whose change does not fit even with its running
    members keeps running as applied (but for the members the change
    removes): it is named in rejected_objects with its new members, and
    its VIP stays announced; a new listener that does not fit is rejected
    alone."""
    agent = make_agent()
    agent.bgp = FakeBgp()
    agent.controller.document = document(1, [
        lb(1, [member('a1', '198.19.1.2'), member('a2', '198.19.1.3')]),
        lb(2, [member('b1', '198.19.2.2')])])
    step(agent)
    agent.dp.refuse = lambda state: any(
        s.conn_limit == 7 for s in state.listeners.values())
    changed = lb(1, [member('a1', '198.19.1.2'),
                     member('a3', '198.19.1.4')])
    changed['listeners'][0]['connection_limit'] = 7
    new = lb(3, [member('c1', '198.19.3.2')])
    new['listeners'][0]['connection_limit'] = 7
    agent.controller.document = document(2, [
        changed, lb(2, [member('b1', '198.19.2.2')]), new])
    step(agent)
    state = agent.controller.states[-1]
    assert (state['applied_generation'], state['error']) == (2, None)
    rejected = state['rejected_objects']
    assert {k: sorted(v) for k, v in rejected.items()} == {
        'listeners': ['l1', 'l3'], 'members': ['a3']}
    assert 'keeps running as applied' in rejected['listeners']['l1']
    assert programmed(agent) == {'198.19.1.2', '198.19.2.2'}
    assert {str(k.vip): s.conn_limit
            for k, s in agent.dp.applied.listeners.items()} == {
        '192.0.2.11': 0, '192.0.2.12': 0}
    assert agent.bgp.intent == {'192.0.2.11/32', '192.0.2.12/32'}
    agent._reconcile()
    assert programmed(agent) == {'198.19.1.2', '198.19.2.2'}
    # Once the change fits, it applies.
    agent.dp.refuse = None
    agent.controller.document = document(3, [
        changed, lb(2, [member('b1', '198.19.2.2')]), new])
    step(agent)
    assert agent.controller.states[-1]['rejected_objects'] == {}
    assert programmed(agent) == {'198.19.1.2', '198.19.1.4', '198.19.2.2',
                                 '198.19.3.2'}


def test_a_vip_whose_listener_a_refused_fit_removed_is_withdrawn(
        make_agent):
    """A generation that does not fit has its removals applied first; if
    it is then refused whole (a running listener's change that does not
    fit, with no applied version to hold it at, as after a restart), the
    VIPs the removals left without a listener are withdrawn all the same:
    announced, they would draw traffic the SE drops."""
    agent = make_agent()
    agent.bgp = FakeBgp()
    agent.controller.document = document(1, [
        lb(1, [member('a1', '198.19.1.2')]),
        lb(2, [member('b1', '198.19.2.2')])])
    step(agent)
    assert agent.bgp.intent == {'192.0.2.11/32', '192.0.2.12/32'}
    agent._applied_snap = None      # what a restarted agent has
    agent.dp.refuse = lambda state: any(
        s.conn_limit == 7 for s in state.listeners.values())
    changed = lb(1, [member('a1', '198.19.1.2')])
    changed['listeners'][0]['connection_limit'] = 7
    agent.controller.document = document(2, [changed])
    with pytest.raises(model.InvalidConfig):
        step(agent)     # the worker loop logs it and tries again
    state = agent.controller.states[-1]
    assert state['applied_generation'] != 2 and state['error']
    assert {str(k.vip) for k in agent.dp.applied.listeners} == {
        '192.0.2.11'}
    assert agent.bgp.intent == {'192.0.2.11/32'}


class SlowDataplane(FakeDataplane):
    """An apply that takes as long as the test says (a first apply of
    thousands of listeners on a slow host)."""

    def __init__(self, limits):
        super().__init__(limits)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def apply(self, state, full=False):
        if not self.release.is_set():
            self.entered.set()
            self.release.wait(30)
        return super().apply(state, full)


def test_a_long_apply_keeps_the_se_heard_and_says_so(make_agent):
    """The controller takes an SE that has not reported for its agent_ttl
    for silent (its statuses stop voting; a group of silent SEs is ERROR):
    while the worker is inside a long apply, the last state goes again
    every stats_interval with busy_for, the generation still the one
    applied before."""
    agent = make_agent()
    agent.conf.set_override('stats_interval', 0.5, 'agent')
    slow = SlowDataplane(agent.dp.limits)
    agent.dp = slow
    client = FakeController()
    client.document = document(1, [lb(1, [member('b1', '198.19.1.1')])])
    agent.controller = control.ControllerProxy(client, agent._control)
    worker = threading.Thread(target=agent._loop, daemon=True)
    worker.start()
    try:
        wait_for(lambda: client.states and
                 client.states[-1]['applied_generation'] == 1, 30,
                 'generation 1 applied and reported')
        slow.release.clear()
        client.document = document(2, [lb(1, [member('b1', '198.19.1.1'),
                                              member('b2', '198.19.1.2')])])
        agent.config_changed('g1', 2)
        assert slow.entered.wait(30), 'the apply of generation 2 started'
        heard = len(client.states)
        wait_for(lambda: len(client.states) >= heard + 3, 10,
                 'heartbeats while the apply runs')
        busy = client.states[heard:]
        assert all(s['applied_generation'] == 1 for s in busy)
        assert [s['busy_for'] > 0 for s in busy] == [True] * len(busy)
        slow.release.set()
        wait_for(lambda: client.states[-1]['applied_generation'] == 2, 10,
                 'generation 2 applied and reported')
        assert 'busy_for' not in client.states[-1]
    finally:
        slow.release.set()
        agent._stop.set()
        agent._wake.set()
        worker.join(30)
        agent._heartbeat.stop()
    assert not worker.is_alive()


class UnansweringClient(FakeController):
    """get_config calls that end as a call held by a dead controller ends:
    in oslo.messaging's MessagingTimeout; or in another error."""

    def __init__(self, error):
        super().__init__()
        self.error = error

    def get_config(self, *args, **kwargs):
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return super().get_config(*args, **kwargs)


@pytest.mark.parametrize('error, pauses', [
    (messaging.MessagingTimeout('no reply'), False),
    (RuntimeError('refused'), True),
])
def test_an_unanswered_get_config_is_asked_again_at_once(make_agent, error,
                                                         pauses):
    """A timed-out call already waited its deadline: the next round asks
    again without the pause other failures get (which keeps a fast
    failure from looping)."""
    agent = make_agent()
    client = UnansweringClient(error)
    client.document = document(1, [lb(1, [member('b1', '198.19.1.1')])])
    agent.controller = control.ControllerProxy(client, agent._control)
    assert agent._fetch_step(True) is False     # asked, not answered yet
    wait_for(lambda: agent._fetch_future.done(), 10, 'the call ended')
    assert agent._fetch_and_reconcile(False, False) is pauses
    assert agent._fetch_wanted
    assert agent._fetch_and_reconcile(True, False) is False
    wait_for(lambda: agent._fetch_future.done(), 10, 'the second call')
    agent._fetch_and_reconcile(False, False)
    assert agent.snapshot.generation == 1


def test_the_heartbeat_goes_when_the_statistics_cannot_be_read(make_agent):
    """report_stats reads the statistics before the state (the state
    carries the flows just counted), but a failed read must not stop the
    heartbeat."""
    agent = make_agent()
    agent.controller.document = document(1, [lb(1, [member('a1',
                                                           '198.19.1.2')])])
    step(agent)
    sent = len(agent.controller.states)

    def broken(conn_table_entries=True):
        raise dp_mod.DataplaneError('map read failed')
    agent.dp.stats = broken
    with pytest.raises(dp_mod.DataplaneError):
        agent.report_stats()
    assert len(agent.controller.states) == sent + 1
    assert agent.controller.states[-1]['applied_generation'] == 1


def test_changes_total_counts_every_apply_that_wrote_the_maps(make_agent):
    """The dataplane_changes metric's source: the fitting path's applies
    (removals first, each trial that fit) write the maps too, and are
    counted; a refused one wrote nothing and is not."""
    agent = make_agent()
    assert set(agent.changes_total()) >= {'rings_moved', 'listeners_added'}
    assert not any(agent.changes_total().values())
    real, returned = agent.dp.apply, []

    def apply(state, full=False):
        changes = real(state, full)
        returned.append(changes)
        return changes
    agent.dp.apply = apply
    agent.controller.document = document(1, [
        lb(1, [member('a1', '198.19.1.2')]),
        lb(2, [member('b1', '198.19.2.2')])])
    step(agent)
    agent.dp.refuse = lambda state: any(
        s.conn_limit == 7 for s in state.listeners.values())
    new = lb(3, [member('c1', '198.19.3.2')])
    new['listeners'][0]['connection_limit'] = 7
    agent.controller.document = document(2, [
        lb(1, [member('a1', '198.19.1.2')]),
        lb(2, [member('b1', '198.19.2.2')]), new])
    step(agent)
    assert len(returned) > 2        # the fitting path applied more
    assert agent.changes_total()['listeners_added'] == sum(
        c['listeners_added'] for c in returned)
