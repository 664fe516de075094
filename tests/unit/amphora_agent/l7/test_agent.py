"""amphora_agent.l7.agent: the L7 SE's agent round -- a signed L7
snapshot through ControllerTrust into the engine (real HAProxy on
127.0.0.1), reports, and the tier-2 capabilities in a real tooz group
(file:// backend).  The controller is a recording test double."""

import copy
import shutil
import time
import types

from oslo_config import cfg
import oslo_messaging as messaging
import pytest

from amphora_agent.l7 import agent as agent_mod
from amphora_agent.l7 import certs
from amphora_agent.l7 import engine as engine_mod
from amphora_agent.l7 import wall_steps
from amphora_agent import trust as trust_mod
from dsr_wire import auth
from dsr_wire import capability_seal
from dsr_wire import l7 as l7_schema
from dsr_wire import membership as membership_mod
from tests.unit.amphora_agent.l7.test_engine import free_port
from tests.unit.amphora_agent.l7.test_engine import lb
from tests.unit.amphora_agent.l7.test_engine import RecordingHost
from tests.unit.amphora_agent.test_control import raised_within
from tools.lab import l7_docs as docs
from tools.lab.netns import wait_for

pytestmark = pytest.mark.skipif(shutil.which('haproxy') is None,
                                reason='haproxy is not installed')
GROUP = 'g1-l7'


def worker_did(predicate, timeout=30):
    wait_for(predicate, timeout, 'the L7 agent\'s worker')


class Controller:
    """Serves get_config from ``answer``; records every cast."""

    def __init__(self):
        self.answer = None
        self.casts = []

    def get_config(self, se_group, se_id):
        return copy.deepcopy(self.answer)

    def report_state(self, se_id, se_group, state):
        self.casts.append(('state', copy.deepcopy(state)))

    def report_member_status(self, se_id, se_group, generation, statuses):
        self.casts.append(('members', generation, dict(statuses)))

    def report_stats(self, se_id, se_group, stats):
        self.casts.append(('stats', stats))

    def last(self, kind):
        return [c for c in self.casts if c[0] == kind][-1]


@pytest.fixture
def lab(tmp_path, cert_storage):
    ctl = str(tmp_path / 'controller.key')
    kid = auth.generate_key(ctl)
    auth.write_public_key(str(tmp_path / 'trusted' / f'{kid}.pub'),
                          auth.load_private_key(ctl).public_key())
    engine = engine_mod.Engine(str(tmp_path / 'state'), RecordingHost(),
                               certs.OctaviaStore('local_cert_manager'),
                               log_socket=str(tmp_path / 'log'), timeout=60)
    conf = types.SimpleNamespace(agent=types.SimpleNamespace(
        se_id='l7se1', se_group=GROUP, stats_interval=10.0,
        resync_interval=60.0, drain_wait=0.1),
        l7=types.SimpleNamespace(drain_timeout=30.0))
    url = f'file://{tmp_path}/tooz'
    publisher = agent_mod.CapabilityPublisher(membership_mod.Membership(
        url, 'l7se1', GROUP, {}))
    observer = membership_mod.Membership(url, 'controller', GROUP, {})
    controller = Controller()
    agent = agent_mod.L7Agent(
        conf, engine, controller,
        trust=trust_mod.ControllerTrust(GROUP, str(tmp_path / 'trusted'),
                                        str(tmp_path / 'auth')),
        publisher=publisher)
    # The rounds are driven by the test (sync, report), not by the
    # agent's worker thread, so that nothing races them.
    publisher.start(agent.capabilities())
    observer.start()
    yield types.SimpleNamespace(agent=agent, controller=controller,
                                signer=auth.Signer(ctl), observer=observer,
                                engine=engine, tmp=tmp_path)
    publisher.stop()
    observer.stop()
    engine.stop()


def signed(lab_, document):
    return lab_.signer.envelope(document)


