"""What a Layer 4 DSR dataplane cannot honour is refused by the provider
before Octavia commits: the `openstack` CLI fails with a message naming the
field and the allowed values, nothing is left behind, and the load balancer
stays ACTIVE and usable."""

import pytest

from tests.functional.e2e import helpers as h
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
