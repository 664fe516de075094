"""Provider driver side of the change API (dsr_wire/changes.py): publishes
each change as an oslo.messaging notification, at least once.

The transport is created on first use and shared by every driver instance
of the process (octavia-api builds a new driver object per request).
"""


import threading
import uuid

from oslo_config import cfg
from oslo_log import log as logging
import oslo_messaging as messaging
from oslo_utils import timeutils
import tenacity

from dsr_provider import opts
from dsr_wire import auth
from dsr_wire import changes

LOG = logging.getLogger(__name__)

# Re-exported: the driver's tests and the lab address the contract here.
TOPIC = changes.TOPIC
PUBLISHER_ID = changes.PUBLISHER_ID
API_VERSION = changes.API_VERSION
payload = changes.payload

_transport = None
_transport_lock = threading.Lock()


def get_transport(conf=None):
    """The process-wide notification transport, created on first use."""
    global _transport
    with _transport_lock:
        if _transport is None:
            conf = opts.register_opts(conf)
            _transport = messaging.get_notification_transport(
                conf, url=conf.dsr_provider.transport_url or None)
        return _transport


def reset_transport():
    """Forget (and clean up) the shared transport: tests, config reload."""
    global _transport
    with _transport_lock:
        if _transport is not None:
            _transport.cleanup()
        _transport = None


class ChangeClient:
    """Publishes changes; cast() mirrors an RPC client's signature.

    Like an RPC cast it waits for the broker rather than drop a change
    Octavia has already accepted.  oslo.messaging's Notifier cannot: it
    logs and swallows a failed send (a broker down while a new connection
    is opened), and Octavia would commit a change nobody ever gets.  So
    the message is built as the messagingv2 driver builds it and sent
    with the error seen, retried until the broker takes it.
    """

    def __init__(self, transport):
        self._transport = transport
        self._target = messaging.Target(topic=f'{TOPIC}.info')

    def cast(self, ctxt, method, **kwargs):
        message = {'message_id': str(uuid.uuid4()),
                   'publisher_id': PUBLISHER_ID, 'event_type': method,
                   'priority': 'INFO', 'payload': payload(**kwargs),
                   'timestamp': str(timeutils.utcnow())}
        for attempt in tenacity.Retrying(
                wait=tenacity.wait_exponential(multiplier=0.2, max=2),
                before_sleep=tenacity.before_sleep_log(LOG, logging.WARNING),
                reraise=True):
            with attempt:
                # The messagingv2 driver's call (message format 2.0).
                self._transport._send_notification(
                    self._target, ctxt, message, version=2.0, retry=None)


class ControllerAPI:
    """Client side of the controller's change API (fire and forget)."""

    def __init__(self, client=None, conf=None, signer=None):
        """signer: auth.Signer of the changes (None: [dsr_provider]
        signing_key's, when set)."""
        self._client = client
        self._conf = conf
        self._signer = signer

    @property
    def client(self):
        if self._client is None:
            self._client = ChangeClient(
                get_transport(self._conf or cfg.CONF))
        return self._client

    @property
    def signer(self):
        if self._signer is None:
            path = (self._conf or cfg.CONF).dsr_provider.signing_key
            if path:
                # A missing or unsafe key fails the change, loudly: sent
                # unsigned it would be refused by the controller anyway.
                self._signer = auth.Signer(path)
            else:
                self._signer = False
                LOG.warning('[dsr_provider] signing_key is unset: changes '
                            'go unsigned, and a dsr-controller with '
                            'authentication on refuses them')
        return self._signer or None

    def _cast(self, method, **kwargs):
        signer = self.signer
        self.client.cast(signer.context(method, kwargs) if signer else {},
                         method, **kwargs)

    # Load balancer
    def loadbalancer_create(self, loadbalancer):
        self._cast('loadbalancer_create', loadbalancer=loadbalancer)

    def loadbalancer_update(self, old_loadbalancer, new_loadbalancer):
        self._cast('loadbalancer_update', old_loadbalancer=old_loadbalancer,
                   new_loadbalancer=new_loadbalancer)

    def loadbalancer_delete(self, loadbalancer, cascade):
        self._cast('loadbalancer_delete', loadbalancer=loadbalancer,
                   cascade=bool(cascade))

    # Listener
    def listener_create(self, listener):
        self._cast('listener_create', listener=listener)

    def listener_update(self, old_listener, new_listener):
        self._cast('listener_update', old_listener=old_listener,
                   new_listener=new_listener)

    def listener_delete(self, listener):
        self._cast('listener_delete', listener=listener)

    # Pool
    def pool_create(self, pool):
        self._cast('pool_create', pool=pool)

    def pool_update(self, old_pool, new_pool):
        self._cast('pool_update', old_pool=old_pool, new_pool=new_pool)

    def pool_delete(self, pool):
        self._cast('pool_delete', pool=pool)

    # Member
    def member_create(self, member):
        self._cast('member_create', member=member)

    def member_update(self, old_member, new_member):
        self._cast('member_update', old_member=old_member,
                   new_member=new_member)

    def member_delete(self, member):
        self._cast('member_delete', member=member)

    def member_batch_update(self, pool_id, members):
        self._cast('member_batch_update', pool_id=pool_id, members=members)

    # Health monitor
    def health_monitor_create(self, healthmonitor):
        self._cast('health_monitor_create', healthmonitor=healthmonitor)

    def health_monitor_update(self, old_healthmonitor, new_healthmonitor):
        self._cast('health_monitor_update',
                   old_healthmonitor=old_healthmonitor,
                   new_healthmonitor=new_healthmonitor)

    def health_monitor_delete(self, healthmonitor):
        self._cast('health_monitor_delete', healthmonitor=healthmonitor)

    # L7 policies and rules (tier 2)
    def l7policy_create(self, l7policy):
        self._cast('l7policy_create', l7policy=l7policy)

    def l7policy_update(self, old_l7policy, new_l7policy):
        self._cast('l7policy_update', old_l7policy=old_l7policy,
                   new_l7policy=new_l7policy)

    def l7policy_delete(self, l7policy):
        self._cast('l7policy_delete', l7policy=l7policy)

    def l7rule_create(self, l7rule):
        self._cast('l7rule_create', l7rule=l7rule)

    def l7rule_update(self, old_l7rule, new_l7rule):
        self._cast('l7rule_update', old_l7rule=old_l7rule,
                   new_l7rule=new_l7rule)

    def l7rule_delete(self, l7rule):
        self._cast('l7rule_delete', l7rule=l7rule)
