"""octavia-driver-agent's status and statistics services, kept warm.

octavia-driver-agent forks a child for every request on its status and
stats sockets, and the child configures Octavia's ORM and starts its
database engine from scratch before it writes a row: a 4-object
provisioning update cost 958 ms p50 that way on the shared 2-core host
at load 8, 422 ms when forked from a warm parent, and 58 ms in a warm
process (docs/benchmarks.md, "API change -> ACTIVE").  Every change the
controller reports ACTIVE pays it once.

This relay serves the same protocol (octavia-lib's framing, the same
documents, the same answers) on its own two unix sockets with Octavia's
own DriverUpdater, in one long-lived process whose ORM and engine are set
up once.  Point the controller's [dsr_controller] octavia_status_socket
and octavia_stats_socket at [dsr_provider] status_relay_socket and
stats_relay_socket.  It runs:

- as a provider agent inside octavia-driver-agent (entry point
  ``octavia.driver_agent.provider_agents: dsr_status_relay``; enable it
  with ``[driver_agent] enabled_provider_agents = dsr_status_relay``), or
- on its own beside it, with octavia-api's configuration:
  ``python -m dsr_provider.status_relay --config-file octavia.conf``.

It uses Octavia's internal driver-agent code (not octavia-lib): install it
from the Octavia release the driver agent runs.  The sockets are created
0660: the controller's user needs the group of the relay's.
"""

import os
import signal
import socketserver
import sys
import threading

from octavia_lib.common import constants as lib_consts
from oslo_config import cfg
from oslo_log import log as logging

from dsr_provider import driver_agent_client
from dsr_provider import opts

LOG = logging.getLogger(__name__)

SOCKET_MODE = 0o660


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            doc = driver_agent_client.read_message(self.request)
        except Exception:  # noqa: BLE001 -- one bad client, not the relay
            LOG.exception('status relay: unreadable request')
            return
        try:
            answer = self.server.process(doc)
        except Exception as exc:  # noqa: BLE001 -- the caller gets it
            LOG.exception('status relay: request failed')
            answer = {lib_consts.STATUS_CODE:
                      lib_consts.DRVR_STATUS_CODE_FAILED,
                      lib_consts.FAULT_STRING: str(exc)}
        try:
            driver_agent_client.write_message(self.request, answer)
        except OSError:
            LOG.exception('status relay: the answer could not be sent')


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path, process):
        _remove(path)
        old = os.umask(0o777 & ~SOCKET_MODE)
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old)
        os.chmod(path, SOCKET_MODE)
        self.process = process


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _updater():
    from octavia.api.drivers.driver_agent import driver_updater
    return driver_updater.DriverUpdater()


def _after_api_transactions(doc):
    """Wait until no API transaction holds a load balancer of `doc`.

    Octavia's API locks the load balancer's row, calls the provider, and
    only then writes the changed child's PENDING_UPDATE before it commits.
    A status applied in between (a quick controller, a slow API on a busy
    host) is overwritten by that PENDING_UPDATE and the object stays
    PENDING for good.  Taking each load balancer's row lock, then letting
    it go, orders this update after the API's transaction.  (The driver
    agent's own children have the same race: octavia-driver-agent
    applies children first, without waiting.)

    One row at a time, by primary key, in id order: `id IN (...)` for
    only the id may be run as a scan of a covering secondary index, and
    FOR UPDATE then locks every index record it reads -- other load
    balancers' too, which the API may hold while it updates its own
    status: a deadlock, and octavia-api answers 500 (CI rehearsal 36)."""
    ids = sorted({lb['id'] for lb in doc.get(lib_consts.LOADBALANCERS) or ()
                  if lb.get('id')})
    if not ids:
        return
    from octavia.db import api as db_apis
    from octavia.db import models
    session = db_apis.get_session()
    try:
        with session.begin():
            for lb_id in ids:
                session.query(models.LoadBalancer.id).filter(
                    models.LoadBalancer.id == lb_id).with_for_update().all()
    finally:
        session.close()


def _apply(method, doc):
    """One request, as the driver agent's child runs it: Octavia's
    answer dict (a failure is an answer, not an exception).  The session
    is closed here: the child's went with the child."""
    updater = _updater()
    try:
        return getattr(updater, method)(doc)
    finally:
        updater.db_session.close()


def update_status(doc):
    """A status document, after the API transactions it could overtake."""
    _after_api_transactions(doc)
    return _apply('update_loadbalancer_status', doc)


def warm_up():
    """Configure Octavia's ORM and open its engine once, here."""
    from octavia.db import api as db_apis
    from sqlalchemy import orm
    from sqlalchemy import text
    _updater()      # imports the models and starts the engine facade
    orm.configure_mappers()
    with db_apis.get_engine().connect() as connection:
        connection.execute(text('SELECT 1'))


def serve(conf, stop_event):
    """Serve both sockets until stop_event is set."""
    opts.register_opts(conf)
    c = conf[opts.GROUP]
    warm_up()
    servers = [
        _Server(c.status_relay_socket, update_status),
        _Server(c.stats_relay_socket,
                lambda doc: _apply('update_listener_statistics', doc)),
    ]
    threads = [threading.Thread(target=s.serve_forever, daemon=True,
                                name='status-relay') for s in servers]
    for t in threads:
        t.start()
    LOG.info('status relay serving %s and %s', c.status_relay_socket,
             c.stats_relay_socket)
    print('READY', flush=True)
    try:
        stop_event.wait()
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
            _remove(s.server_address)
        LOG.info('status relay stopped')


def provider_agent(exit_event):
    """octavia-driver-agent's provider-agent entry point."""
    serve(cfg.CONF, exit_event)


def main(argv=None):
    from octavia.common import config as octavia_config
    octavia_config.init(argv if argv is not None else sys.argv[1:])
    octavia_config.setup_logging(cfg.CONF)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    serve(cfg.CONF, stop)
    return 0


if __name__ == '__main__':
    sys.exit(main())