def test_signed_document_applied_reported_and_published(lab):
    port = free_port()
    caps = lab.observer.members()['l7se1']
    assert caps == {'role': 'tier2', 'tunnel_addresses': {'4': '198.18.7.2'},
                    'ready': False, 'draining': False,
                    'l7_contract': l7_schema.CONTRACT_VERSION}
    lab.controller.answer = signed(lab, docs.document(
        lb('lb1', port), se_group=GROUP, generation=5))
    assert lab.agent.sync() is True
    assert lab.engine.generation == 5
    assert lab.agent.trust.floor == 5
    assert lab.observer.members()['l7se1']['ready'] is True
    state = lab.controller.last('state')[1]
    assert state['applied_generation'] == 5 and state['error'] is None
    assert state['load_balancers']['lb1']['status'] == 'ACTIVE'
    # Its tunnel addresses in the signed report too: the controller
    # steers the L4 pools to these, not to tooz's.
    assert state['tunnel_addresses'] == {'4': '198.18.7.2'}
    assert state['capability_seal'] is None     # this lab's are not sealed
    # m2's pool serves no listener: HAProxy does not run it.
    assert lab.controller.last('members') == (
        'members', 5, {'m1': 'NO_MONITOR', 'm2': 'OFFLINE'})
    # The same generation again: nothing to do.
    assert lab.agent.sync() is False


def test_with_a_key_the_capabilities_are_sealed_and_the_state_says_so(
        lab):
    """With authentication on, the L7 agent seals its tooz capabilities
    with its key, and its signed state names the run that seals: the
    controller then takes an unsealed entry, or another run's, under its
    name for somebody else's."""
    key = str(lab.tmp / 'l7se2.key')
    auth.generate_key(key)
    sealer = capability_seal.Sealer(auth.Signer(key), 'l7se2', GROUP)
    publisher = agent_mod.CapabilityPublisher(membership_mod.Membership(
        f'file://{lab.tmp}/tooz', 'l7se2', GROUP, {}, sealer=sealer))
    conf = types.SimpleNamespace(agent=types.SimpleNamespace(
        se_id='l7se2', se_group=GROUP, stats_interval=10.0,
        resync_interval=60.0, drain_wait=0.1),
        l7=types.SimpleNamespace(drain_timeout=30.0))
    agent = agent_mod.L7Agent(conf, lab.engine, lab.controller,
                              publisher=publisher)
    publisher.start(agent.capabilities())
    try:
        assert agent.state()['capability_seal'] == sealer.boot
        plain, seal = capability_seal.open_seal(
            lab.observer.members()['l7se2'], 'l7se2', GROUP,
            auth.load_private_key(key).public_key(), 60)
        assert plain == agent.capabilities()
        assert seal.boot == sealer.boot
    finally:
        publisher.stop()


def test_publishing_ready_is_logged_once(lab, caplog):
    """The L7 agent logs when it publishes ready or draining (operators,
    and the e2e tests timing the L4 rings from it), once per change."""
    caplog.set_level('INFO', logger=agent_mod.__name__)
    lab.controller.answer = signed(lab, docs.document(
        lb('lb1', free_port()), se_group=GROUP, generation=5))
    assert lab.agent.sync() is True
    lab.agent.report()
    published = [r.getMessage() for r in caplog.records
                 if r.getMessage().startswith('publishing ')]
    assert published == [f'publishing ready True, draining False to '
                         f'octavia-dsr.{GROUP}'], published


def test_the_l7_agent_publishes_the_l7_contract_of_this_release(lab):
    """The controller sends a group the listener TLS settings only when
    every live L7 SE publishes the contract that has them: an L7 SE of
    this release does, in its tooz capabilities, ready or not."""
    members = lab.observer.members()
    assert members['l7se1'][l7_schema.CONTRACT_CAPABILITY] == 2
    assert l7_schema.group_contract(members) == 2
    assert set(l7_schema.LISTENER_TLS_FIELDS) <= set(
        l7_schema.listener_fields_above(1)) and \
        l7_schema.listener_fields_above(2) == ()


