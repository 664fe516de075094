"""Reads Octavia objects from octavia-driver-agent's "get" socket.

Octavia hands the driver a member without its pool's listener, but a DSR
member must listen on that listener's port. The driver-agent serves the
committed Octavia DB over a local unix socket (octavia-lib DriverLibrary
protocol); this module asks it, once, without DriverLibrary's minutes of
retries when the socket is missing: a lookup that cannot be made returns
UNKNOWN and the caller leaves the check to the controller.
"""

import collections
import os
import threading
import time

from octavia_lib.api.drivers import driver_lib
from octavia_lib.api.drivers import exceptions as driver_exceptions
from octavia_lib.common import constants as lib_consts
from oslo_config import cfg
from oslo_log import log as logging

from dsr_provider import driver_agent_client
from dsr_provider import flavors
from dsr_provider import opts

LOG = logging.getLogger(__name__)

UNKNOWN = object()      # the lookup could not be made


def vip_addresses(lb):
    """The VIP address and additional VIP addresses of a load balancer
    (an Octavia dict or octavia-lib object)."""
    def get(obj, name):
        value = obj.get(name) if isinstance(obj, dict) else getattr(
            obj, name, None)
        return None if type(value).__name__ == 'UnsetType' else value
    addresses = [get(lb, 'vip_address')]
    addresses += [get(extra, 'ip_address')
                  for extra in get(lb, 'additional_vips') or ()]
    return tuple(a for a in addresses if a)


class _GetClient(driver_agent_client.FastRecv, driver_lib.DriverLibrary):
    """DriverLibrary's get requests, without its socket wait at init (nor
    its polling sleeps when reading the answer)."""

    def __init__(self, get_socket):
        # DriverLibrary.__init__ waits up to minutes for all three sockets.
        self.get_socket = get_socket


def default_get_socket(conf=None):
    conf = opts.register_opts(conf)
    if conf.dsr_provider.octavia_get_socket:
        return conf.dsr_provider.octavia_get_socket
    try:    # inside octavia-api, Octavia's own setting
        return conf.driver_agent.get_socket_path
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError, AttributeError):
        return driver_lib.DEFAULT_GET_SOCKET


