"""The leader's Neutron reconciliation, in a thread of its own.

Only the elected leader reconciles (the compare-and-set in
neutron_ports.py covers the moment two controllers both believe they
lead).  Each new term starts with a full reconciliation -- so does every
controller start -- then applies changes of the desired state as they
come, with a full one every neutron_resync_interval.  Its own thread: a
slow or unreachable Neutron never delays the reporting loop.
"""

import threading
import time

from oslo_log import log as logging

from dsr_provider.controller import neutron_ports

LOG = logging.getLogger(__name__)


def enabled(conf):
    c = conf.dsr_controller
    return bool(c.neutron_member_ports or (
        c.neutron_se_ports and c.neutron_se_port_mode != 'unmanaged'))


def parse_se_ports(entries):
    """['SE_GROUP:PORT_ID', ...] -> {port_id: se_group}."""
    ports = {}
    for entry in entries:
        group, sep, port_id = entry.rpartition(':')
        if not sep or not group or not port_id:
            raise ValueError(f'[dsr_controller] neutron_se_ports: '
                             f'{entry!r} is not SE_GROUP:PORT_ID')
        ports[port_id] = group
    return ports


def port_sync_from_conf(conf, database, network=None):
    # Imported here: openstacksdk is a second of a controller's start, paid
    # only with the Neutron integration on.
    from dsr_provider.controller import neutron_client
    from dsr_provider.controller import neutron_tunnels
    c = conf.dsr_controller
    network = network or neutron_client.network_from_conf(conf)
    se_ports = parse_se_ports(c.neutron_se_ports)
    tunnels = None
    if c.neutron_tunnel_security_group:
        sources = list(c.neutron_tunnel_sources)
        if not sources:
            sources = [ip['ip_address'] for port_id in sorted(se_ports)
                       for ip in network.get_port(port_id).fixed_ips or ()]
        tunnels = neutron_tunnels.TunnelGroups(
            network, sources, c.neutron_tunnel_any_from_ipv4_sources)
    return neutron_ports.PortSync(
        database, network, member_ports=c.neutron_member_ports,
        se_ports=se_ports, se_port_mode=c.neutron_se_port_mode,
        tunnels=tunnels, retry_interval=c.neutron_retry_interval,
        max_retry_interval=max(c.neutron_retry_interval,
                               c.neutron_resync_interval))


class SyncThread:
    """Runs make_sync() 's PortSync while is_leader() says so."""

    def __init__(self, make_sync, is_leader, resync_interval=120.0,
                 interval=1.0, on_change=None):
        """on_change(): a round updated or checked ports (a member's port
        refusal may have moved: the leader's round reports it now)."""
        self.make_sync = make_sync
        self.is_leader = is_leader
        self.on_change = on_change
        self.resync_interval = resync_interval
        self.interval = interval
        self.rounds = 0         # loop rounds run, leading or not
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._run,
                                        name='neutron-sync', daemon=True)
        self._thread.start()
        return self

    def _run(self):
        sync, next_full = None, 0.0
        while not self._stop.is_set():
            if not self.is_leader():
                sync = None         # a new term starts with a full round
            else:
                try:
                    if sync is None:
                        sync, next_full = self.make_sync(), 0.0
                    full = time.monotonic() >= next_full
                    if sync.run_once(full=full) and \
                            self.on_change is not None:
                        self.on_change()
                    if full:
                        next_full = time.monotonic() + self.resync_interval
                except Exception:  # noqa: BLE001 -- keep the thread alive
                    LOG.exception('Neutron reconciliation failed; retrying')
            self.rounds += 1
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def start(conf, database, is_leader, on_change=None):
    """The controller's hook: a started SyncThread, or None when the
    Neutron integration is off.  on_change: see SyncThread."""
    if not enabled(conf):
        return None
    parse_se_ports(conf.dsr_controller.neutron_se_ports)   # fail early
    return SyncThread(lambda: port_sync_from_conf(conf, database), is_leader,
                      conf.dsr_controller.neutron_resync_interval,
                      on_change=on_change).start()
