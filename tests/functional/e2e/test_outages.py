"""The shared services fail and come back (issue 9): RabbitMQ, Redis and
MariaDB, each a private instance on its own port started by this module,
are killed (-9) and restarted while changes are made through the Octavia
API and traffic flows.

What uses the private instances: RabbitMQ carries the driver -> controller
changes and the controller <-> agent RPC; Redis is the tooz backend of the
agents (SE group membership) and the controller (leader election); MariaDB
holds the controller's database.  octavia-api's own database and RPC stay
on the machine's services: they are Octavia's, not the product's.

Each test, on one lab (2 SEs, 2 members, BIRD):
  * three load balancers; traffic on lb1 from the client namespace: a new
    TCP connection every 50 ms and one TCP connection kept open throughout
    (an upload trickling 1 KiB every 50 ms, checked by its sha256);
  * kill the service; one change per load balancer through the API while
    it is down (Octavia locks a load balancer until its change is
    reported): lb1 member create, lb2 member delete, lb3 listener create;
  * start the service again on the same port (and data folder);
  * every change is in every SE's dataplane, nothing is left PENDING_* or
    ERROR, within CONVERGE_BOUND seconds of the service answering again;
  * no new connection failed and the open one delivered every byte.
"""

import concurrent.futures
import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request

import pytest

from tests.functional.e2e import helpers as h
from tools.lab.localstack import private_services as ps
from tools.lab import netns
from tools.lab import product_lab as pl
from tools.lab import traffic_loop

VIP1, VIP2, VIP3 = netns.VIP4, '192.0.2.20', '192.0.2.30'
TRAFFIC = traffic_loop.__file__
# How long each service stays down while the changes are made.
OUTAGE = 5.0
# From the service answering again to every change ACTIVE and programmed
# (measured: see docs/benchmarks.md, "Shared-service outages").
CONVERGE_BOUND = {'rabbitmq': 45.0, 'redis': 45.0, 'mariadb': 45.0}


@pytest.fixture(scope='module')
def lab():
    with contextlib.ExitStack() as stack:
        services = {'rabbitmq': ps.RabbitMQ(), 'redis': ps.Redis(),
                    'mariadb': ps.MariaDB()}
        for svc in services.values():
            stack.callback(svc.close)
        # RabbitMQ takes 5-11 s to start: meanwhile build the topology.
        for svc in services.values():
            svc.launch()
        topo = netns.Topology(n_se=2, n_members=2)
        stack.callback(topo.close)
        topo.__enter__()
        for svc in services.values():
            svc.wait_ready()
        lab = pl.ProductLab(
            topo, rabbit_url=services['rabbitmq'].url,
            redis_url=services['redis'].url(membership_timeout=1,
                                            lock_timeout=1),
            controller_db_port=services['mariadb'].port)
        stack.callback(lab.close)
        lab.start()
        lab.services = services
        yield lab


