"""RPC between the controller and the agents (oslo.messaging, RabbitMQ).

Agent API 1.0 (controller -> agents, fanout per SE group):
    config_changed(se_group, generation)
Controller API 1.1 (agents -> controller, topic CONTROLLER_TOPIC):
    get_config(se_group, se_id, packed=False) -> snapshot document  (call)
    report_state(se_id, se_group, state)                  (cast)
    report_member_status(se_id, se_group, generation, statuses)  (cast)
    report_stats(se_id, se_group, stats)                  (cast)

1.1 added get_config's packed: the signed answer carries the L4 document
as lines, one deflated load balancer per line (auth.PACKED_FORMAT).  An
agent looks each line up among those it parsed last and decodes only the
load balancers that changed: at 10,000 load balancers x 16 members,
decoding the whole document took longer than applying a one-member
change.  An L7 group's document is never packed.  ControllerClient asks a
1.0 controller again without it (controllers and agents of one release
may meet during an upgrade, with several controllers on the topic).
"""

import collections
import random
import threading
import time

from oslo_config import cfg
from oslo_log import log as logging
import oslo_messaging as messaging

LOG = logging.getLogger(__name__)

# An explicit exchange: the default follows [DEFAULT] control_exchange,
# which octavia-api (where the provider driver runs) sets to 'octavia'.
EXCHANGE = 'octavia_dsr'
CONTROLLER_TOPIC = 'octavia-dsr-controller'
AGENT_TOPIC_PREFIX = 'octavia-dsr-agent'
AGENT_NAMESPACE = 'octavia_dsr_agent'
CONTROLLER_NAMESPACE = 'octavia_dsr_controller'
AGENT_API_VERSION = '1.0'
CONTROLLER_API_VERSION = '1.1'
PACKED_SINCE = '1.1'
# How long an agent asks a controller that refused a packed get_config
# (API 1.0: an upgrade under way) without packed before trying again.
UNPACKED_RETRY_AFTER = 600.0


def agent_topic(se_group):
    return f'{AGENT_TOPIC_PREFIX}.{se_group}'


def get_transport(conf=None, url=None):
    return messaging.get_rpc_transport(conf or cfg.CONF, url=url)


class AnswerDeadline:
    """How long a get_config waits for the controller's answer.

    A controller that dies holding a call never answers it (oslo.messaging
    acknowledges a call before dispatching it), and only the timeout tells
    the agent to ask again, when the broker gives the call to a live
    controller.  A fixed 10 s held every change that long after a
    controller crash (e2e test_leader_killed_the_other_controller_takes_over
    in CI: 10.7 s).  As TCP's retransmission timer (RFC 6298): a multiple of
    the slowest recent answer within [floor, ceiling] (the ceiling until an
    answer has been seen), doubled after each timeout until an answer
    comes, so a controller that has grown slow is waited for longer
    instead of being asked again and again.
    """

    FACTOR = 4
    SAMPLES = 8

    def __init__(self, floor=3.0, ceiling=10.0):
        if not 0 < floor <= ceiling:
            raise ValueError(f'get_config deadline: floor {floor} must be '
                             f'above 0 and at most ceiling {ceiling}')
        self.floor = floor
        self.ceiling = ceiling
        self._answers = collections.deque(maxlen=self.SAMPLES)
        self._backoff = 1
        self._lock = threading.Lock()

    def current(self):
        with self._lock:
            if not self._answers:
                # Nothing learnt yet (the agent's first ask, perhaps of a
                # group of 10,000 listeners): the longest, as TCP starts
                # with a conservative timer.
                return self.ceiling
            base = max(self.floor, self.FACTOR * max(self._answers))
            return min(self.ceiling, base * self._backoff)

    def answered(self, seconds):
        with self._lock:
            self._answers.append(seconds)
            self._backoff = 1

    def timed_out(self):
        with self._lock:
            if self.floor * self._backoff < self.ceiling:
                self._backoff *= 2


