"""The tempest lab Neutron's IPAM driver: Neutron's own (``internal``),
with the addresses octavia-tempest-plugin picks fixed VIPs from left out
of a subnet's *default* allocation pools.

octavia-tempest-plugin's load balancer API tests create some load balancers
with a fixed VIP at a random index 10-100 of the class's VIP subnet
(``test_base._setup_lb_network_kwargs``, remembering only its own picks)
and others with an address Neutron allocates at random from the whole
pool.  When both land on one address the fixed one fails (Octavia:
"Error creating neutron port ... ConflictException: 409"; CI, stop 21:
``test_load_balancer_ipv4_create``), a few per cent of runs.  With the
range out of the default pools, Neutron's automatic addresses never take
it; an address asked for by name may still be anywhere in the subnet
(Neutron checks only the CIDR), so the tests' fixed VIPs are unchanged.
Pools a client names are kept as given.

Every class of the plugin also makes its own VIP network with a subnet of
the same CIDR ([load_balancer] vip_subnet_cidr), so two classes running at
once can get one VIP address for two load balancers.  A DSR cloud's VIPs
share one routing domain (each SE announces them by BGP), so the SEs serve
one of two listeners on the same address, protocol and port and refuse
the other (CI on session 17's submission: ``test_http_listener_create``
ERROR, its HTTP port 8000 taken by a member class's listener on the same
address).  The lab's cloud gives each VIP once, as a DSR operator's VIP
subnet does: an automatic address also leaves out the addresses taken in
every other subnet of the same CIDR.  (Two allocations in two such
subnets at the same instant may still meet: a small chance of a small
chance.)

Loaded by neutron-server, not by the project (its venv has no Neutron):
neutron_server.NeutronServer(ipam_driver='tools.tempest.neutron_ipam:Pool')
puts the checkout on the server's path and the class under an IPAM alias.
"""

import netaddr
from neutron.db import models_v2
from neutron.ipam.drivers.neutrondb_ipam import db_api
from neutron.ipam.drivers.neutrondb_ipam import driver
from neutron.ipam import requests as ipam_req
from neutron.ipam import utils as ipam_utils

# The indexes octavia-tempest-plugin draws fixed VIPs from
# (data_utils.rand_int_id(start=10, end=100), both ends included).
FIXED_VIP_INDEXES = range(10, 101)


def _without_fixed_vip_range(cidr, pools):
    net = netaddr.IPNetwork(cidr)
    if net.size <= FIXED_VIP_INDEXES.stop:
        return pools
    reserved = netaddr.IPRange(net[FIXED_VIP_INDEXES.start],
                               net[FIXED_VIP_INDEXES.stop - 1])
    left = netaddr.IPSet(pools) - netaddr.IPSet(reserved)
    return list(left.iter_ipranges())


class _SharedSpaceManager(db_api.IpamSubnetManager):
    """Lists a subnet's allocations and the addresses taken in the other
    subnets of its CIDR; only address generation lists allocations."""

    def __init__(self, ipam_subnet_id, neutron_subnet_id, cidr):
        super().__init__(ipam_subnet_id, neutron_subnet_id)
        self._cidr = str(cidr)

    def list_allocations(self, context, **kwargs):
        own = super().list_allocations(context, **kwargs)
        elsewhere = context.session.query(
            models_v2.IPAllocation.ip_address).join(
                models_v2.Subnet,
                models_v2.Subnet.id == models_v2.IPAllocation.subnet_id
            ).filter(models_v2.Subnet.cidr == self._cidr,
                     models_v2.Subnet.id != self.neutron_id)
        # Rows with .ip_address, as _generate_ips reads an allocation.
        return list(own) + elsewhere.all()


class Subnet(driver.NeutronDbSubnet):

    def __init__(self, internal_id, ctx, cidr=None, **kwargs):
        super().__init__(internal_id, ctx, cidr=cidr, **kwargs)
        self.subnet_manager = _SharedSpaceManager(
            internal_id, self.subnet_manager.neutron_id, cidr)


class Pool(driver.NeutronDbPool):

    def get_subnet(self, subnet_id):
        return Subnet.load(subnet_id, self._context)

    def allocate_subnet(self, subnet_request):
        if (isinstance(subnet_request, ipam_req.SpecificSubnetRequest)
                and subnet_request.allocation_pools):
            cidr = subnet_request.subnet_cidr
            default = ipam_utils.generate_pools(cidr,
                                                subnet_request.gateway_ip)
            if sorted(subnet_request.allocation_pools) == sorted(default):
                subnet_request = ipam_req.SpecificSubnetRequest(
                    subnet_request.project_id, subnet_request.subnet_id,
                    cidr, gateway_ip=subnet_request.gateway_ip,
                    allocation_pools=_without_fixed_vip_range(cidr, default),
                    set_gateway_ip=subnet_request.set_gateway_ip)
        if self._subnetpool or not isinstance(
                subnet_request, ipam_req.SpecificSubnetRequest):
            return super().allocate_subnet(subnet_request)
        return Subnet.create_from_subnet_request(subnet_request,
                                                 self._context)
