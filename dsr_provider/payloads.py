"""octavia-lib data models -> the plain dicts cast to the controller.

* Fields that are Unset (not given) are left out, at every depth; a field
  present with None means "cleared / back to the default".
* Objects keep octavia-lib's field names (loadbalancer_id, listener_id,
  pool_id, member_id, healthmonitor_id, address, protocol_port, ...).
* A listener refers to its pool by default_pool_id only: the nested copy
  Octavia adds (default_pool) is dropped; a load balancer's pools are in
  its own "pools" list.
* Certificate and key material (*_container_data) never goes on the bus.
"""

from octavia_lib.api.drivers import data_models

_DROPPED = frozenset((
    'default_pool',
    'default_tls_container_data', 'sni_container_data',
    'client_ca_tls_container_data', 'client_crl_container_data',
    'tls_container_data', 'ca_tls_container_data', 'crl_container_data',
))


def to_payload(value):
    """Recursively convert a data model (or list / dict of them)."""
    if isinstance(value, data_models.BaseDataModel):
        value = {k: v for k, v in vars(value).items()
                 if not k.startswith('_')}
    if isinstance(value, dict):
        return {k: to_payload(v) for k, v in value.items()
                if k not in _DROPPED
                and not isinstance(v, data_models.UnsetType)}
    if isinstance(value, (list, tuple)):
        return [to_payload(v) for v in value
                if not isinstance(v, data_models.UnsetType)]
    if isinstance(value, bytes):
        return value.decode('utf-8', 'replace')
    return value


def loadbalancer(lb, dsr_settings=None):
    """A load balancer, with its whole graph when Octavia gives one.

    dsr_settings (create only): the resolved flavor / availability zone
    settings {'se_group', 'encapsulation', 'tier'}, under key "dsr".
    """
    payload = to_payload(lb)
    if dsr_settings is not None:
        payload['dsr'] = dict(dsr_settings)
    return payload
