"""get_config with packed (controller API 1.1) between the real client and
the real controller endpoint, over oslo.messaging's in-process transport,
signed with a real key; and a controller of API 1.0 asked again without
it."""

import base64
import json
import threading
import time
import zlib

from oslo_config import cfg
import oslo_messaging as messaging
import pytest

from dsr_provider.controller import endpoints
from dsr_wire import agent_rpc
from dsr_wire import auth

DOC = {'schema_version': 1, 'se_group': 'g1', 'generation': 3,
       'load_balancers': [{'id': 'lb1', 'vips': [{'address': '192.0.2.1'}],
                           'listeners': []},
                          {'id': 'lb2', 'vips': [{'address': '192.0.2.2'}],
                           'listeners': []}]}


class Store:
    def snapshot(self, se_group):
        return json.loads(json.dumps(DOC))


class ControllerOfApi10:
    """A controller from before packed documents."""

    target = messaging.Target(namespace=agent_rpc.CONTROLLER_NAMESPACE,
                              version='1.0')

    def __init__(self):
        self.asked = 0

    def get_config(self, ctxt, se_group, se_id):
        self.asked += 1
        return Store().snapshot(se_group)


class Broker:
    """oslo.messaging's in-process transport, controllers on its
    controller topic, agents' clients."""

    def __init__(self):
        # The global CONF, where oslo.messaging registers the options its
        # server reads (a fresh ConfigOpts lacks them).
        self.transport = messaging.get_rpc_transport(cfg.CONF,
                                                     url='fake:///')
        self.servers = []

    def start(self, endpoint):
        server = agent_rpc.controller_server(self.transport, 'ctl',
                                             [endpoint])
        server.start()
        self.servers.append(server)

    def stop(self):
        while self.servers:
            server = self.servers.pop()
            server.stop()
            server.wait()

    def client(self):
        return agent_rpc.ControllerClient(self.transport, timeout=5)


@pytest.fixture
def broker():
    broker = Broker()
    yield broker
    broker.stop()
    broker.transport.cleanup()


@pytest.fixture
def serve(broker):
    def start(endpoint):
        broker.start(endpoint)
        return broker.client()
    return start


@pytest.fixture
def signer(tmp_path):
    auth.generate_key(str(tmp_path / 'controller.key'))
    return auth.Signer(str(tmp_path / 'controller.key'))


def test_a_packed_answer_holds_each_load_balancer_on_its_own_line(
        serve, signer):
    client = serve(endpoints.AgentEndpoint(Store(), signer=signer))
    public = signer._key.public_key()
    answer = client.get_config('g1', 'se1', packed=True)
    assert answer['format'] == auth.PACKED_FORMAT
    head, *lines = answer['payload'].split('\n')
    assert json.loads(head) == {k: v for k, v in DOC.items()
                                if k != 'load_balancers'}
    assert [auth.unpack_line(line) for line in lines] == \
        DOC['load_balancers']
    assert [json.loads(zlib.decompress(base64.b64decode(line)))
            for line in lines] == DOC['load_balancers']
    opened = auth.open_envelope(answer, lambda kid: public)
    assert opened == dict(DOC, load_balancers=lines)
    plain = client.get_config('g1', 'se1')
    assert plain['format'] == auth.SIGNED_FORMAT
    assert auth.open_envelope(plain, lambda kid: public) == DOC


def test_the_controller_deflates_a_load_balancer_once(signer, monkeypatch):
    deflated = []
    real = auth.pack_line

    def pack_line(text):
        deflated.append(json.loads(text)['id'])
        return real(text)
    monkeypatch.setattr(auth, 'pack_line', pack_line)
    first = signer.envelope(DOC, packed=True)['payload']
    changed = json.loads(json.dumps(DOC))
    changed['load_balancers'][1]['vips'][0]['address'] = '192.0.2.9'
    second = signer.envelope(changed, packed=True)['payload']
    assert deflated == ['lb1', 'lb2', 'lb2']
    assert first.split('\n')[1] == second.split('\n')[1]
    assert first.split('\n')[2] != second.split('\n')[2]


def signed_payload(signer, payload):
    kid, sig = signer.sign(payload.encode())
    return {'format': auth.PACKED_FORMAT, 'key_id': kid,
            'payload': payload, 'sig': sig}


def test_a_packed_payload_is_verified_before_anything_is_decoded(signer):
    public = signer._key.public_key()
    envelope = signer.envelope(DOC, packed=True)
    envelope['payload'] = envelope['payload'].replace('"generation":3',
                                                      '"generation":4')
    with pytest.raises(auth.AuthError, match='bad signature'):
        auth.open_envelope(envelope, lambda kid: public)
    lines = auth.pack(DOC).split('\n')[1:]
    for head in ('[]', '{"load_balancers":[]}', 'not json'):
        with pytest.raises(auth.AuthError, match='not JSON'):
            auth.open_envelope(
                signed_payload(signer, '\n'.join([head] + lines)),
                lambda kid: public)


@pytest.mark.parametrize('line, reason', [
    ('not base64!', 'packed line'),
    (base64.b64encode(b'not deflated').decode(), 'incorrect header'),
    (base64.b64encode(zlib.compress(b'{"id": 1}')[:-3]).decode(),
     'truncated'),
    (base64.b64encode(zlib.compress(bytes(4096))).decode(),
     'more than 1024 bytes'),
    (base64.b64encode(zlib.compress(b'{"id": ')).decode(), 'Expecting')])
