"""VIP port allocation in Neutron for the DSR provider (openstacksdk).

Used by DSRProviderDriver.create_vip_port when [dsr_provider]
neutron_enabled is set. The port reserves the VIP (and the additional
VIPs) on the VIP network; the service engines announce the addresses by
BGP, so nothing is bound to it. Its device_owner is Octavia's, and the
answer says octavia_owned, so Octavia deletes the port with the load
balancer. Octavia's rollback of a failed create does not: the driver
deletes a port it created when the create fails (delete_port).
"""

import ipaddress
import threading

from octavia_lib.api.drivers import exceptions
from oslo_log import log as logging
from oslo_utils import excutils

from dsr_provider import opts

LOG = logging.getLogger(__name__)

OCTAVIA_OWNER = 'Octavia'       # octavia.common.constants.OCTAVIA_OWNER

_connection = None
_connection_lock = threading.Lock()


def get_connection(conf=None):
    """The process-wide openstacksdk connection, created on first use."""
    global _connection
    with _connection_lock:
        if _connection is None:
            conf = opts.register_opts(conf)
            try:
                import openstack
            except ImportError as e:
                raise exceptions.DriverError(
                    user_fault_string='The DSR provider cannot allocate the '
                                      'VIP port.',
                    operator_fault_string='[dsr_provider] neutron_enabled '
                                          'needs openstacksdk installed.'
                ) from e
            cloud = conf.dsr_provider.neutron_cloud
            _connection = (openstack.connect(cloud=cloud) if cloud
                           else openstack.connect())
        return _connection


def _fixed_ip(subnet_id, address):
    entry = {}
    if subnet_id:
        entry['subnet_id'] = subnet_id
    if address:
        entry['ip_address'] = address
    return entry


def _pick(fixed_ips, subnet_id, address, taken):
    """The port's fixed IP for a requested (subnet, address)."""
    for ip in fixed_ips:
        if id(ip) in taken:
            continue
        if subnet_id and ip.get('subnet_id') != subnet_id:
            continue
        if address and ipaddress.ip_address(ip['ip_address']) != \
                ipaddress.ip_address(address):
            continue
        taken.add(id(ip))
        return ip
    raise exceptions.DriverError(
        user_fault_string=f'The VIP port has no address on subnet '
                          f'{subnet_id} ({address or "any address"}).')


def _get(obj, name):
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name)


def create_vip_port(connection, loadbalancer_id, project_id, vip, extra_vips,
                    se_addresses=()):
    """Returns (vip_dictionary, additional_vip_dicts) as Octavia wants.

    vip: {'vip_address', 'vip_network_id', 'vip_subnet_id', 'vip_port_id',
    ...} (values may be None); extra_vips: [{'ip_address', 'subnet_id',
    'network_id', 'port_id'}].
    """
    network = connection.network
    extra_vips = list(extra_vips or ())
    port_id = vip.get('vip_port_id')
    try:
        if port_id:
            port, created = network.get_port(port_id), False
        else:
            network_id = vip.get('vip_network_id')
            if not network_id:
                network_id = _get(network.get_subnet(vip['vip_subnet_id']),
                                  'network_id')
            fixed_ips = [_fixed_ip(vip.get('vip_subnet_id'),
                                   vip.get('vip_address'))]
            fixed_ips += [_fixed_ip(v.get('subnet_id'), v.get('ip_address'))
                          for v in extra_vips]
            fixed_ips = [f for f in fixed_ips if f]
            attrs = {
                'name': f'octavia-lb-{loadbalancer_id}',
                'network_id': network_id,
                'device_owner': OCTAVIA_OWNER,
                'device_id': f'lb-{loadbalancer_id}',
                'admin_state_up': True,
            }
            if project_id:
                attrs['project_id'] = project_id
            if fixed_ips:
                attrs['fixed_ips'] = fixed_ips
            if se_addresses:
                attrs['allowed_address_pairs'] = [
                    {'ip_address': a} for a in se_addresses]
            port, created = network.create_port(**attrs), True
    except exceptions.DriverError:
        raise
    except Exception as e:
        raise exceptions.DriverError(
            user_fault_string='The DSR provider could not allocate the VIP '
                              f'port for load balancer {loadbalancer_id}.',
            operator_fault_string=f'Neutron VIP port for load balancer '
                                  f'{loadbalancer_id} failed: {e}') from e

    try:
        return _answer(port, vip, extra_vips, created)
    except Exception:
        # Octavia never learns of a port whose create_vip_port failed.
        with excutils.save_and_reraise_exception():
            if created:
                delete_port(connection, _get(port, 'id'))


def delete_port(connection, port_id):
    """Delete a VIP port this driver created; a failure is logged, not
    raised, so it never hides the error that made the port useless."""
    try:
        connection.network.delete_port(port_id, ignore_missing=True)
    except Exception:
        LOG.exception('VIP port %s could not be deleted: delete it by '
                      'hand (it belongs to no load balancer)', port_id)
    else:
        LOG.info('Deleted VIP port %s: its load balancer create failed',
                 port_id)


def _answer(port, vip, extra_vips, created):
    """create_vip_port's answer from the port."""
    fixed = list(_get(port, 'fixed_ips') or ())
    requests = [(vip.get('vip_subnet_id'), vip.get('vip_address'))]
    requests += [(v.get('subnet_id'), v.get('ip_address'))
                 for v in extra_vips]
    # Requests naming an address first, so one naming only a subnet
    # cannot take an address another asked for.
    taken, picked = set(), {}
    for i in sorted(range(len(requests)), key=lambda i: not requests[i][1]):
        picked[i] = _pick(fixed, *requests[i], taken)
    port_network = _get(port, 'network_id')
    vip_out = dict(vip)
    vip_out.update({
        'vip_address': picked[0]['ip_address'],
        'vip_subnet_id': picked[0].get('subnet_id'),
        'vip_network_id': port_network,
        'vip_port_id': _get(port, 'id'),
    })
    if created:
        vip_out['octavia_owned'] = True
    extra_out = [{'ip_address': picked[i]['ip_address'],
                  'subnet_id': picked[i].get('subnet_id'),
                  'network_id': port_network,
                  'port_id': _get(port, 'id')}
                 for i in range(1, len(requests))]
    return vip_out, extra_out
