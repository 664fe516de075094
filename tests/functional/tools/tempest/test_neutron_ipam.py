"""The tempest lab's IPAM driver (tools/tempest/neutron_ipam.py) in a REAL
neutron-server (tools/lab/localstack/neutron_server.py, noauth, its own
MariaDB database, the tempest virtualenv's Neutron): Neutron's automatic
addresses stay off the indexes octavia-tempest-plugin picks fixed VIPs
from, and those fixed VIPs can still be asked for."""

import ipaddress
import uuid

from oslo_config import cfg
import pytest

from dsr_provider.controller import neutron_client
from dsr_provider import opts
from tools.lab.localstack import neutron_server
from tools.tempest import gate

pytestmark = pytest.mark.timeout(600)

PROJECT = 'dsr-ipam'
V4, V6 = '198.18.200.0/24', '2001:db8:a0::/64'


@pytest.fixture(scope='module')
def network(tmp_path_factory):
    from tools.tempest import venv
    server = neutron_server.NeutronServer(
        tmp_path_factory.mktemp('neutron'),
        python=str(venv.ensure(log=lambda msg: None)),
        ipam_driver=gate.NEUTRON_IPAM_DRIVER)
    server.start()
    try:
        conf = cfg.ConfigOpts()
        opts.register_controller_opts(conf)
        conf([])
        conf.set_override('endpoint_override', server.url, group='neutron')
        yield neutron_client.network_from_conf(conf)
    finally:
        server.stop()


@pytest.fixture
def make_net(network):
    made = []

    def make():
        made.append(network.create_network(
            name=f'ipam-{uuid.uuid4().hex[:6]}', project_id=PROJECT))
        return made[-1]
    yield make
    for n in made:
        for p in network.ports(network_id=n.id):
            network.delete_port(p.id)
        network.delete_network(n.id)


@pytest.fixture
def net(make_net):
    return make_net()


def _subnet(network, net, cidr, **kw):
    return network.create_subnet(
        network_id=net.id, ip_version=ipaddress.ip_network(cidr).version,
        cidr=cidr, project_id=PROJECT, is_dhcp_enabled=False, **kw)


def _pools(subnet):
    return sorted((p['start'], p['end']) for p in subnet.allocation_pools)


def _index(cidr, address):
    net = ipaddress.ip_network(cidr)
    return int(ipaddress.ip_address(address)) - int(net.network_address)


def test_default_pools_leave_out_the_plugins_fixed_vip_indexes(network, net):
    v4 = _subnet(network, net, V4)
    assert _pools(v4) == [('198.18.200.101', '198.18.200.254'),
                          ('198.18.200.2', '198.18.200.9')]
    v6 = _subnet(network, net, V6)
    assert _pools(v6) == [('2001:db8:a0::1', '2001:db8:a0::9'),
                          ('2001:db8:a0::65',
                           '2001:db8:a0:0:ffff:ffff:ffff:ffff')]

    # Automatic addresses: none in 10-100 (Neutron's own driver puts each
    # there with a chance of 91 in 253).
    ports = list(network.create_ports([
        {'network_id': net.id, 'project_id': PROJECT,
         'fixed_ips': [{'subnet_id': v4.id}]} for _ in range(24)]))
    indexes = sorted(_index(V4, p.fixed_ips[0]['ip_address'])
                     for p in ports)
    assert len(indexes) == 24
    assert not [i for i in indexes if 10 <= i <= 100], indexes

    # The plugin's fixed VIPs: any index of the range, v4 and v6.
    for cidr, subnet, index in ((V4, v4, 10), (V4, v4, 57), (V4, v4, 100),
                                (V6, v6, 42)):
        address = str(ipaddress.ip_network(cidr)[index])
        port = network.create_port(
            network_id=net.id, project_id=PROJECT,
            fixed_ips=[{'subnet_id': subnet.id, 'ip_address': address}])
        assert port.fixed_ips[0]['ip_address'] == address


def test_pools_a_client_names_are_kept(network, net):
    pools = [{'start': '198.18.200.20', 'end': '198.18.200.40'}]
    subnet = _subnet(network, net, V4, allocation_pools=pools)
    assert _pools(subnet) == [('198.18.200.20', '198.18.200.40')]
    port = network.create_port(network_id=net.id, project_id=PROJECT,
                               fixed_ips=[{'subnet_id': subnet.id}])
    assert 20 <= _index(V4, port.fixed_ips[0]['ip_address']) <= 40


def test_a_small_subnet_keeps_its_default_pool(network, net):
    subnet = _subnet(network, net, '198.18.201.0/26')
    assert _pools(subnet) == [('198.18.201.2', '198.18.201.62')]


def test_automatic_addresses_are_unique_across_subnets_of_one_cidr(
        network, make_net):
    # Each plugin class makes its own VIP subnet of one CIDR: two load
    # balancers of two classes must not get one VIP.  A /29's pool is .2-.6.
    cidr = '198.18.201.0/29'
    first, second = make_net(), make_net()
    first_subnet = _subnet(network, first, cidr)
    second_subnet = _subnet(network, second, cidr)

    def port(net, subnet, **fixed):
        return network.create_port(
            network_id=net.id, project_id=PROJECT,
            fixed_ips=[{'subnet_id': subnet.id, **fixed}]
        ).fixed_ips[0]['ip_address']
    taken = {port(first, first_subnet) for _ in range(3)}
    # Neutron's own driver gives the second subnet these two addresses
    # with a chance of 1 in 10.
    others = {port(second, second_subnet) for _ in range(2)}
    assert len(taken) == 3 and len(others) == 2
    assert not taken & others, (taken, others)
    assert sorted(taken | others) == [f'198.18.201.{i}' for i in range(2, 7)]
    # Full: the subnets' space is used up, and Neutron says so.
    with pytest.raises(Exception, match='No more IP addresses|IpAddress'):
        port(second, second_subnet)
    # Asked for by name, an address taken in the other subnet is still
    # given (Neutron checks a name against its own subnet only).
    assert port(second, second_subnet,
                ip_address=sorted(taken)[0]) == sorted(taken)[0]
