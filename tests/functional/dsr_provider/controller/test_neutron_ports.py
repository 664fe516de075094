"""Members' and SEs' Neutron ports against a REAL Neutron API.

neutron-server from PyPI (tools/lab/localstack/neutron_server.py: noauth,
ML2 without agents, its own MariaDB database), started once for the
module with a policy that forbids updating the allowed_address_pairs of
project "dsr-locked"'s ports -- Neutron's own 403, as a port of another
project or a stricter policy gives.  Load balancers go through the
controller's change path (ProviderEndpoint -> Store, on a MariaDB
database); neutron_ports.PortSync reconciles; the assertions read the
ports back from Neutron.

The Neutron interpreter: $DSR_NEUTRON_PYTHON, else the tempest stage's
virtualenv (tools/tempest/venv.py creates or refreshes it).
"""

import collections
import contextlib
import os
import signal
import threading
import time
import uuid

from openstack import exceptions as sdk_exceptions
from oslo_config import cfg
import pytest

from dsr_provider.controller import db as db_mod
from dsr_provider.controller import endpoints
from dsr_provider.controller import models
from dsr_provider.controller import neutron_client
from dsr_provider.controller import neutron_ports
from dsr_provider.controller import neutron_sync
from dsr_provider.controller import reporter as reporter_mod
from dsr_provider.controller import store as store_mod
from dsr_provider import opts
from tests.unit.dsr_provider.controller.test_store import FakeDriverLib
from tests.unit.dsr_provider import fakes
from tools.lab.localstack import neutron_server
from tools.lab.localstack import octavia as localstack

pytestmark = pytest.mark.timeout(600)

LOCKED = 'dsr-locked'
PROJECT = 'dsr-proj'
VIP4, VIP6 = '192.0.2.10', '2001:db8::10'
VIP4B = '192.0.2.20'
OPERATOR = '203.0.113.99'


class PolicedNeutron(neutron_server.NeutronServer):
    """The lab's Neutron with a policy file: no pair updates on the ports
    of project dsr-locked (oslo.policy generic check on the target)."""

    def config_text(self):
        (self.workdir / 'policy.yaml').write_text(
            '"update_port:allowed_address_pairs": '
            f'"not \'{LOCKED}\':%(project_id)s"\n')
        return super().config_text() + (
            '[oslo_policy]\n'
            f'policy_file = {self.workdir / "policy.yaml"}\n')


def _neutron_python():
    python = os.environ.get('DSR_NEUTRON_PYTHON')
    if python:
        return python
    from tools.tempest import venv
    return str(venv.ensure(log=lambda msg: None))


@pytest.fixture(scope='module')
def neutron(tmp_path_factory):
    server = PolicedNeutron(tmp_path_factory.mktemp('neutron'),
                            python=_neutron_python())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _conf(url):
    conf = cfg.ConfigOpts()
    opts.register_controller_opts(conf)
    conf([])
    conf.set_override('endpoint_override', url, group='neutron')
    return conf


@pytest.fixture
def net(neutron):
    """The controller's network proxy (its own client code, noauth) and a
    fresh network + v4/v6 subnets for the test."""
    network = neutron_client.network_from_conf(_conf(neutron.url))
    tag = uuid.uuid4().hex[:6]
    n = network.create_network(name=f'dsr-{tag}', project_id=PROJECT,
                               is_shared=True)
    v4 = network.create_subnet(network_id=n.id, ip_version=4,
                               cidr='198.18.10.0/24', project_id=PROJECT,
                               is_dhcp_enabled=False)
    v6 = network.create_subnet(network_id=n.id, ip_version=6,
                               cidr='2001:db8:10::/64', project_id=PROJECT,
                               is_dhcp_enabled=False)
    ns = collections.namedtuple('Net', 'api network v4 v6 port')

    def port(ip, project=PROJECT, pairs=(), **kw):
        return network.create_port(
            network_id=n.id, project_id=project,
            fixed_ips=[{'subnet_id': v4.id, 'ip_address': ip}],
            allowed_address_pairs=[{'ip_address': a} for a in pairs], **kw)
    yield ns(network, n, v4, v6, port)
    for p in network.ports(network_id=n.id):
        network.delete_port(p.id)
    network.delete_network(n.id)


