"""What a Layer 4 DSR dataplane cannot honour is refused by the provider
before Octavia commits: the `openstack` CLI fails with a message naming the
field and the allowed values, nothing is left behind, and the load balancer
stays ACTIVE and usable."""

import os

from oslo_config import cfg
import oslo_messaging as messaging
import pytest

from dsr_provider.controller import db as db_mod
from dsr_provider.controller import models
from dsr_provider import rpc_api
from tests.functional.e2e import helpers as h
from tools.lab import netns
from tools.lab import product_lab as pl

VIP = '192.0.2.20'
# Octavia's no-op certificate manager hands out a sample certificate for
# any reference, so a TERMINATED_HTTPS listener gets past Octavia's own
# checks (no Barbican here) and reaches the provider.
OCTAVIA_CONFIG = {'certificates': {'cert_manager': 'noop_cert_manager'}}


@pytest.fixture(scope='module')
def lab():
    with h.product(n_se=1, n_members=1, octavia_config=OCTAVIA_CONFIG) as lab:
        h.act(lab, 'create', '--name', 'lb1', '--provider', 'dsr',
              '--vip-subnet-id', pl.VIP_SUBNET, '--vip-address', VIP)
        h.act(lab, 'listener', 'create', '--name', 'l1', '--protocol', 'TCP',
              '--protocol-port', '80', 'lb1')
        yield lab


def names(lab, kind):
    """Names in `openstack loadbalancer <kind> list`."""
    return sorted(o['name'] for o in lab.openstack_json(
        'loadbalancer', kind, 'list'))


def assert_nothing_left(lab):
    assert names(lab, 'listener') == ['l1']
    assert names(lab, 'pool') == []
    assert h.api(lab, 'l7policies')['l7policies'] == []
    lb = lab.openstack_json('loadbalancer', 'show', 'lb1')
    assert lb['provisioning_status'] == 'ACTIVE', lb
    assert h.not_active(lab) == []


REFUSALS = {
    'round_robin_pool': (
        ('pool', 'create', '--name', 'p-rr', '--listener', 'l1',
         '--protocol', 'TCP', '--lb-algorithm', 'ROUND_ROBIN'),
        ['lb_algorithm ROUND_ROBIN', 'allowed: SOURCE_IP_PORT, SOURCE_IP']),
    'least_connections_pool': (
        ('pool', 'create', '--name', 'p-lc', '--loadbalancer', 'lb1',
         '--protocol', 'TCP', '--lb-algorithm', 'LEAST_CONNECTIONS'),
        ['lb_algorithm LEAST_CONNECTIONS',
         'allowed: SOURCE_IP_PORT, SOURCE_IP']),
    'http_listener': (
        ('listener', 'create', '--name', 'l-http', '--protocol', 'HTTP',
         '--protocol-port', '8080', 'lb1'),
        ['listener protocol HTTP', 'allowed: TCP, UDP, SCTP']),
    'terminated_https_listener': (
        ('listener', 'create', '--name', 'l-tls', '--protocol',
         'TERMINATED_HTTPS', '--protocol-port', '443',
         '--default-tls-container-ref', 'any-certificate', 'lb1'),
        ['listener protocol TERMINATED_HTTPS', 'allowed: TCP, UDP, SCTP']),
    'l7_policy': (
        ('l7policy', 'create', '--name', 'l7-reject', '--action', 'REJECT',
         'l1'),
        ['L7 policies are not supported', 'allowed: none']),
}


@pytest.mark.parametrize('case', sorted(REFUSALS))
def test_refused_with_a_clear_message(lab, case):
    args, wanted = REFUSALS[case]
    message = h.refused(lab, 'loadbalancer', *args)
    assert 'DSR provider' in message, message
    for text in wanted:
        assert text in message, f'{text!r} not in: {message}'
    assert_nothing_left(lab)
    print(f'REFUSED {case}: {message}')


def test_still_usable_after_refusals(lab):
    h.act(lab, 'pool', 'create', '--name', 'p-ok', '--listener', 'l1',
          '--protocol', 'TCP', '--lb-algorithm', 'SOURCE_IP')
    assert names(lab, 'pool') == ['p-ok']
    h.act(lab, 'pool', 'delete', 'p-ok')
    assert_nothing_left(lab)


def test_a_change_forged_on_the_broker_is_refused(lab):
    """The broker is not a trust boundary: a change published there with
    the broker's credentials but without the provider driver's key --
    deleting another project's listener, adding a listener -- is refused
    by the controller and changes nothing; the driver's own (signed)
    changes go on applying."""
    conf = cfg.ConfigOpts()
    conf([], project='octavia-dsr-forger')
    # The first transport registers the options; the second is built on
    # Octavia's exchange.
    messaging.get_notification_transport(
        conf, url=lab.agents.transport_url).cleanup()
    conf.set_override('control_exchange', 'octavia')
    transport = messaging.get_notification_transport(
        conf, url=lab.agents.transport_url)
    listeners = h.api(lab, 'listeners')['listeners']
    (l1,) = [x for x in listeners if x['name'] == 'l1']
    forger = rpc_api.ChangeClient(transport)
    try:
        forger.cast({}, 'listener_delete', listener={
            'listener_id': l1['id'], 'loadbalancer_id': l1[
                'loadbalancers'][0]['id']})
        forger.cast({'dsr_auth': {'v': 1, 'key_id': 'forged', 'ts': 0,
                                  'nonce': 'n', 'sig': 'AAAA'}},
                    'listener_create', listener={
                        'listener_id': 'forged-listener',
                        'loadbalancer_id': l1['loadbalancers'][0]['id'],
                        'protocol': 'TCP', 'protocol_port': 81})
    finally:
        transport.cleanup()
    log = os.path.join(lab.agents.root, 'ctl1.log')

    def refusals():
        with open(log) as f:
            return f.read().count('auth: refused change')
    netns.wait_for(lambda: refusals() >= 2, 30,
                   'the controller to refuse both forged changes')
    database = db_mod.Database(lab.controller_db_url)
    try:
        with database.session() as s:
            stored = {r.id for r in s.query(models.Listener)}
    finally:
        database.engine.dispose()
    assert l1['id'] in stored and 'forged-listener' not in stored
    # A signed change (the driver's) still applies.
    h.act(lab, 'listener', 'set', '--name', 'l1', '--connection-limit', '7',
          'l1')
    assert lab.openstack_json('loadbalancer', 'listener', 'show', 'l1')[
        'connection_limit'] == 7