def _call(lab, method, path, body=None, timeout=120):
    """One Octavia API request (no CLI: its start-up takes 2-10 s on a
    loaded machine, longer than the outage); (HTTP status, JSON or None)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f'{lab.stack.api_url}/v2/lbaas/{path}', data=data, method=method,
        headers={'Content-Type': 'application/json',
                 'Accept': 'application/json'})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors='replace')


def _member(name, address):
    return {'name': name, 'address': address, 'protocol_port': 80,
            'subnet_id': pl.MEMBER_SUBNET}


def _create(lab, lb, vip, members):
    """A load balancer in one request (Octavia's graph create): a TCP
    listener :80 with a SOURCE_IP_PORT pool of `members` ({name: address});
    members None: no listener."""
    body = {'name': lb, 'provider': 'dsr', 'vip_subnet_id': pl.VIP_SUBNET,
            'vip_address': vip}
    if members is not None:
        n = lb[-1]
        body['listeners'] = [{
            'name': f'l{n}', 'protocol': 'TCP', 'protocol_port': 80,
            'default_pool': {
                'name': f'p{n}', 'protocol': 'TCP',
                'lb_algorithm': 'SOURCE_IP_PORT',
                'members': [_member(name, address)
                            for name, address in members.items()]}}]
    status, out = _call(lab, 'POST', 'loadbalancers',
                        {'loadbalancer': body})
    assert status == 201, (status, out)


def _dataplane(lab, se):
    """{listener: sorted member addresses} programmed on an SE."""
    return {lst['listener']: sorted(m['address'] for m in lst['members'])
            for lst in lab.agents.show(se)['listeners']}


def _start_traffic(lab):
    proc = lab.topo.spawn('client', [*netns.SCRIPT_PYTHON, TRAFFIC, VIP1,
                                     '80'], ready=r'^STARTED',
                          ready_timeout=15)
    return proc


def _stop_traffic(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    rc, out = proc.wait_output(60)
    netns.kill_proc(proc)
    assert rc == 0, out[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def _delete_everything(lab):
    for lb in h.api(lab, 'loadbalancers')['loadbalancers']:
        _call(lab, 'DELETE', f'loadbalancers/{lb["id"]}?cascade=true')
    netns.wait_for(lambda: h.objects(lab) == [], 30,
                   'every load balancer deleted', interval=0.2)


@contextlib.contextmanager
def _post_mortem(lab):
    """On a failed wait: what the controller said about statuses and
    databases, and where its threads are (SIGUSR2)."""
    try:
        yield
    except AssertionError:
        ctl = lab.controllers['ctl1']
        with contextlib.suppress(OSError), open(
                os.path.join(lab.agents.root, 'ctl1.log')) as f:
            print('dsr-controller warnings and errors:\n' + ''.join(
                line for line in f
                if ' WARNING ' in line or ' ERROR ' in line)[-8000:])
        os.kill(ctl.pid, signal.SIGUSR2)
        with contextlib.suppress(TimeoutError):
            ctl.wait_for_line('most recent call first', 5)
        print('dsr-controller threads:\n' + ctl.output_tail(2000))
        raise


@pytest.mark.parametrize('service', ['redis', 'mariadb', 'rabbitmq'])
def test_service_outage_loses_nothing(lab, service):
    svc = lab.services[service]
    m1, m2 = (m.name for m in lab.topo.members)
    ses = h.se_names(lab)
    ip = {m.name: m.ipv4 for m in lab.topo.members}
    traffic = None
    try:
        _create(lab, 'lb1', VIP1, {f'{m1}-1': ip[m1]})
        _create(lab, 'lb2', VIP2, {f'{m1}-2': ip[m1], f'{m2}-2': ip[m2]})
        _create(lab, 'lb3', VIP3, None)
        with _post_mortem(lab):
            h.wait_all_active(lab, 30)
        lab.agents.wait_route(f'{VIP1}/32', ses, timeout=30)
        traffic = _start_traffic(lab)
        p1, p2 = (h.find(lab, 'pools', p)['id'] for p in ('p1', 'p2'))
        m2_2 = [m['id'] for m in h.api(lab, f'pools/{p2}/members')['members']
                if m['name'] == f'{m2}-2'][0]
        lb3 = h.find(lab, 'loadbalancers', 'lb3')['id']
        changes = {
            'lb1 member create': ('POST', f'pools/{p1}/members', {
                'member': _member(f'{m2}-1', ip[m2])}),
            'lb2 member delete': ('DELETE', f'pools/{p2}/members/{m2_2}',
                                  None),
            'lb3 listener create': ('POST', 'listeners', {'listener': {
                'name': 'l3', 'protocol': 'TCP', 'protocol_port': 80,
                'loadbalancer_id': lb3}}),
        }

        svc.stop()
        down = time.monotonic()
        # With RabbitMQ down the provider waits for the broker, so the API
        # answers only once it is back: every change in its own thread.
        pool = concurrent.futures.ThreadPoolExecutor(len(changes))
        calls = {what: pool.submit(_call, lab, *args)
                 for what, args in changes.items()}
        if service != 'rabbitmq':
            # Accepted by Octavia while the service is down.
            for what, call in calls.items():
                assert call.result(timeout=OUTAGE * 4)[0] in (201, 204), (
                    what, call.result())
        time.sleep(max(0.0, down + OUTAGE - time.monotonic()))  # the outage
        pending = {lb['name']: lb['provisioning_status'] for lb in
                   h.api(lab, 'loadbalancers')['loadbalancers']}
        if service != 'rabbitmq':
            # Nothing reported while the service is down: the changes wait.
            assert set(pending.values()) == {'PENDING_UPDATE'}, pending
        svc.start()
        up = time.monotonic()
        pool.shutdown(wait=True)
        answered = time.monotonic()
        for what, call in calls.items():
            assert call.result()[0] in (201, 204), (what, call.result())
        with _post_mortem(lab):
            h.wait_all_active(lab, CONVERGE_BOUND[service],
                              f'every change ACTIVE after {service} returned')
        active = time.monotonic()
        want = {f'{VIP1}:80/tcp': sorted([ip[m1], ip[m2]]),
                f'{VIP2}:80/tcp': [ip[m1]],
                f'{VIP3}:80/tcp': []}

        for se in ses:
            netns.wait_for(lambda: _dataplane(lab, se) == want,
                           max(1.0, up + CONVERGE_BOUND[service] -
                               time.monotonic()),
                           f'every change in the dataplane of {se}')
        programmed = time.monotonic()
        h.wait_members(lab, 'p1', {f'{m1}-1': 'NO_MONITOR',
                                   f'{m2}-1': 'NO_MONITOR'},
                       timeout=max(1.0, up + CONVERGE_BOUND[service] -
                                   time.monotonic()))
        # lb1 had only m1: the client's new connections now reach m2 too.
        traffic.wait_for_line(rf'^MEMBER {m2}$', 10)
        result, traffic = _stop_traffic(traffic), None
        print(f'OUTAGE {service}: down {up - down:.1f} s, statuses then '
              f'{pending}; after it answered: API calls returned '
              f'{answered - up:.1f} s, ACTIVE {active - up:.1f} s, '
              f'programmed {programmed - up:.1f} s; traffic {result}')
        assert result['new']['failed'] == 0, result['new']
        assert result['new']['ok'] > 0, result['new']
        assert result['established']['ok'], result['established']
        assert h.not_active(lab) == []
    finally:
        if traffic is not None:
            netns.kill_proc(traffic)
        if not svc.running:
            svc.start()
        _delete_everything(lab)
    lab.agents.wait_route(f'{VIP1}/32', [], timeout=15)
    for se in ses:
        netns.wait_for(lambda: lab.agents.show(se)['listeners'] == [], 10,
                       f'empty dataplane on {se}')
    assert h.objects(lab) == []