@pytest.fixture
def database():
    name = f'dsr_nwtest_{uuid.uuid4().hex[:12]}'
    localstack._sql(f'CREATE DATABASE {name}')
    url = (f'mysql+pymysql://{localstack.DB_USER}@{localstack.DB_HOST}:'
           f'{localstack.DB_PORT}/{name}')
    db_mod.upgrade(url)
    database = db_mod.Database(url)
    try:
        yield database
    finally:
        database.engine.dispose()
        localstack._sql(f'DROP DATABASE IF EXISTS {name}')


@pytest.fixture
def change(database):
    """The controller's change path: ProviderEndpoint over the Store."""
    return endpoints.ProviderEndpoint(store_mod.Store(database, 'g1'))


def lb_doc(lb_id, vips, subnet_id, members, pool_id=None):
    pool_id = pool_id or f'{lb_id}-pool'
    doc = {'loadbalancer_id': lb_id, 'vip_address': vips[0],
           'vip_subnet_id': subnet_id,
           'additional_vips': [{'ip_address': v} for v in vips[1:]],
           'admin_state_up': True,
           'listeners': [{'listener_id': f'{lb_id}-l', 'loadbalancer_id':
                          lb_id, 'protocol': 'TCP', 'protocol_port': 80,
                          'default_pool_id': pool_id,
                          'admin_state_up': True}],
           'pools': [{'pool_id': pool_id, 'loadbalancer_id': lb_id,
                      'listener_id': f'{lb_id}-l',
                      'lb_algorithm': 'SOURCE_IP_PORT', 'protocol': 'TCP',
                      'admin_state_up': True,
                      'members': [dict(m, pool_id=pool_id,
                                       protocol_port=80, weight=1,
                                       admin_state_up=True)
                                  for m in members]}]}
    return doc


def pairs(net, port):
    got = [p['ip_address'] for p in net.api.get_port(port.id)
           .allowed_address_pairs]
    assert len(got) == len(set(got)), f'duplicate pairs: {got}'
    return set(got)


def owned(database):
    with database.session() as s:
        return {(r.port_id, r.kind, r.value)
                for r in s.query(models.NeutronOwned)}


def test_member_ports_get_and_lose_the_vip_pairs(net, database, change):
    p1 = net.port('198.18.10.11')
    p2 = net.port('198.18.10.12', pairs=[OPERATOR])
    sync = neutron_ports.PortSync(database, net.api)
    # lb1: two VIPs, members on p1 (own subnet_id) and p2 (no subnet_id:
    # the VIP subnet is looked up).
    change.loadbalancer_create(None, lb_doc('lb1', [VIP4, VIP6], net.v4.id, [
        {'member_id': 'm1', 'address': '198.18.10.11',
         'subnet_id': net.v4.id},
        {'member_id': 'm2', 'address': '198.18.10.12'}]))
    sync.run_once(full=True)
    assert pairs(net, p1) == {VIP4, VIP6}
    assert pairs(net, p2) == {OPERATOR, VIP4, VIP6}
    assert sync.run_once() == {}         # nothing changed: no Neutron call
    assert sync.run_once(full=True) == {p1.id: None, p2.id: None}
    assert pairs(net, p1) == {VIP4, VIP6}

    # lb2 holds p1's address too: the port serves both load balancers.
    change.loadbalancer_create(None, lb_doc('lb2', [VIP4B], net.v4.id, [
        {'member_id': 'm3', 'address': '198.18.10.11',
         'subnet_id': net.v4.id}]))
    sync.run_once()
    assert pairs(net, p1) == {VIP4, VIP6, VIP4B}

    # member delete: lb1's VIPs leave p1, lb2's stay.
    change.member_delete(None, {'member_id': 'm1'})
    sync.run_once()
    assert pairs(net, p1) == {VIP4B}
    # a new member on the port (Octavia never reuses an id: a create of
    # a deleted one is a stale redelivery, ignored), then pool delete.
    change.member_create(None, {'member_id': 'm4', 'pool_id': 'lb1-pool',
                                'address': '198.18.10.11',
                                'subnet_id': net.v4.id, 'protocol_port': 80})
    sync.run_once()
    assert pairs(net, p1) == {VIP4, VIP6, VIP4B}
    change.pool_delete(None, {'pool_id': 'lb2-pool'})
    sync.run_once()
    assert pairs(net, p1) == {VIP4, VIP6}
    # load balancer delete (cascade): the operator's pair stays.
    change.loadbalancer_delete(None, {'loadbalancer_id': 'lb1'},
                               cascade=True)
    sync.run_once()
    assert pairs(net, p1) == set()
    assert pairs(net, p2) == {OPERATOR}
    assert owned(database) == set()


