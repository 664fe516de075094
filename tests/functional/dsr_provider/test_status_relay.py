"""dsr_provider.status_relay against a real Octavia 19 (API + driver agent
on a private MariaDB database, the noop_driver provider acting as the
provider): statuses and statistics sent through the relay land in Octavia
as through octavia-driver-agent's own sockets, refusals name the object,
the sockets are 0660, SIGTERM removes them; and the relay answers an
update faster than the driver agent's forked child does."""

import contextlib
import os
import stat
import statistics
import sys
import threading
import time

from octavia_lib.api.drivers import exceptions as driver_exceptions
import pytest

from dsr_provider import driver_agent_client
from tools.lab.localstack.octavia import OctaviaStack
from tools.lab import netns

SUBNET = '11111111-2222-3333-4444-555555555555'

pytestmark = pytest.mark.filterwarnings(
    "ignore::PendingDeprecationWarning:openstack")


@pytest.fixture
def lab(tmp_path):
    work = tmp_path / 'os'
    run = work / 'run'
    sockets = {'status': str(run / 'dsr-status.sock'),
               'stats': str(run / 'dsr-stats.sock')}
    stack = OctaviaStack(
        work, provider_drivers={'noop_driver': 'noop'},
        default_provider='noop_driver', transport_url=None,
        extra_config={'dsr_provider': {
            'status_relay_socket': sockets['status'],
            'stats_relay_socket': sockets['stats']}})
    stack.start()
    relay = None
    try:
        stack.add_subnet(SUBNET, cidr='192.0.2.0/24')
        relay = netns.Proc([sys.executable, '-m', 'dsr_provider.status_relay',
                            '--config-file', str(stack.conf_path)])
        relay.wait_for_line(r'^READY', 60)
        yield stack, relay, sockets
    finally:
        if relay is not None:
            netns.kill_proc(relay)
        stack.stop()


def _graph(stack):
    """A load balancer, listener, pool and member, each still PENDING."""
    conn = stack.sdk()
    lb = conn.load_balancer.create_load_balancer(
        vip_subnet_id=SUBNET, provider='noop_driver')
    stack.report_loadbalancer_status(lb.id, 'ACTIVE', 'ONLINE')
    lst = conn.load_balancer.create_listener(
        loadbalancer_id=lb.id, protocol='TCP', protocol_port=80)
    return conn, lb, lst


def _wait(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_statuses_and_statistics_through_the_relay(lab):
    stack, relay, sockets = lab
    for path in sockets.values():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    conn, lb, lst = _graph(stack)
    relay_lib = _relay_lib(stack, sockets)
    # The listener create's row is committed once the API call returned.
    relay_lib.update_loadbalancer_status({
        'listeners': [{'id': lst.id, 'provisioning_status': 'ACTIVE',
                       'operating_status': 'ONLINE'}],
        'loadbalancers': [{'id': lb.id, 'provisioning_status': 'ACTIVE'}]})
    got = conn.load_balancer.get_listener(lst.id)
    assert (got.provisioning_status, got.operating_status) == (
        'ACTIVE', 'ONLINE')
    assert conn.load_balancer.get_load_balancer(
        lb.id).provisioning_status == 'ACTIVE'

    relay_lib.update_listener_statistics({'listeners': [{
        'id': lst.id, 'active_connections': 3, 'bytes_in': 1000,
        'bytes_out': 0, 'request_errors': 1, 'total_connections': 7}]})
    stats = conn.load_balancer.get_listener_statistics(lst.id)
    assert (stats.total_connections, stats.bytes_in,
            stats.active_connections) == (7, 1000, 3)

    # Octavia's refusal comes back naming the object, as from the agent.
    with pytest.raises(driver_exceptions.UpdateStatusError) as err:
        relay_lib.update_loadbalancer_status({'listeners': [{
            'id': lst.id, 'provisioning_status': 'NOT_A_STATUS'}]})
    assert (err.value.status_object, err.value.status_object_id) == (
        'listeners', lst.id)

    # Warm versus a forked child, same document, same host, in turn.
    agent_lib = stack.driver_library()
    doc = {'listeners': [{'id': lst.id, 'provisioning_status': 'ACTIVE'}],
           'loadbalancers': [{'id': lb.id, 'provisioning_status': 'ACTIVE'}]}
    took = {'relay': [], 'agent': []}
    for _ in range(5):
        for name, lib in (('relay', relay_lib), ('agent', agent_lib)):
            started = time.monotonic()
            lib.update_loadbalancer_status(dict(doc))
            took[name].append(time.monotonic() - started)
    assert statistics.median(took['relay']) < statistics.median(
        took['agent']), took

    relay.terminate()
    relay.wait(10)
    assert not any(os.path.exists(p) for p in sockets.values())


def _octavia_db(stack):
    import pymysql   # installed with octavia (oslo.db's MySQL driver)
    return pymysql.connect(host='127.0.0.1', port=3306, user='root',
                           database=stack.db_name, connect_timeout=10)


def _lock_waits(stack):
    """Transactions waiting for a lock in this stack's database (the
    server is shared with other tests' databases)."""
    with _octavia_db(stack) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.innodb_trx t "
                    "JOIN information_schema.processlist p "
                    "ON p.id = t.trx_mysql_thread_id "
                    "WHERE t.trx_state = 'LOCK WAIT' AND p.db = %s",
                    (stack.db_name,))
        return cur.fetchone()[0]


