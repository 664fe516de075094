"""The leader is woken by the controller that stored its news (wake.py):
two real dsr-controller processes on the real RabbitMQ (a private vhost),
Redis (a private tooz namespace) and MariaDB (a private database), with a
slow round of 60 s.  An SE's report that lands on the standby is reported
to Octavia by the leader within seconds -- only a wake cast across the
broker can make it so -- and a wake signed by an SE's key (a client on the
broker with a valid SE identity) is refused, logged and wakes nothing.

Octavia's side is a recorder of the controller's status socket (octavia-
lib's framing): what is proven here is the controllers' path; e2e tests
drive the same controllers through a real octavia-api."""

import os
import socket
import threading
import time

from octavia_lib.common import constants as lib_constants
from oslo_config import cfg
import oslo_messaging as messaging
import pytest

from dsr_provider.controller import db as db_mod
from dsr_provider.controller import store as store_mod
from dsr_provider.controller import wake
from dsr_provider import driver_agent_client
from dsr_wire import agent_rpc as rpc
from dsr_wire import auth
from dsr_wire import membership
from tests.functional.dsr_provider.controller.test_replay import Deployment
from tests.unit.dsr_provider.controller.test_store import graph
from tools.lab import agent_lab
from tools.lab import netns

SLOW_ROUND = 60.0


class StatusRecorder:
    """octavia-driver-agent's status, stats and get sockets as the
    controller sees them: every document is recorded with its arrival
    time and answered as applied (octavia-lib's status code 200)."""

    def __init__(self, root):
        self.paths = {kind: os.path.join(root, f'{kind}.sock')
                      for kind in ('status', 'stats', 'get')}
        self.received = []          # (monotonic time, socket kind, doc)
        self._socks = []
        for kind, path in self.paths.items():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            sock.listen(8)
            self._socks.append(sock)
            threading.Thread(target=self._serve, args=(kind, sock),
                             daemon=True).start()

    def _serve(self, kind, sock):
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                try:
                    doc = driver_agent_client.read_message(conn)
                except Exception:  # noqa: BLE001 -- a closed peer
                    continue
                self.received.append((time.monotonic(), kind, doc))
                driver_agent_client.write_message(
                    conn, {lib_constants.STATUS_CODE:
                           lib_constants.DRVR_STATUS_CODE_OK})

    def options(self):
        return '\n'.join(f'octavia_{kind}_socket = {path}'
                         for kind, path in self.paths.items())

    def provisioning(self, lb_id):
        """Arrival times of the status documents setting lb_id ACTIVE."""
        return [t for t, kind, doc in self.received if kind == 'status'
                for lb in doc.get('loadbalancers') or ()
                if lb.get('id') == lb_id and
                lb.get('provisioning_status') == 'ACTIVE']

    def close(self):
        for sock in self._socks:
            sock.close()


@pytest.fixture
def deployment(tmp_path):
    dep = Deployment(str(tmp_path))
    recorder = StatusRecorder(str(tmp_path))
    se = None
    try:
        dep.start()
        options = f'{recorder.options()}\nloop_interval = {SLOW_ROUND}\n'
        dep.start_controller('ctl1', options)
        netns.wait_for(lambda: 'is the leader' in dep.log('ctl1'), 30,
                       'ctl1 leading')
        dep.start_controller('ctl2', options)
        # The SE is live in its group: a change waits for its report.
        se = membership.coordinator(
            f'{agent_lab.REDIS}&namespace=dsrreplay-{dep.tag}', dep.se_id)
        se.start(start_heart=True)
        membership.join(se, membership.group_id(dep.group))
        yield dep, recorder
    finally:
        if se is not None:
            se.stop()
        dep.close()
        recorder.close()


@pytest.mark.timeout(300)
def test_a_report_to_the_standby_wakes_the_leader_a_forged_wake_does_not(
        deployment):
    dep, recorder = deployment
    transport = messaging.get_rpc_transport(
        cfg.CONF, url=f'{agent_lab.RABBIT}{dep.vhost}')
    se_signer = auth.Signer(dep.se_key)
    try:
        def client(name, namespace=rpc.CONTROLLER_NAMESPACE):
            return messaging.get_rpc_client(transport, messaging.Target(
                exchange=rpc.EXCHANGE, topic=rpc.CONTROLLER_TOPIC,
                server=dep.controller_id(name), namespace=namespace,
                version='1.0'), timeout=20)

        # A change stored behind the controllers' backs: no controller
        # stored it, so none wakes the leader for it.
        store = store_mod.Store(db_mod.Database(dep.db_url), dep.group)
        store.create_loadbalancer(graph())
        generation = store.snapshot(dep.group)['generation']
        # It waits for the SE's report, then for a wake.

        # A wake signed by the SE's key, straight to the leader.
        args = {'origin': dep.controller_id('ctl2'), 'reason': 'forged'}
        client('ctl1', wake.NAMESPACE).cast(
            se_signer.context('wake', args), 'wake', **args)
        netns.wait_for(lambda: 'auth: refused wake' in dep.log('ctl1'), 20,
                       'the forged wake refused')
        assert 'unknown key' in dep.log('ctl1')

        # The SE applied the generation; its report lands on the standby.
        state = {'applied_generation': generation, 'error': None}
        report = {'se_id': dep.se_id, 'se_group': dep.group,
                  'state': state}
        sent = time.monotonic()
        client('ctl2').cast(se_signer.context('report_state', report),
                            'report_state', **report)
        netns.wait_for(lambda: recorder.provisioning('lb1'), 20,
                       'lb1 ACTIVE at Octavia')
        took = recorder.provisioning('lb1')[0] - sent
        assert took < SLOW_ROUND / 4, (
            f'ACTIVE {took:.1f} s after the report: the leader waited for '
            f'its slow round, no wake')
        assert 'is the leader' not in dep.log('ctl2')
        # The controller took the answer as applied (nothing to retry).
        netns.wait_for(lambda: 'status of 1 load balancer(s)' in
                       dep.log('ctl1'), 10, 'the status logged as sent')
        assert 'status update of' not in dep.log('ctl1'), dep.log('ctl1')
        print(f'WAKE report to the standby -> ACTIVE at Octavia in '
              f'{took * 1000:.0f} ms')
    finally:
        transport.cleanup()