def test_operator_pairs_are_never_taken_over(net, database, change):
    # The operator already allows VIP4 (and a CIDR holding VIP4B).
    p1 = net.port('198.18.10.21', pairs=[VIP4, '192.0.2.16/28'])
    sync = neutron_ports.PortSync(database, net.api)
    change.loadbalancer_create(None, lb_doc('lb1', [VIP4, VIP6], net.v4.id, [
        {'member_id': 'm1', 'address': '198.18.10.21',
         'subnet_id': net.v4.id}]))
    change.loadbalancer_create(None, lb_doc('lb2', [VIP4B], net.v4.id, [
        {'member_id': 'm2', 'address': '198.18.10.21',
         'subnet_id': net.v4.id}]))
    sync.run_once(full=True)
    assert pairs(net, p1) == {VIP4, '192.0.2.16/28', VIP6}
    assert owned(database) == {(p1.id, 'pair', VIP6)}
    # The operator removes our pair behind our back: the next full round
    # puts it back.
    net.api.update_port(p1.id, allowed_address_pairs=[
        {'ip_address': VIP4}, {'ip_address': '192.0.2.16/28'}])
    sync.run_once(full=True)
    assert pairs(net, p1) == {VIP4, '192.0.2.16/28', VIP6}
    change.loadbalancer_delete(None, {'loadbalancer_id': 'lb1'})
    change.loadbalancer_delete(None, {'loadbalancer_id': 'lb2'})
    sync.run_once()
    assert pairs(net, p1) == {VIP4, '192.0.2.16/28'}


def _serving(store, gen, statuses):
    store.record_agent('se1', 'g1', applied_generation=gen,
                       member_statuses=statuses, serviceable=True)


def test_a_port_neutron_refuses_makes_the_member_error(net, database,
                                                       change):
    ok = net.port('198.18.10.31')
    locked = net.port('198.18.10.32', project=LOCKED)
    open_port = net.port('198.18.10.33', project=LOCKED,
                         port_security_enabled=False, security_groups=[])
    sync = neutron_ports.PortSync(database, net.api)
    change.loadbalancer_create(None, lb_doc('lb1', [VIP4], net.v4.id, [
        {'member_id': 'm-ok', 'address': '198.18.10.31'},
        {'member_id': 'm-locked', 'address': '198.18.10.32'},
        {'member_id': 'm-open', 'address': '198.18.10.33'}]))
    results = sync.run_once(full=True)
    # The refused port does not stop the others.
    assert pairs(net, ok) == {VIP4}
    assert results[ok.id] is None and results[open_port.id] is None
    reason = results[locked.id]
    assert 'HTTP 403' in reason and locked.id in reason and VIP4 in reason
    assert 'update_port:allowed_address_pairs' in reason
    # Port security off: nothing filters it, nothing to add, no error.
    assert pairs(net, open_port) == set()
    with database.session() as s:
        assert neutron_ports.member_reasons(s) == {'m-locked': reason}
    assert not any(o[0] == locked.id for o in owned(database))

    # The reporter: the member whose replies are dropped is ERROR although
    # the SE's health check sees it ONLINE; its pool DEGRADED.
    store = change.store
    with database.session() as s:
        gen = s.get(models.SEGroup, 'g1').generation
    _serving(store, gen, {'m-ok': 'ONLINE', 'm-locked': 'ONLINE',
                          'm-open': 'ONLINE'})
    lib = FakeDriverLib()
    reporter = reporter_mod.Reporter(store, fakes.FakeNotifier(), lib,
                                     lambda group: {'se1'})
    reporter.run_once()
    sent = collections.defaultdict(dict)
    for doc in lib.statuses:
        for kind, items in doc.items():
            for item in items:
                if 'operating_status' in item:
                    sent[kind][item['id']] = item['operating_status']
    assert sent['members'] == {'m-ok': 'ONLINE', 'm-locked': 'ERROR',
                               'm-open': 'ONLINE'}
    assert sent['pools']['lb1-pool'] == 'DEGRADED'

    # The member leaves: its reason goes with it.
    change.member_delete(None, {'member_id': 'm-locked'})
    sync.run_once()
    with database.session() as s:
        assert neutron_ports.member_reasons(s) == {}


