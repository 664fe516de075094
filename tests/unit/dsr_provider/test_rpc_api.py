"""ControllerAPI over a real oslo.messaging transport (fake:// driver, one
process): the target, namespace, version, method names and keyword
arguments the controller's endpoint receives."""

import threading
import time

from oslo_config import cfg
import oslo_messaging as messaging
import pytest

from dsr_provider.controller import endpoints
from dsr_provider import opts
from dsr_provider import rpc_api


class RecordingProvider:
    """Stands in for the controller's ProviderEndpoint: records calls."""

    def __init__(self):
        self.calls = []
        self.arrived = threading.Event()

    def __getattr__(self, method):
        if method.startswith('_'):
            raise AttributeError(method)

        def record(ctxt, **kwargs):
            self.calls.append((method, kwargs))
            self.arrived.set()
        return record


@pytest.fixture
def transport_url():
    opts.register_opts()
    rpc_api.reset_transport()
    cfg.CONF.set_override('transport_url', 'fake:/', group='dsr_provider')
    yield
    rpc_api.reset_transport()
    cfg.CONF.clear_override('transport_url', group='dsr_provider')


@pytest.fixture
def endpoint(transport_url):
    """The controller's real ChangeEndpoint behind a notification listener
    on the exchange the driver publishes to."""
    provider = RecordingProvider()
    transport = rpc_api.get_transport()
    listener = messaging.get_notification_listener(
        transport,
        [messaging.Target(exchange=transport.conf.control_exchange,
                          topic=rpc_api.TOPIC)],
        [endpoints.ChangeEndpoint(provider)], executor='threading',
        allow_requeue=True)
    listener.start()
    yield provider
    listener.stop()
    listener.wait()


def wait_for(endpoint, count):
    deadline = time.monotonic() + 30
    while len(endpoint.calls) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return endpoint.calls


CASES = [
    ('loadbalancer_create', {'loadbalancer': {'loadbalancer_id': 'lb'}}),
    ('loadbalancer_update', {'old_loadbalancer': {'loadbalancer_id': 'lb'},
                             'new_loadbalancer': {'name': 'x'}}),
    ('loadbalancer_delete', {'loadbalancer': {'loadbalancer_id': 'lb'},
                             'cascade': True}),
    ('listener_create', {'listener': {'listener_id': 'l'}}),
    ('listener_update', {'old_listener': {'listener_id': 'l'},
                         'new_listener': {'listener_id': 'l'}}),
    ('listener_delete', {'listener': {'listener_id': 'l'}}),
    ('pool_create', {'pool': {'pool_id': 'p'}}),
    ('pool_update', {'old_pool': {'pool_id': 'p'},
                     'new_pool': {'pool_id': 'p'}}),
    ('pool_delete', {'pool': {'pool_id': 'p'}}),
    ('member_create', {'member': {'member_id': 'm'}}),
    ('member_update', {'old_member': {'member_id': 'm'},
                       'new_member': {'member_id': 'm', 'weight': 0}}),
    ('member_delete', {'member': {'member_id': 'm'}}),
    ('member_batch_update', {'pool_id': 'p',
                             'members': [{'member_id': 'm'}]}),
    ('health_monitor_create', {'healthmonitor': {'healthmonitor_id': 'h'}}),
    ('health_monitor_update', {'old_healthmonitor': {'healthmonitor_id': 'h'},
                               'new_healthmonitor': {'delay': 9}}),
    ('health_monitor_delete', {'healthmonitor': {'healthmonitor_id': 'h'}}),
    ('l7policy_create', {'l7policy': {'l7policy_id': 'p7'}}),
    ('l7policy_update', {'old_l7policy': {'l7policy_id': 'p7'},
                         'new_l7policy': {'position': 2}}),
    ('l7policy_delete', {'l7policy': {'l7policy_id': 'p7'}}),
    ('l7rule_create', {'l7rule': {'l7rule_id': 'r7'}}),
    ('l7rule_update', {'old_l7rule': {'l7rule_id': 'r7'},
                       'new_l7rule': {'invert': True}}),
    ('l7rule_delete', {'l7rule': {'l7rule_id': 'r7'}}),
]


def test_every_method_reaches_the_controller_endpoint(endpoint):
    api = rpc_api.ControllerAPI()
    for method, kwargs in CASES:
        getattr(api, method)(**kwargs)
    # The threading executor dispatches messages side by side, so arrival
    # order is not send order (Octavia locks a load balancer while one
    # change is pending, so one load balancer's changes never race).
    assert sorted(wait_for(endpoint, len(CASES)), key=repr) == \
        sorted(CASES, key=repr)


def test_transport_is_lazy_and_shared(transport_url):
    api = rpc_api.ControllerAPI()
    assert rpc_api._transport is None          # nothing until the first cast
    api.member_delete({'member_id': 'm'})      # no server: a cast is fine
    transport = rpc_api._transport
    assert transport is not None
    rpc_api.ControllerAPI().member_delete({'member_id': 'm'})
    assert rpc_api.get_transport() is transport


def test_transport_url_falls_back_to_default_section():
    opts.register_opts()
    rpc_api.reset_transport()
    messaging.get_rpc_transport(cfg.CONF, url='fake:/').cleanup()  # opts
    cfg.CONF.set_override('transport_url', 'fake://fallback/')
    try:
        assert cfg.CONF.dsr_provider.transport_url is None
        assert str(rpc_api.get_transport()._driver._url) == \
            'fake://fallback/'
    finally:
        rpc_api.reset_transport()
        cfg.CONF.clear_override('transport_url')


def test_own_transport_url_wins(transport_url):
    cfg.CONF.set_override('transport_url', 'fake://default/')
    try:
        assert str(rpc_api.get_transport()._driver._url) == 'fake:///'
    finally:
        cfg.CONF.clear_override('transport_url')


def test_the_payload_carries_the_api_version():
    assert rpc_api.payload(member={'member_id': 'm'}) == {
        'version': '1.0', 'args': {'member': {'member_id': 'm'}}}


def test_the_controller_serves_every_method_the_driver_sends():
    sent = {name for name, value in vars(rpc_api.ControllerAPI).items()
            if callable(value) and not name.startswith('_')}
    assert sent == endpoints.CHANGE_METHODS == {m for m, _ in CASES}
