from octavia_lib.api.drivers import data_models as dm
from oslo_config import cfg

from dsr_provider import octavia_lookup
from dsr_provider import opts
from dsr_provider import payloads
from tests.unit.dsr_provider import fakes


def test_unset_fields_are_left_out_at_every_depth():
    lb = dm.LoadBalancer(loadbalancer_id='lb', name=None, listeners=[
        dm.Listener(listener_id='l', protocol='TCP')])
    assert payloads.to_payload(lb) == {
        'loadbalancer_id': 'lb', 'name': None,
        'listeners': [{'listener_id': 'l', 'protocol': 'TCP'}]}


def test_listener_refers_to_its_pool_by_id_and_secrets_stay_home():
    listener = fakes.listener(default_pool=fakes.pool(),
                              default_tls_container_data={'key': b'x'},
                              client_ca_tls_container_data=b'ca')
    doc = payloads.to_payload(listener)
    assert doc['default_pool_id'] == fakes.POOL_ID
    assert 'default_pool' not in doc
    assert not any(k.endswith('_container_data') for k in doc)


def test_settings_are_added_under_dsr():
    doc = payloads.loadbalancer(fakes.loadbalancer(), {'se_group': 'g'})
    assert doc['dsr'] == {'se_group': 'g'}
    assert 'dsr' not in payloads.loadbalancer(fakes.loadbalancer())


def test_get_socket_resolution():
    opts.register_opts()
    opt = cfg.StrOpt('get_socket_path', default='/run/oct/get.sock')
    try:
        cfg.CONF.register_opt(opt, group='driver_agent')
    except cfg.DuplicateOptError:     # octavia itself was imported
        opt = None
    cfg.CONF.set_override('get_socket_path', '/run/oct/get.sock',
                          group='driver_agent')
    try:
        assert octavia_lookup.default_get_socket() == '/run/oct/get.sock'
        cfg.CONF.set_override('octavia_get_socket', '/x/get.sock',
                              group='dsr_provider')
        assert octavia_lookup.default_get_socket() == '/x/get.sock'
    finally:
        cfg.CONF.clear_override('octavia_get_socket', group='dsr_provider')
        cfg.CONF.clear_override('get_socket_path', group='driver_agent')
        if opt is not None:
            cfg.CONF.unregister_opt(opt, group='driver_agent')


def test_lookup_without_socket_is_unknown(tmp_path):
    lookup = octavia_lookup.OctaviaLookup(str(tmp_path / 'missing.sock'))
    assert lookup.pool_listener_port('p') is octavia_lookup.UNKNOWN
    assert lookup.pool_members('p') is octavia_lookup.UNKNOWN


def test_get_socket_default_outside_octavia():
    opts.register_opts()
    try:
        cfg.CONF.driver_agent
    except cfg.NoSuchOptError:
        assert octavia_lookup.default_get_socket() == \
            '/var/run/octavia/get.sock'