def test_compare_and_set_keeps_a_concurrent_operator_change(net, database,
                                                            change):
    """Between the controller's read and its update the operator adds a
    pair: Neutron answers 412 to the stale revision, the controller reads
    again and keeps the operator's pair."""
    p1 = net.port('198.18.10.41')
    api = net.api

    class Racing:
        def __init__(self):
            self.raced = 0

        def __getattr__(self, name):
            return getattr(api, name)

        def get_port(self, port_id):
            port = api.get_port(port_id)
            if not self.raced:
                self.raced += 1
                api.update_port(port_id, allowed_address_pairs=[
                    {'ip_address': OPERATOR}])
            return port

        def update_port(self, port, if_revision=None, **attrs):
            try:
                return api.update_port(port, if_revision=if_revision,
                                       **attrs)
            except sdk_exceptions.HttpException as exc:
                self.refused = exc.status_code
                raise
    racing = Racing()
    sync = neutron_ports.PortSync(database, racing)
    change.loadbalancer_create(None, lb_doc('lb1', [VIP4], net.v4.id, [
        {'member_id': 'm1', 'address': '198.18.10.41'}]))
    assert sync.run_once(full=True) == {p1.id: None}
    assert racing.refused == 412
    assert pairs(net, p1) == {OPERATOR, VIP4}