def _relay_lib(stack, sockets):
    """octavia-lib's client of the relay's sockets."""
    return driver_agent_client.DriverLibrary(
        status_socket=sockets['status'], stats_socket=sockets['stats'],
        get_socket=stack.driver_agent_sockets['get'])


@contextlib.contextmanager
def _api_test_and_set(stack, lb_id):
    """What octavia-api's test-and-set of a load balancer leaves open
    while it calls the provider: its row locked and PENDING_UPDATE, not
    committed.  Yields (connection, cursor); commit to end it."""
    api = _octavia_db(stack)
    try:
        with api.cursor() as cur:
            cur.execute('BEGIN')
            cur.execute('SELECT id FROM load_balancer WHERE id = %s '
                        'FOR UPDATE', (lb_id,))
            cur.execute("UPDATE load_balancer SET provisioning_status = "
                        "'PENDING_UPDATE' WHERE id = %s", (lb_id,))
            yield api, cur
    finally:
        api.close()


def _send(relay_lib, doc):
    """The status sent from a thread: (thread, [answer once answered])."""
    answered = []
    sender = threading.Thread(target=lambda: answered.append(
        relay_lib.update_loadbalancer_status(doc)))
    sender.start()
    return sender, answered


def test_a_status_waits_for_the_api_transaction_that_called_the_driver(
        lab):
    """Octavia's API holds its load balancer's row lock while it calls the
    provider and writes the child's PENDING_UPDATE after the call: a
    status that arrives in between must land after that write, or the
    object stays PENDING_UPDATE (tempest's pool update, CI rehearsal 12)."""
    stack, relay, sockets = lab
    conn, lb, lst = _graph(stack)
    relay_lib = _relay_lib(stack, sockets)
    active = {
        'listeners': [{'id': lst.id, 'provisioning_status': 'ACTIVE'}],
        'loadbalancers': [{'id': lb.id, 'provisioning_status': 'ACTIVE'}]}
    relay_lib.update_loadbalancer_status(dict(active))

    # What octavia-api's listener update does, with the driver's status
    # arriving while it is between the provider call and its commit.
    with _api_test_and_set(stack, lb.id) as (api, cur):
        sender, answered = _send(relay_lib, dict(active))
        netns.wait_for(lambda: _lock_waits(stack), 10,
                       'the relay waiting for the API transaction')
        assert not answered
        cur.execute("UPDATE listener SET provisioning_status = "
                    "'PENDING_UPDATE' WHERE id = %s", (lst.id,))
        api.commit()
    sender.join(30)
    assert not sender.is_alive()
    assert conn.load_balancer.get_listener(
        lst.id).provisioning_status == 'ACTIVE'
    assert conn.load_balancer.get_load_balancer(
        lb.id).provisioning_status == 'ACTIVE'