def test_unsigned_forged_and_older_documents_are_refused(lab):
    port = free_port()
    lab.controller.answer = signed(lab, docs.document(
        lb('lb1', port), se_group=GROUP, generation=5))
    lab.agent.sync()
    worker = lab.engine.process('lb1').worker_pid()
    # Unsigned.
    lab.controller.answer = docs.document(lb('lb1', free_port()),
                                          se_group=GROUP, generation=6)
    assert lab.agent.sync() is False
    # Signed by a key the L7 SE does not trust.
    rogue = str(lab.tmp / 'rogue.key')
    auth.generate_key(rogue)
    lab.controller.answer = auth.Signer(rogue).envelope(docs.document(
        lb('lb1', free_port()), se_group=GROUP, generation=7))
    assert lab.agent.sync() is False
    # Signed, but older than what was applied (a replay).
    lab.controller.answer = signed(lab, docs.document(
        lb('lb1', free_port()), se_group=GROUP, generation=4))
    assert lab.agent.sync() is False
    assert lab.agent.trust.refusals.total() == 3
    assert lab.engine.generation == 5
    assert lab.engine.process('lb1').worker_pid() == worker


def test_invalid_document_rejected_and_reported(lab):
    doc = docs.document(lb('lb1', free_port()), se_group=GROUP,
                        generation=2)
    doc['load_balancers'][0]['listeners'][0]['default_pool_id'] = 'nope'
    lab.controller.answer = signed(lab, doc)
    assert lab.agent.sync() is False
    state = lab.controller.last('state')[1]
    assert state['rejected_generation'] == 2
    assert "default_pool_id 'nope' is invalid" in state['error']
    assert lab.engine.generation is None
    assert lab.observer.members()['l7se1']['ready'] is False
    # The stats heartbeat sends the state again (a cast may have been
    # lost), the refusal still in it; the resync the member statuses too.
    lab.agent.report_stats()    # the first statuses ({}) go out
    sent = len(lab.controller.casts)
    lab.agent.report_stats()
    assert [c[0] for c in lab.controller.casts[sent:]] == ['stats', 'state']
    assert lab.controller.last('state')[1]['rejected_generation'] == 2
    sent = len(lab.controller.casts)
    lab.agent.resync()
    assert [c[0] for c in lab.controller.casts[sent:]] == [
        'state', 'members']


def test_worker_thread_applies_and_stops(lab):
    lab.controller.answer = signed(lab, docs.document(
        lb('lb1', free_port()), se_group=GROUP, generation=3))
    lab.agent.publisher = None      # the fixture's publisher is running
    lab.agent.start()
    try:
        worker_did(lambda: lab.engine.generation == 3)
        worker_did(lambda: any(c[0] == 'members' for c in
                               lab.controller.casts))
    finally:
        lab.agent.stop(drain=False)
    assert not lab.agent._thread.is_alive()


def test_a_wall_clock_step_back_is_reported_at_once_and_again_past_it(
        lab):
    """The leader holds an L7 SE's seals to the lag of its run; after its
    clock went back they look late until a signed state as late is stored
    (dsr_provider/controller/tier2.SealClock).  The worker reports its
    state at once, and again once its clock passed the last report's time
    (the controller drops a report signed before the last it stored) --
    not a stats_interval (60 s here) later."""
    lab.agent.conf.agent.stats_interval = 60.0
    offset = [0.0]
    lab.agent._wall_steps = wall_steps.WallSteps(
        wall=lambda: time.time() + offset[0])
    lab.controller.answer = signed(lab, docs.document(
        lb('lb1', free_port()), se_group=GROUP, generation=3))
    lab.agent.publisher = None      # the fixture's publisher is running
    lab.agent.start()

    def states():
        return sum(1 for c in lab.controller.casts if c[0] == 'state')
    try:
        worker_did(lambda: states() and lab.controller.last('state')[1][
            'applied_generation'] == 3)     # the apply's report
        before = states()
        offset[0] = -4.0
        stepped = time.monotonic()
        worker_did(lambda: states() >= before + 1, timeout=15)
        first = time.monotonic() - stepped
        worker_did(lambda: states() >= before + 2, timeout=30)
        # Not before its clock passed the first report's time (4 s).
        assert time.monotonic() - stepped >= 4.0, first
    finally:
        lab.agent.stop(drain=False)