class PortCache:
    """What this process learnt of listener ports and pool bindings.

    Every get over the driver-agent socket costs 150-500 ms (it forks a
    child per request), and a member create needs the pool's listener
    port.  The driver sees the listener and pool creates that establish
    it, so it remembers them.  A listener's protocol_port never changes in
    Octavia; a pool's listener can (another listener's default pool, and
    possibly through another octavia-api worker process), so a binding is
    trusted for `ttl` seconds only.  Only positive facts are kept.
    """

    def __init__(self, ttl=300.0, size=4096):
        self.ttl = ttl
        self.size = size
        self._lock = threading.Lock()
        self._listener_port = collections.OrderedDict()
        self._pool_listener = collections.OrderedDict()  # id -> (lid, t)
        # A load balancer's VIPs and a pool's load balancer never change
        # in Octavia: no TTL.  (Member address checks need the VIPs.)
        self._lb_vips = collections.OrderedDict()
        self._pool_lb = collections.OrderedDict()
        # Nor do a load balancer's tier (its flavor), a listener's load
        # balancer and protocol or an L7 policy's listener.
        self._lb_tier = collections.OrderedDict()
        self._listener_lb = collections.OrderedDict()
        self._policy_listener = collections.OrderedDict()
        self._listener_protocol = collections.OrderedDict()

    def _trim(self, table):
        while len(table) > self.size:
            table.popitem(last=False)

    def remember_listener(self, listener_id, port):
        if listener_id and port is not None:
            with self._lock:
                self._listener_port[listener_id] = port
                self._trim(self._listener_port)

    def remember_pool(self, pool_id, listener_id):
        if pool_id and listener_id:
            with self._lock:
                self._pool_listener[pool_id] = (listener_id,
                                                time.monotonic())
                self._trim(self._pool_listener)

    def remember_vips(self, lb_id, addresses):
        if lb_id and addresses:
            with self._lock:
                self._lb_vips[lb_id] = tuple(addresses)
                self._trim(self._lb_vips)

    def remember_pool_lb(self, pool_id, lb_id):
        if pool_id and lb_id:
            with self._lock:
                self._pool_lb[pool_id] = lb_id
                self._trim(self._pool_lb)

    def remember(self, table_name, key, value):
        """lb_tier / listener_lb / pool_lb / policy_listener /
        listener_protocol."""
        if key and value is not None:
            table = getattr(self, f'_{table_name}')
            with self._lock:
                table[key] = value
                self._trim(table)

    def remember_tier(self, lb_id, tier):
        self.remember('lb_tier', lb_id, tier)

    def remember_listener_lb(self, listener_id, lb_id):
        self.remember('listener_lb', listener_id, lb_id)

    def remember_policy_listener(self, policy_id, listener_id):
        self.remember('policy_listener', policy_id, listener_id)

    def known(self, table_name, key):
        """lb_tier / listener_lb / pool_lb / policy_listener /
        listener_protocol of key, or None."""
        with self._lock:
            return getattr(self, f'_{table_name}').get(key)

    def pool_vips(self, pool_id):
        """The VIP addresses of the pool's load balancer, or None."""
        with self._lock:
            return self._lb_vips.get(self._pool_lb.get(pool_id))

    def forget_listener(self, listener_id):
        with self._lock:
            self._listener_port.pop(listener_id, None)
            for pool_id in [p for p, (lid, _t) in self._pool_listener.items()
                            if lid == listener_id]:
                del self._pool_listener[pool_id]

    def forget_pool(self, pool_id):
        with self._lock:
            self._pool_listener.pop(pool_id, None)

    def listener_port(self, listener_id):
        with self._lock:
            return self._listener_port.get(listener_id)

    def pool_listener(self, pool_id):
        """(listener_id, port) when both are known and fresh, else None."""
        with self._lock:
            entry = self._pool_listener.get(pool_id)
            if entry is None:
                return None
            listener_id, learnt = entry
            if time.monotonic() - learnt > self.ttl:
                del self._pool_listener[pool_id]
                return None
            port = self._listener_port.get(listener_id)
        return None if port is None else (listener_id, port)

    def clear(self):
        with self._lock:
            self._listener_port.clear()
            self._pool_listener.clear()
            self._lb_vips.clear()
            self._pool_lb.clear()
            self._lb_tier.clear()
            self._listener_lb.clear()
            self._policy_listener.clear()
            self._listener_protocol.clear()


# Shared by every driver instance of the process (octavia-api builds a new
# driver object per request).
PORTS = PortCache()