class ControllerClient:
    """What an agent calls on the controller."""

    def __init__(self, transport, timeout=10, signer=None, retry=None,
                 timeout_floor=3.0):
        """timeout: the longest a get_config waits for its answer;
        timeout_floor: the shortest (AnswerDeadline).
        signer: auth.Signer of this SE's key; every message carries its
        signature in the context (None: unsigned, for tests of refusal).
        retry: how many times oslo.messaging tries again to reach the
        broker for one message before raising MessageDeliveryFailure;
        None waits for the broker forever (the rabbit driver's default),
        which blocks the caller for as long as the broker is away."""
        # Every method but a packed get_config is of API 1.0: a 1.0
        # controller serves them during an upgrade.
        target = messaging.Target(exchange=EXCHANGE, topic=CONTROLLER_TOPIC,
                                  namespace=CONTROLLER_NAMESPACE,
                                  version='1.0')
        self._client = messaging.get_rpc_client(transport, target,
                                                timeout=timeout, retry=retry)
        self._packed_client = self._client.prepare(version=PACKED_SINCE)
        self._signer = signer
        self._unpacked_until = 0.0
        self.deadline = AnswerDeadline(min(timeout_floor, timeout), timeout)

    def _ctxt(self, method, args):
        return {} if self._signer is None else \
            self._signer.context(method, args)

    def _cast(self, method, **args):
        self._client.cast(self._ctxt(method, args), method, **args)

    def _timed_call(self, client, args):
        """get_config within the deadline, which learns from the answer."""
        started = time.monotonic()
        # Up to a quarter more, at random: the SEs of a group that all
        # time out in one change storm do not all ask again at once.
        timeout = self.deadline.current() * (1 + random.random() / 4)
        try:
            answer = client.prepare(timeout=timeout).call(
                self._ctxt('get_config', args), 'get_config', **args)
        except messaging.MessagingTimeout:
            self.deadline.timed_out()
            raise
        self.deadline.answered(time.monotonic() - started)
        return answer

    def get_config(self, se_group, se_id, packed=False):
        """The group's signed document; packed: as lines (auth.pack)
        when the controller speaks API 1.1."""
        if packed and time.monotonic() >= self._unpacked_until:
            args = {'se_group': se_group, 'se_id': se_id, 'packed': True}
            try:
                return self._timed_call(self._packed_client, args)
            except (messaging.UnsupportedVersion,
                    messaging.RemoteError) as exc:
                if 'UnsupportedVersion' not in (
                        getattr(exc, 'exc_type', None)
                        or type(exc).__name__):
                    raise
                LOG.info('the controller does not serve packed documents '
                         '(API %s): asking without for %.0f s',
                         PACKED_SINCE, UNPACKED_RETRY_AFTER)
                self._unpacked_until = \
                    time.monotonic() + UNPACKED_RETRY_AFTER
        return self._timed_call(self._client,
                                {'se_group': se_group, 'se_id': se_id})

    def report_state(self, se_id, se_group, state):
        self._cast('report_state', se_id=se_id, se_group=se_group,
                   state=state)

    def report_member_status(self, se_id, se_group, generation, statuses):
        self._cast('report_member_status', se_id=se_id, se_group=se_group,
                   generation=generation, statuses=statuses)

    def report_stats(self, se_id, se_group, stats):
        self._cast('report_stats', se_id=se_id, se_group=se_group,
                   stats=stats)


class AgentNotifier:
    """What the controller casts to every agent of an SE group."""

    def __init__(self, transport, signer=None):
        """signer: auth.Signer of the controller's key (None: unsigned)."""
        self._transport = transport
        self._signer = signer

    def config_changed(self, se_group, generation):
        target = messaging.Target(exchange=EXCHANGE,
                                  topic=agent_topic(se_group),
                                  namespace=AGENT_NAMESPACE,
                                  version=AGENT_API_VERSION, fanout=True)
        client = messaging.get_rpc_client(self._transport, target)
        args = {'se_group': se_group, 'generation': generation}
        ctxt = {} if self._signer is None else \
            self._signer.context('config_changed', args)
        client.cast(ctxt, 'config_changed', **args)


class AgentEndpoint:
    target = messaging.Target(namespace=AGENT_NAMESPACE,
                              version=AGENT_API_VERSION)

    def __init__(self, on_config_changed, verify=None):
        """verify(ctxt, method, args) -> bool: False drops the message
        (it has logged and counted why); None: no check."""
        self._on_config_changed = on_config_changed
        self._verify = verify

    def config_changed(self, ctxt, se_group, generation):
        if self._verify is not None and not self._verify(
                ctxt, 'config_changed',
                {'se_group': se_group, 'generation': generation}):
            return
        self._on_config_changed(se_group, generation)


def agent_server(transport, se_group, se_id, endpoint):
    target = messaging.Target(exchange=EXCHANGE, topic=agent_topic(se_group),
                              server=se_id)
    # The threading executor is oslo.messaging's default (and only) one.
    return messaging.get_rpc_server(transport, target, [endpoint])


def controller_server(transport, server_id, endpoints):
    target = messaging.Target(exchange=EXCHANGE, topic=CONTROLLER_TOPIC,
                              server=server_id)
    return messaging.get_rpc_server(transport, target, endpoints)
