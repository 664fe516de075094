"""Provider driver -> dsr-controller RPC API 1.0 (oslo.messaging casts).

Target: topic "octavia-dsr-controller", namespace "octavia_dsr_provider",
version "1.0". Every method is a cast (the driver never waits for the
controller); the context is an empty dict; arguments are keyword
arguments holding plain dicts (see payloads.py):

    loadbalancer_create(loadbalancer)
    loadbalancer_update(old_loadbalancer, new_loadbalancer)
    loadbalancer_delete(loadbalancer, cascade)
    listener_create(listener)
    listener_update(old_listener, new_listener)
    listener_delete(listener)
    pool_create(pool)
    pool_update(old_pool, new_pool)
    pool_delete(pool)
    member_create(member)
    member_update(old_member, new_member)
    member_delete(member)
    member_batch_update(pool_id, members)
    health_monitor_create(healthmonitor)
    health_monitor_update(old_healthmonitor, new_healthmonitor)
    health_monitor_delete(healthmonitor)

The transport is created on first use and shared by every driver instance
of the process (octavia-api builds a new driver object per request).
"""

import threading

import oslo_messaging as messaging
from oslo_config import cfg

from dsr_provider import opts

TOPIC = 'octavia-dsr-controller'
NAMESPACE = 'octavia_dsr_provider'
API_VERSION = '1.0'

_transport = None
_transport_lock = threading.Lock()


def get_transport(conf=None):
    """The process-wide RPC transport, created on first use."""
    global _transport
    with _transport_lock:
        if _transport is None:
            conf = opts.register_opts(conf)
            _transport = messaging.get_rpc_transport(
                conf, url=conf.dsr_provider.transport_url or None)
        return _transport


def reset_transport():
    """Forget (and clean up) the shared transport: tests, config reload."""
    global _transport
    with _transport_lock:
        if _transport is not None:
            _transport.cleanup()
        _transport = None


# The same exchange as the controller's server (amphora_agent.rpc): the
# default would follow octavia-api's control_exchange ('octavia').
EXCHANGE = 'octavia_dsr'


def target():
    return messaging.Target(exchange=EXCHANGE, topic=TOPIC,
                            namespace=NAMESPACE, version=API_VERSION)


class ControllerAPI:
    """Client side of the controller's provider API (all casts)."""

    def __init__(self, client=None, conf=None):
        self._client = client
        self._conf = conf

    @property
    def client(self):
        if self._client is None:
            self._client = messaging.get_rpc_client(
                get_transport(self._conf or cfg.CONF), target())
        return self._client

    def _cast(self, method, **kwargs):
        self.client.cast({}, method, **kwargs)

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