def test_two_controllers_at_once_neither_duplicate_nor_remove(
        net, database, change):
    ports = [net.port(f'198.18.10.{50 + i}', pairs=[OPERATOR])
             for i in range(3)]
    members = [{'member_id': f'm{i}', 'address': f'198.18.10.{50 + i}'}
               for i in range(3)]
    change.loadbalancer_create(None, lb_doc('lb1', [VIP4, VIP6], net.v4.id,
                                            members))
    change.loadbalancer_create(None, lb_doc('lb2', [VIP4B], net.v4.id, [
        {'member_id': 'lb2-m0', 'address': '198.18.10.50'}]))
    a = neutron_ports.PortSync(database, net.api)
    b = neutron_ports.PortSync(database, net.api)
    errors = []
    barrier = threading.Barrier(2)

    def run(sync):
        try:
            barrier.wait(timeout=30)
            for _ in range(3):
                sync.run_once(full=True)
        except Exception as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    def both():
        threads = [threading.Thread(target=run, args=(s,)) for s in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        assert not errors
    both()
    assert pairs(net, ports[0]) == {OPERATOR, VIP4, VIP6, VIP4B}
    for p in ports[1:]:
        assert pairs(net, p) == {OPERATOR, VIP4, VIP6}
    # One controller removes lb2 while the other re-checks everything.
    change.loadbalancer_delete(None, {'loadbalancer_id': 'lb2'})
    both()
    for p in ports:
        assert pairs(net, p) == {OPERATOR, VIP4, VIP6}
    assert owned(database) == {(p.id, 'pair', v) for p in ports
                               for v in (VIP4, VIP6)}


def test_a_member_row_recorded_after_our_snapshot_is_taken_over(database):
    """The race of the test above, made deterministic: this controller's
    transaction reads (InnoDB takes its REPEATABLE READ snapshot), then
    another controller records the same member and commits, then this one
    inserts and collides.  It must update that row, not read None from
    its stale snapshot."""
    sync = neutron_ports.PortSync(database, network=None)
    own_session = database.session

    @contextlib.contextmanager
    def raced_session():
        with own_session() as s:
            assert s.get(models.NeutronMemberPort, 'm0') is None
            with own_session() as other:
                other.add(models.NeutronMemberPort(
                    member_id='m0', address='198.18.10.50',
                    port_id='port-by-the-other', checked_at=time.time()))
            yield s
    database.session = raced_session
    try:
        sync._record_port('m0', neutron_ports.MemberWant(
            'subnet-1', '198.18.10.50', frozenset()), 'port-found')
    finally:
        database.session = own_session
    with database.session() as s:
        row = s.get(models.NeutronMemberPort, 'm0')
        assert (row.port_id, row.subnet_id) == ('port-found', 'subnet-1')


def test_se_ports_and_the_tunnel_security_group(neutron, net, database,
                                                change):
    # A dual-stack SE port: its fixed IPs are the tunnel sources.
    se_pairs = net.api.create_port(
        network_id=net.network.id, project_id=PROJECT, fixed_ips=[
            {'subnet_id': net.v4.id, 'ip_address': '198.18.10.2'},
            {'subnet_id': net.v6.id, 'ip_address': '2001:db8:10::2'}])
    member = net.port('198.18.10.61')
    default_groups = set(net.api.get_port(member.id).security_group_ids)
    # Built from the options as the controller builds it.
    conf = _conf(neutron.url)
    for name, value in (('neutron_member_ports', True),
                        ('neutron_se_ports', [f'g1:{se_pairs.id}']),
                        ('neutron_tunnel_security_group', True)):
        conf.set_override(name, value, group='dsr_controller')
    assert neutron_sync.enabled(conf)
    sync = neutron_sync.port_sync_from_conf(conf, database)
    change.loadbalancer_create(None, lb_doc('lb1', [VIP4, VIP6], net.v4.id, [
        {'member_id': 'm1', 'address': '198.18.10.61'}]))
    assert set(sync.run_once(full=True).values()) == {None}
    # SE port: the group's VIPs; member port: VIPs and the tunnel group.
    assert pairs(net, se_pairs) == {VIP4, VIP6}
    port = net.api.get_port(member.id)
    (group,) = set(port.security_group_ids) - default_groups
    assert net.api.get_security_group(group).name == 'octavia-dsr-tunnels'
    rules = {(r.ether_type, r.protocol, r.remote_ip_prefix) for r in
             net.api.security_group_rules(security_group_id=group,
                                          direction='ingress')}
    # Neutron took every rule, including 41 with ethertype IPv6.
    assert rules == {
        ('IPv4', '4', '198.18.10.2/32'), ('IPv4', '47', '198.18.10.2/32'),
        ('IPv4', None, '198.18.10.2/32'),
        ('IPv6', '4', '2001:db8:10::2/128'),
        ('IPv6', '41', '2001:db8:10::2/128'),
        ('IPv6', '47', '2001:db8:10::2/128')}
    # Neutron's own refusal the rule set avoids.
    with pytest.raises(sdk_exceptions.BadRequestException,
                       match='protocol 41'):
        net.api.create_security_group_rule(
            security_group_id=group, direction='ingress', ether_type='IPv4',
            protocol='41', remote_ip_prefix='198.51.100.9/32',
            project_id=PROJECT)
    # The last membership goes: pairs and the group leave the member port,
    # the SE port keeps nothing of lb1.
    change.loadbalancer_delete(None, {'loadbalancer_id': 'lb1'})
    sync.run_once()
    assert pairs(net, member) == set()
    assert set(net.api.get_port(member.id).security_group_ids) == \
        default_groups
    assert pairs(net, se_pairs) == set()


def test_the_leader_reconciles_on_start_and_only_while_leading(
        net, database, change):
    p1 = net.port('198.18.10.71')
    change.loadbalancer_create(None, lb_doc('lb1', [VIP4], net.v4.id, [
        {'member_id': 'm1', 'address': '198.18.10.71'}]))
    leading = threading.Event()
    made = []

    def make_sync():
        made.append(neutron_ports.PortSync(database, net.api))
        return made[-1]
    thread = neutron_sync.SyncThread(make_sync, leading.is_set,
                                     resync_interval=600,
                                     interval=0.05).start()
    try:
        deadline = time.monotonic() + 30
        while thread.rounds < 10:
            assert time.monotonic() < deadline, 'sync thread not running'
            time.sleep(0.05)
        # A follower never reconciles.
        assert made == [] and pairs(net, p1) == set()
        leading.set()
        deadline = time.monotonic() + 60
        while pairs(net, p1) != {VIP4}:
            assert time.monotonic() < deadline, 'leader did not reconcile'
            time.sleep(0.1)
        change.member_delete(None, {'member_id': 'm1'})
        deadline = time.monotonic() + 60
        while pairs(net, p1) != set():
            assert time.monotonic() < deadline, 'change not applied'
            time.sleep(0.1)
    finally:
        thread.stop()


def test_se_port_mode_port_security_off(net, database, change):
    se_port = net.port('198.18.10.3', pairs=[OPERATOR])
    sync = neutron_ports.PortSync(database, net.api,
                                  se_ports={se_port.id: 'g1'},
                                  member_ports=False,
                                  se_port_mode='port_security_off')
    change.loadbalancer_create(None, lb_doc('lb1', [VIP4], net.v4.id, []))
    assert sync.run_once(full=True) == {se_port.id: None}
    # Pairs and groups cleared, as Neutron requires to turn it off.
    port = net.api.get_port(se_port.id)
    assert port.is_port_security_enabled is False
    assert port.allowed_address_pairs == [] and port.security_group_ids == []
    assert sync.run_once(full=True) == {se_port.id: None}


def test_a_running_dsr_controller_reconciles_from_its_options(
        neutron, net, tmp_path):
    """The real daemon (cotyledon, tooz election, its option parsing and
    Neutron client): started with neutron_member_ports on, it becomes the
    leader and brings a member's port to the desired state it finds in its
    database, then follows a change."""
    from tests.functional.dsr_provider.controller import (
        test_controller_runtime as runtime)
    from tools.lab import netns

    class WithNeutron(runtime.FreshDeployment):
        def conf(self, name, debug=False):
            path = super().conf(name, debug)
            with open(path, 'a') as f:
                f.write('neutron_member_ports = true\n'
                        'neutron_resync_interval = 600\n'
                        f'[neutron]\nendpoint_override = {neutron.url}\n')
            return path

    dep = WithNeutron(str(tmp_path))
    try:
        dep.prepare()
        db_mod.upgrade(dep.db_url)
        database = db_mod.Database(dep.db_url)
        change = endpoints.ProviderEndpoint(store_mod.Store(database, 'g1'))
        p1 = net.port('198.18.10.81', pairs=[OPERATOR])
        # Stored before the controller starts: its start-up round finds it.
        change.loadbalancer_create(None, lb_doc('lb1', [VIP4, VIP6],
                                                net.v4.id, [
            {'member_id': 'm1', 'address': '198.18.10.81'}]))
        proc = dep.launch('ctl1')
        proc.wait_for_line(r'^READY', 180)
        netns.wait_for(lambda: pairs(net, p1) == {OPERATOR, VIP4, VIP6},
                       120, 'the start-up reconciliation', interval=0.5)
        change.member_delete(None, {'member_id': 'm1'})
        netns.wait_for(lambda: pairs(net, p1) == {OPERATOR}, 60,
                       'the member delete reaching the port', interval=0.5)
        os.kill(proc.pid, signal.SIGTERM)
        rc, out = proc.wait_output(120)
        assert rc == 0, out[-2000:]
        assert f'Neutron port {p1.id}: pairs +' in dep.log('ctl1')
        database.engine.dispose()
    finally:
        dep.close()
