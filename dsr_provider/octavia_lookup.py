"""Reads Octavia objects from octavia-driver-agent's "get" socket.

Octavia hands the driver a member without its pool's listener, but a DSR
member must listen on that listener's port. The driver-agent serves the
committed Octavia DB over a local unix socket (octavia-lib DriverLibrary
protocol); this module asks it, once, without DriverLibrary's minutes of
retries when the socket is missing: a lookup that cannot be made returns
UNKNOWN and the caller leaves the check to the controller.
"""

import logging
import os

from octavia_lib.api.drivers import driver_lib
from octavia_lib.api.drivers import exceptions as driver_exceptions
from octavia_lib.common import constants as lib_consts
from oslo_config import cfg

from dsr_provider import opts

LOG = logging.getLogger(__name__)

UNKNOWN = object()      # the lookup could not be made


class _GetClient(driver_lib.DriverLibrary):
    """DriverLibrary's get requests, without its socket wait at init."""

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


class OctaviaLookup:

    def __init__(self, get_socket=None):
        self._get_socket = get_socket

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

    def pool_listener_port(self, pool_id, ignore_listener_id=None):
        """Port of the listener whose default pool pool_id is.

        None when the pool serves no listener (or only ignore_listener_id),
        UNKNOWN when it cannot be told.
        """
        pool = self.pool(pool_id)
        if pool is UNKNOWN:
            return UNKNOWN
        listener_id = pool.get('listener_id')
        if not listener_id or listener_id == ignore_listener_id:
            return None
        listener = self.listener(listener_id)
        if listener is UNKNOWN:
            return UNKNOWN
        return listener.get('protocol_port')

    def pool_members(self, pool_id):
        """The pool's members (dicts), or UNKNOWN."""
        pool = self.pool(pool_id)
        if pool is UNKNOWN:
            return UNKNOWN
        return pool.get('members') or []