def test_a_line_that_is_not_a_packed_value_is_refused(
        line, reason, monkeypatch):
    monkeypatch.setattr(auth, 'PACKED_LINE_MAX_BYTES', 1024)
    with pytest.raises(ValueError, match=reason):
        auth.unpack_line(line)


def test_a_controller_of_api_1_0_is_asked_again_without_packed(
        broker, signer, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(agent_rpc.time, 'monotonic', lambda: clock[0])
    old = ControllerOfApi10()
    broker.start(old)
    client = broker.client()
    assert client.get_config('g1', 'se1', packed=True) == DOC
    assert old.asked == 1
    # The controllers are upgraded: for UNPACKED_RETRY_AFTER the agent
    # still asks without packed, then packed again.
    broker.stop()
    broker.start(endpoints.AgentEndpoint(Store(), signer=signer))
    clock[0] += agent_rpc.UNPACKED_RETRY_AFTER - 1
    assert client.get_config('g1', 'se1', packed=True)['format'] \
        == auth.SIGNED_FORMAT
    clock[0] += 1
    assert client.get_config('g1', 'se1', packed=True)['format'] \
        == auth.PACKED_FORMAT


class ControllerThatDiesHoldingACall:
    """Takes the first get_config and never answers it (a controller killed
    after oslo.messaging acknowledged the call), answers the next ones."""

    target = messaging.Target(namespace=agent_rpc.CONTROLLER_NAMESPACE,
                              version='1.1')

    def __init__(self):
        self.asked = 0
        self.released = threading.Event()

    def get_config(self, ctxt, se_group, se_id, packed=False):
        self.asked += 1
        if self.asked == 1:
            self.released.wait(30)
        return Store().snapshot(se_group)


def test_a_call_held_by_a_dead_controller_times_out_at_the_floor(broker):
    endpoint = ControllerThatDiesHoldingACall()
    broker.start(endpoint)
    # A second server, as a second controller: the held call blocks the
    # first server's dispatcher for good.
    broker.start(endpoint)
    client = agent_rpc.ControllerClient(broker.transport, timeout=10,
                                        timeout_floor=0.5)
    # An answer seen first (the held call below is the second).
    endpoint.asked = -1
    endpoint.released.set()
    assert client.get_config('g1', 'se1')['generation'] == 3
    endpoint.released.clear()
    endpoint.asked = 0
    learnt = client.deadline.current()
    assert 0.5 <= learnt < 10
    try:
        started = time.monotonic()
        with pytest.raises(messaging.MessagingTimeout):
            client.get_config('g1', 'se1', packed=True)
        waited = time.monotonic() - started
        assert learnt <= waited < learnt * 1.25 + 2, waited
        # The wait doubles until an answer comes, then follows the answers.
        assert client.deadline.current() == min(10, 2 * learnt)
        assert client.get_config('g1', 'se1')['generation'] == 3
        answered = max(client.deadline._answers)
        assert client.deadline.current() == min(10, max(0.5, 4 * answered))
    finally:
        endpoint.released.set()


def test_the_deadline_follows_the_slowest_recent_answer():
    deadline = agent_rpc.AnswerDeadline(floor=2.0, ceiling=10.0)
    assert deadline.current() == 10.0       # nothing learnt yet
    deadline.answered(0.05)
    assert deadline.current() == 2.0
    deadline.answered(1.0)
    assert deadline.current() == 4.0
    deadline.answered(5.0)
    assert deadline.current() == 10.0
    for _ in range(agent_rpc.AnswerDeadline.SAMPLES):
        deadline.answered(0.1)
    assert deadline.current() == 2.0
    # Timeouts double it, up to the ceiling, and an answer resets it.
    deadline.timed_out()
    assert deadline.current() == 4.0
    for _ in range(10):
        deadline.timed_out()
    assert deadline.current() == 10.0
    deadline.answered(0.1)
    assert deadline.current() == 2.0


def test_a_deadline_floor_above_its_ceiling_is_refused():
    with pytest.raises(ValueError, match='floor 5 must be above 0 and at '
                                         'most ceiling 1'):
        agent_rpc.AnswerDeadline(floor=5, ceiling=1)


def test_a_signers_contexts_go_back_in_time_only_for_a_clock_step(
        signer, monkeypatch):
    """The controller orders an SE's reports by their signing time: two
    messages never carry the same time, nor go back for a small step of
    the clock; a large step is taken (held, every message would fall
    outside the peers' window until the clock caught up)."""
    now = [1_000.0]
    monkeypatch.setattr(auth.time, 'time', lambda: now[0])

    def signed():
        return auth.signed_at(signer.context('report_state', {}))
    first, again = signed(), signed()
    assert first == 1_000.0 and first < again < 1_000.001
    now[0] = 999.5                                  # slewed back a little
    held = signed()
    assert again < held < 1_000.001
    now[0] = 1_002.0
    assert signed() == 1_002.0
    now[0] = 900.0                                  # set back 102 s
    assert signed() == 900.0
    assert auth.signed_at({}) is None and auth.signed_at(None) is None