def test_a_missing_namespace_fails_the_start_before_anything(lab):
    """[agent] netns naming no namespace: start() raises naming it; no
    HAProxy adopted, nothing published, no worker loop left running."""
    lab.agent.conf.agent.netns = 'dsr-no-such-namespace'
    adopted = []
    lab.engine.adopt = lambda: adopted.append(True)
    published = []
    lab.agent.publisher = types.SimpleNamespace(
        start=published.append, publish=published.append)
    with pytest.raises(RuntimeError, match="cannot enter network "
                       "namespace 'dsr-no-such-namespace'"):
        lab.agent.start(timeout=30)
    assert not adopted and not published
    lab.agent._thread.join(5)
    assert not lab.agent._thread.is_alive()


def test_drain_publishes_draining_not_ready(lab):
    lab.controller.answer = signed(lab, docs.document(
        lb('lb1', free_port()), se_group=GROUP, generation=1))
    lab.agent.sync()
    assert lab.observer.members()['l7se1']['ready'] is True
    lab.agent.draining = True
    lab.agent.report()
    assert lab.observer.members()['l7se1'] == {
        'role': 'tier2', 'tunnel_addresses': {'4': '198.18.7.2'},
        'ready': False, 'draining': True,
        'l7_contract': l7_schema.CONTRACT_VERSION}


def test_empty_group_tier1_document_is_the_empty_l7_document(lab):
    # The controller knows a group is L7 once a tier-2 load balancer names
    # it; before that its agents get the schema v1 document of a group
    # with nothing to serve.  That is "nothing to serve" for an L7 SE too:
    # applied (no HAProxy, nothing on lo), no error reported.
    lab.controller.answer = signed(lab, {
        'schema_version': 1, 'se_group': GROUP, 'generation': 0,
        'load_balancers': []})
    assert lab.agent.sync() is True
    assert lab.engine.generation == 0
    state = lab.controller.last('state')[1]
    assert state['error'] is None and state['rejected_generation'] is None
    assert state['applied_generation'] == 0
    # Once a tier-2 load balancer names the group, the L7 document.
    lab.controller.answer = signed(lab, docs.document(
        lb('lb1', free_port()), se_group=GROUP, generation=1))
    assert lab.agent.sync() is True
    assert lab.engine.generation == 1
    assert lab.engine.process('lb1').running()


def test_tier1_document_with_load_balancers_is_rejected(lab):
    lab.controller.answer = signed(lab, {
        'schema_version': 1, 'se_group': GROUP, 'generation': 4,
        'load_balancers': [{'id': 'lb-l4', 'vips': [{'address':
                                                     '192.0.2.9'}],
                            'listeners': []}]})
    assert lab.agent.sync() is False
    state = lab.controller.last('state')[1]
    assert state['rejected_generation'] == 4
    assert 'l7snapshot.role' in state['error']
    assert 'tier-1' in state['error'] and GROUP in state['error']
    assert lab.engine.generation is None


def test_octavia_templater_is_loaded_before_the_agent_joins(lab,
                                                            monkeypatch):
    # Octavia's templater takes seconds to import: the first apply after a
    # tier-2 listener appeared spent them (14-16 s, past the controller's
    # apply timeout).  The agent loads it before it joins its group.
    order = []
    monkeypatch.setattr(agent_mod.render, 'preload',
                        lambda: order.append('preload'))

    class Publisher:
        def start(self, capabilities):
            order.append('join')

        def stop(self):
            pass
    lab.agent.publisher = Publisher()
    monkeypatch.setattr(lab.agent, '_loop', lambda: None)
    lab.agent.start()
    lab.agent._thread.join(5)
    assert order == ['preload', 'join']