class OctaviaLookup:

    def __init__(self, get_socket=None, cache=None, conf=None):
        """conf: the driver's (its [dsr_provider] default_tier decides the
        tier of a load balancer whose flavor names none)."""
        self._get_socket = get_socket
        self.cache = PORTS if cache is None else cache
        self._conf = conf

    def _get(self, kind, object_id):
        """The object as a dict, {} when Octavia has none, or UNKNOWN."""
        path = self._get_socket or default_get_socket()
        if not os.path.exists(path):
            LOG.warning('octavia-driver-agent get socket %s is missing: '
                        'cannot look up %s %s', path, kind, object_id)
            return UNKNOWN
        try:
            return _GetClient(path)._get_resource(kind, object_id) or {}
        except (driver_exceptions.DriverError,
                driver_exceptions.DriverAgentTimeout, OSError,
                ValueError) as e:
            LOG.warning('looking up %s %s over %s failed: %s', kind,
                        object_id, path, e)
            return UNKNOWN

    def pool(self, pool_id):
        return self._get(lib_consts.POOLS, pool_id)

    def listener(self, listener_id):
        return self._get(lib_consts.LISTENERS, listener_id)

    def listener_port(self, listener_id):
        """The listener's protocol_port, None if it has none, or UNKNOWN."""
        port = self.cache.listener_port(listener_id)
        if port is not None:
            return port
        listener = self.listener(listener_id)
        if listener is UNKNOWN:
            return UNKNOWN
        port = listener.get('protocol_port')
        self.cache.remember_listener(listener_id, port)
        return port

    def pool_listener_port(self, pool_id, ignore_listener_id=None):
        """Port of the listener whose default pool pool_id is.

        None when the pool serves no listener (or only ignore_listener_id),
        UNKNOWN when it cannot be told.
        """
        known = self.cache.pool_listener(pool_id)
        if known is not None:
            listener_id, port = known
            return None if listener_id == ignore_listener_id else port
        pool = self.pool(pool_id)
        if pool is UNKNOWN:
            return UNKNOWN
        listener_id = pool.get('listener_id')
        if not listener_id:
            return None
        self.cache.remember_pool(pool_id, listener_id)
        if listener_id == ignore_listener_id:
            return None
        return self.listener_port(listener_id)

    def pool_vips(self, pool_id):
        """VIP addresses of the pool's load balancer, or UNKNOWN."""
        known = self.cache.pool_vips(pool_id)
        if known is not None:
            return known
        pool = self.pool(pool_id)
        if pool is UNKNOWN:
            return UNKNOWN
        # The same answer gives the pool's listener: learn its port now,
        # so that the member's port check that follows asks nothing more.
        if pool.get('listener_id'):
            self.cache.remember_pool(pool_id, pool['listener_id'])
            self.listener_port(pool['listener_id'])
        lb_id = pool.get('loadbalancer_id')
        lb = self._get(lib_consts.LOADBALANCERS, lb_id) if lb_id else {}
        if lb is UNKNOWN:
            return UNKNOWN
        addresses = vip_addresses(lb)
        if lb:
            self.cache.remember_tier(
                lb_id, flavors.tier_of(lb.get('flavor'), self._conf))
        self.cache.remember_pool_lb(pool_id, lb_id)
        self.cache.remember_vips(lb_id, addresses)
        return addresses

    # A load balancer's tier (flavor metadata "tier", dsr_provider/
    # flavors.py) decides what its objects may be.  When it cannot be told
    # the caller gets UNKNOWN.
    def lb_tier(self, lb_id):
        tier = self.cache.known('lb_tier', lb_id)
        if tier is not None or not lb_id:
            return tier or UNKNOWN
        lb = self._get(lib_consts.LOADBALANCERS, lb_id)
        if lb is UNKNOWN or not lb:
            return UNKNOWN
        tier = flavors.tier_of(lb.get('flavor'), self._conf)
        self.cache.remember_tier(lb_id, tier)
        return tier

    def _tier_via(self, table, kind, object_id, parent_key, parent_tier):
        """The tier of the parent (parent_key) of object_id, a `kind`
        object; table: the cache's map of that link."""
        parent = self.cache.known(table, object_id)
        if parent is None and object_id:
            obj = self._get(kind, object_id)
            if obj is UNKNOWN or not obj:
                return UNKNOWN
            parent = obj.get(parent_key)
            self.cache.remember(table, object_id, parent)
        return parent_tier(parent)

    def listener_tier(self, listener_id):
        return self._tier_via('listener_lb', lib_consts.LISTENERS,
                              listener_id, 'loadbalancer_id', self.lb_tier)

    def pool_tier(self, pool_id):
        return self._tier_via('pool_lb', lib_consts.POOLS, pool_id,
                              'loadbalancer_id', self.lb_tier)

    def l7policy_tier(self, policy_id):
        return self._tier_via('policy_listener', lib_consts.L7POLICIES,
                              policy_id, 'listener_id', self.listener_tier)

    def listener_protocol(self, listener_id):
        """The listener's protocol (it never changes), or UNKNOWN."""
        protocol = self.cache.known('listener_protocol', listener_id)
        if protocol is not None:
            return protocol
        listener = self.listener(listener_id)
        if listener is UNKNOWN or not listener.get('protocol'):
            return UNKNOWN
        self.cache.remember('listener_protocol', listener_id,
                            listener['protocol'])
        return listener['protocol']

    def pool_members(self, pool_id):
        """The pool's members (dicts), or UNKNOWN."""
        pool = self.pool(pool_id)
        if pool is UNKNOWN:
            return UNKNOWN
        return pool.get('members') or []
