"""The change API is implemented exactly as dsr_wire.changes declares it, on
the publishing side (driver) and the consuming side (controller)."""

from dsr_provider.controller import endpoints
from dsr_provider import rpc_api
from dsr_wire import changes


def _public_methods(cls):
    return {name for name, value in vars(cls).items()
            if callable(value) and not name.startswith('_')}


def test_controller_serves_every_declared_method_and_no_other():
    assert _public_methods(endpoints.ProviderEndpoint) == set(changes.METHODS)


def test_driver_publishes_every_declared_method_and_no_other():
    assert _public_methods(rpc_api.ControllerAPI) == set(changes.METHODS)


def test_payload_carries_the_api_version():
    assert changes.payload(pool={'id': 'p'}) == {
        'version': changes.API_VERSION, 'args': {'pool': {'id': 'p'}}}