def test_drain_leaves_the_group_only_when_connections_are_done(lab):
    # Leaving takes the L7 SE out of the L4 rings: a connection still open
    # would then be steered to another L7 SE and reset (e2e caught an
    # upload reset that way).  So the agent waits for HAProxy to be idle.
    import socket
    import threading

    port = free_port()
    lab.controller.answer = signed(lab, docs.document(
        lb('lb1', port), se_group=GROUP, generation=1))
    lab.agent.sync()
    conn = socket.create_connection(('127.0.0.1', port), timeout=5)
    try:
        worker_did(lambda: lab.agent.active_connections() == 1)
        stopper = threading.Thread(target=lab.agent.stop)
        stopper.start()
        worker_did(lambda: lab.observer.members()['l7se1']['draining'])
        # Draining and still in its group while the connection is open
        # (the stop polls HAProxy every 0.2 s: three rounds of it).
        for _ in range(3):
            worker_did(lambda: lab.agent.active_connections() == 1)
            stopper.join(0.3)
            assert stopper.is_alive()
            assert 'l7se1' in lab.observer.members()
    finally:
        conn.close()
    stopper.join(30)
    assert not stopper.is_alive()
    worker_did(lambda: 'l7se1' not in lab.observer.members())


def stop_with_a_connection_open(lab):
    import socket

    port = free_port()
    lab.controller.answer = signed(lab, docs.document(
        lb('lb1', port), se_group=GROUP, generation=1))
    lab.agent.sync()
    with socket.create_connection(('127.0.0.1', port), timeout=5):
        worker_did(lambda: lab.agent.active_connections() == 1)
        lab.agent.stop()        # returns although the connection is open
        worker_did(lambda: 'l7se1' not in lab.observer.members())


def test_drain_timeout_bounds_the_wait(lab):
    lab.agent.conf.l7.drain_timeout = 0.5
    stop_with_a_connection_open(lab)


def test_the_worker_s_graceful_shutdown_bounds_the_drain(lab):
    # cotyledon ends the worker at graceful_shutdown_timeout: a drain that
    # outlasted it would never leave the group itself.
    lab.agent.conf.l7.drain_timeout = 600.0
    lab.agent.conf.graceful_shutdown_timeout = (
        lab.agent.conf.agent.drain_wait + agent_mod.LEAVE_MARGIN + 0.5)
    stop_with_a_connection_open(lab)


@pytest.mark.parametrize('wait, timeout, graceful, budget', [
    (2.0, 50.0, 60, 50.0),      # the defaults: drain_timeout itself
    (2.0, 60.0, 60, 53.0),      # cut so the worker still leaves its group
    (2.0, 60.0, 0, 60.0),       # no graceful bound
    (30.0, 60.0, 20, 0.0),      # nothing left: leave at once
])
def test_drain_budget(wait, timeout, graceful, budget):
    assert agent_mod.drain_budget(wait, timeout, graceful) == budget


def test_udp_members_and_listener_counters_are_reported(lab):
    from amphora_agent.l7 import udp
    from tests.unit.amphora_agent.l7 import test_udp
    lab.engine.udp = udp.UdpService(
        test_udp.RecordingNft(), test_udp.RecordingConntrack(),
        checker=test_udp.StillChecker(), adopt_tables=False)
    lab.controller.answer = signed(lab, docs.document(
        test_udp.monitored_lb(), se_group=GROUP, generation=3))
    assert lab.agent.sync() is True
    assert lab.controller.last('members') == (
        'members', 3, {'m1': 'ONLINE', 'm2': 'ONLINE'})
    # A member fails its health checks: reported at the stats pace.
    lab.engine.udp.checker.current = {'m1': 'ERROR'}
    lab.engine.udp._health_changed('m1', 'ONLINE', 'ERROR')
    lab.agent.report_stats()
    assert lab.controller.last('members') == (
        'members', 3, {'m1': 'ERROR', 'm2': 'ONLINE'})
    assert lab.controller.last('stats')[1]['listeners']['li-udp'] == {
        'bytes_in': 300, 'bytes_out': 450, 'active_connections': 1,
        'total_connections': 2, 'request_errors': 0}
    # Draining waits for HAProxy's connections, not for UDP flows.
    assert lab.agent.active_connections() == 0