def test_a_status_locks_only_its_own_load_balancers(lab):
    """The relay waits for the API transactions of the load balancers in
    its document and no others.  CI rehearsal 36: its FOR UPDATE of two
    ids (`id IN (...)`, a covering index) was run as a scan of the
    provisioning-status index, which locked a third load balancer's index
    record; the API, holding that load balancer's row for a health-monitor
    delete, then waited for its own UPDATE -- a deadlock, and octavia-api
    answered 500."""
    stack, relay, sockets = lab
    conn, locked, _ = _graph(stack)
    others = []
    for _ in range(2):
        lb = conn.load_balancer.create_load_balancer(
            vip_subnet_id=SUBNET, provider='noop_driver')
        stack.report_loadbalancer_status(lb.id, 'ACTIVE', 'ONLINE')
        others.append(lb)
    relay_lib = _relay_lib(stack, sockets)
    with _api_test_and_set(stack, locked.id) as (api, _):
        sender, answered = _send(relay_lib, {'loadbalancers': [
            {'id': lb.id, 'operating_status': 'OFFLINE'} for lb in others]})
        sender.join(15)
        waited = _lock_waits(stack)
        api.commit()
    sender.join(30)
    assert answered and waited == 0, (answered, waited)
    for lb in others:
        assert conn.load_balancer.get_load_balancer(
            lb.id).operating_status == 'OFFLINE'


def test_the_relay_as_octavia_driver_agents_provider_agent(tmp_path):
    """[driver_agent] enabled_provider_agents = dsr_status_relay: the
    driver agent starts it (entry point from setup.cfg, here from a
    dist-info of its own on PYTHONPATH), and stops it with itself."""
    dist = tmp_path / 'ep' / 'dsr_relay_entry-0.dist-info'
    dist.mkdir(parents=True)
    (dist / 'METADATA').write_text(
        'Metadata-Version: 2.1\nName: dsr-relay-entry\nVersion: 0\n')
    (dist / 'entry_points.txt').write_text(
        '[octavia.driver_agent.provider_agents]\n'
        'dsr_status_relay = dsr_provider.status_relay:provider_agent\n')
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))))
    run = tmp_path / 'os' / 'run'
    sockets = {'status': str(run / 'dsr-status.sock'),
               'stats': str(run / 'dsr-stats.sock')}
    stack = OctaviaStack(
        tmp_path / 'os', provider_drivers={'noop_driver': 'noop'},
        default_provider='noop_driver', transport_url=None,
        env={'PYTHONPATH': f'{tmp_path / "ep"}{os.pathsep}{root}'},
        extra_config={
            'driver_agent': {'enabled_provider_agents': 'dsr_status_relay'},
            'dsr_provider': {'status_relay_socket': sockets['status'],
                             'stats_relay_socket': sockets['stats']}})
    stack.start()
    try:
        stack.add_subnet(SUBNET, cidr='192.0.2.0/24')
        _wait(lambda: all(os.path.exists(p) for p in sockets.values()),
              'the provider agent serves its sockets', timeout=30)
        conn, lb, lst = _graph(stack)
        lib = _relay_lib(stack, sockets)
        lib.update_loadbalancer_status({
            'listeners': [{'id': lst.id, 'provisioning_status': 'ACTIVE'}],
            'loadbalancers': [{'id': lb.id,
                               'provisioning_status': 'ACTIVE'}]})
        assert conn.load_balancer.get_listener(
            lst.id).provisioning_status == 'ACTIVE'
    finally:
        stack.stop()
    _wait(lambda: not any(os.path.exists(p) for p in sockets.values()),
          'the sockets go with the driver agent', timeout=15)
