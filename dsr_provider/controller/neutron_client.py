"""The controller's Neutron client: openstacksdk over a keystoneauth session
built from [service_auth], with [neutron]'s adapter options (endpoint,
region, interface) -- the sections and option names Octavia's own network
driver reads.  A noauth Neutron: [service_auth] auth_type = none and
[neutron] endpoint_override = URL.
"""

from keystoneauth1 import loading as ks_loading
from keystoneauth1 import noauth
import openstack

from dsr_provider import opts


def session_from_conf(conf):
    group = opts.SERVICE_AUTH_GROUP
    auth = None
    if conf[group].auth_type:
        auth = ks_loading.load_auth_from_conf_options(conf, group)
    if auth is None:
        # No credentials configured: a noauth Neutron (endpoint_override).
        auth = noauth.NoAuth()
    return ks_loading.load_session_from_conf_options(conf, group, auth=auth)


def network_from_conf(conf):
    """The openstacksdk network proxy (connection.network)."""
    n = conf[opts.NEUTRON_GROUP]
    kwargs = {}
    if n.endpoint_override:
        kwargs['network_endpoint_override'] = n.endpoint_override
    if n.region_name:
        kwargs['region_name'] = n.region_name
    if n.valid_interfaces:
        kwargs['interface'] = n.valid_interfaces[0]
    connection = openstack.connection.Connection(
        session=session_from_conf(conf), **kwargs)
    return connection.network