def test_built_agents_reports_give_up_on_an_unreachable_broker(
        monkeypatch, tmp_path):
    """build() bounds the client's retries: oslo.messaging's rabbit driver
    otherwise waits for the broker forever, and the loop that sends the
    reports also supervises the UDP listeners.  The broker here is a
    closed port; the engine and the tooz membership are not what is
    tested."""
    transport = messaging.get_rpc_transport(
        cfg.CONF, url='rabbit://guest:guest@127.0.0.1:1//')
    monkeypatch.setattr(agent_mod.rpc, 'get_transport', lambda conf:
                        transport)
    monkeypatch.setattr(agent_mod.engine_mod.Engine, 'from_conf',
                        classmethod(lambda cls, *a, **kw: None))
    monkeypatch.setattr(agent_mod.membership_mod, 'Membership',
                        lambda *a, **kw: None)
    conf = types.SimpleNamespace(
        auth=types.SimpleNamespace(enabled=False),
        agent=types.SimpleNamespace(se_id='l7se1', se_group=GROUP,
                                    rpc_retry=1),
        l7=types.SimpleNamespace(), dataplane=types.SimpleNamespace(
            decap_pin_dir=str(tmp_path)),
        coordination=types.SimpleNamespace(backend_url='file://' +
                                           str(tmp_path)))
    built = agent_mod.build(conf)
    try:
        # The worker's report is a cast on the control thread: it
        # returns at once, broker or not.
        started = time.monotonic()
        built.controller.report_state('l7se1', GROUP, {})
        assert time.monotonic() - started < 1.0
        # The client itself gives up (kombu's connection refused).
        assert raised_within(lambda: built.controller._client.report_state(
            'l7se1', GROUP, {})), 'report_state still waiting for the broker'
    finally:
        built._rpc_control.stop()
        built._coordination_control.stop()
        transport.cleanup()


def test_one_load_balancer_failing_is_its_own_and_is_retried(
        lab, monkeypatch):
    """lb2's port is held by another process: lb2 alone is ERROR (in
    rejected_objects, which the controller makes ERROR), the SE stays
    ready for lb1 (it was taken out of every L4 pool), and once the port
    is free the retry brings lb2 up without a new generation.  A HAProxy
    that dies is started again at the next round, not left down and
    reported ACTIVE."""
    import socket
    p1, p2 = free_port(), free_port()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(('127.0.0.1', p2))
    holder.listen()
    lab.controller.answer = signed(lab, docs.document(
        lb('lb1', p1), lb('lb2', p2), se_group=GROUP, generation=7))
    try:
        assert lab.agent.sync() is True
        state = lab.controller.last('state')[1]
        assert state['load_balancers']['lb2']['status'] == 'ERROR'
        (kind, objects), = state['rejected_objects'].items()
        assert kind == 'loadbalancers' and set(objects) == {'lb2'}
        assert 'Address already in use' in objects['lb2']
        assert objects['lb2'].startswith('L7 SE ')
        assert lab.observer.members()['l7se1']['ready'] is True
        # Not retried before RETRY_INTERVAL (each retry renders it).
        assert lab.agent.supervise() is False
    finally:
        holder.close()
    monkeypatch.setattr(lab.agent, '_retry_at', 0.0)
    assert lab.agent.supervise() is True
    state = lab.controller.last('state')[1]
    assert state['load_balancers']['lb2']['status'] == 'ACTIVE'
    assert state['rejected_objects'] == {}
    socket.create_connection(('127.0.0.1', p2), timeout=5).close()

    lab.engine.process('lb1').stop()
    assert lab.agent.supervise() is True
    assert lab.engine.result['lb1']['action'] == 'started'
    socket.create_connection(('127.0.0.1', p1), timeout=5).close()
    assert lab.agent.supervise() is False       # nothing to do


def test_a_crash_looping_haproxy_is_restarted_ever_more_slowly(
        lab, monkeypatch):
    """Each restart applies the whole document again: one dying again
    and again is restarted after 2, 4, ... s (up to RETRY_INTERVAL), not
    every round."""
    clock = [1000.0]
    monkeypatch.setattr(agent_mod.time, 'monotonic', lambda: clock[0])
    applied = []
    lab.agent._document = {'generation': 1}
    monkeypatch.setattr(lab.agent, 'report', lambda: None)
    monkeypatch.setattr(lab.engine, 'dead', lambda: ['lb1'])
    monkeypatch.setattr(lab.engine, 'failed', lambda: {})
    monkeypatch.setattr(lab.engine, 'apply', applied.append)
    assert lab.agent.supervise()            # the first: at once
    assert lab.agent.supervise()            # dead again at once: at once
    assert not lab.agent.supervise()        # then it waits 2 s
    clock[0] += 2
    assert lab.agent.supervise()
    clock[0] += 2
    assert not lab.agent.supervise()        # 4 s now
    clock[0] += 2
    assert lab.agent.supervise()
    assert len(applied) == 4
    clock[0] += agent_mod.CRASH_WINDOW + 1   # stable for a while: at once
    assert lab.agent.supervise()


def test_a_haproxy_waiting_for_its_restart_is_reported_at_once(lab):
    """A HAProxy that died and waits out its restart delay (a crash loop:
    up to RETRY_INTERVAL) is reported at the round that sees it, so that
    the controller takes this SE out of its L4 pools meanwhile; its
    restart is reported too."""
    p1 = free_port()
    lab.controller.answer = signed(lab, docs.document(
        lb('lb1', p1), se_group=GROUP, generation=3))
    assert lab.agent.sync() is True
    state = lab.controller.last('state')[1]
    assert state['helpers'] == {'haproxy': {'state': 'running',
                                            'not_running': []}}
    lab.agent._restart_at = time.monotonic() + 3600     # in its delay
    lab.engine.process('lb1').stop()
    reports = len(lab.controller.casts)
    assert lab.agent.supervise() is False               # not restarted yet
    assert len(lab.controller.casts) > reports          # but reported
    state = lab.controller.last('state')[1]
    assert state['helpers'] == {'haproxy': {'state': 'restarting',
                                            'not_running': ['lb1']}}
    assert state['rejected_objects'] == {}              # not ERROR
    reports = len(lab.controller.casts)
    assert lab.agent.supervise() is False
    assert len(lab.controller.casts) == reports         # said once
    lab.agent._restart_at = 0.0
    assert lab.agent.supervise() is True
    assert lab.controller.last('state')[1]['helpers']['haproxy'] == {
        'state': 'running', 'not_running': []}


@pytest.mark.parametrize('error, pauses', [
    (messaging.MessagingTimeout('no reply'), False),
    (RuntimeError('refused'), True),
])
def test_an_unanswered_get_config_is_asked_again_at_once(lab, monkeypatch,
                                                         error, pauses):
    """A get_config that timed out already waited its deadline (a
    controller killed holding it): the worker asks again at once; another
    failure pauses a second first (a fast failure must not loop)."""
    lab.controller.answer = signed(lab, docs.document(
        lb('lb1', free_port()), se_group=GROUP, generation=4))
    answer = lab.controller.get_config
    failures = [error]

    def get_config(se_group, se_id):
        if failures:
            raise failures.pop()
        return answer(se_group, se_id)
    monkeypatch.setattr(lab.controller, 'get_config', get_config)
    paused = []
    stop_wait = lab.agent._stop.wait

    def wait(timeout=None):
        paused.append(timeout)
        return stop_wait(timeout)
    monkeypatch.setattr(lab.agent._stop, 'wait', wait)
    lab.agent.publisher = None      # the fixture's publisher is running
    lab.agent.start()
    try:
        worker_did(lambda: lab.engine.generation == 4)
    finally:
        lab.agent.stop(drain=False)
    assert (1.0 in paused) is pauses, paused
