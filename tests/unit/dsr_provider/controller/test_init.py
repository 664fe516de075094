"""The controller starts without eventlet's green resolver
(dsr_provider/controller/__init__.py), and the driver that octavia-api
loads neither imports the controller package nor gets the variable."""

from tests.unit import interpreter


def test_the_controller_starts_without_the_green_resolver():
    interpreter.assert_without_green_resolver(
        'dsr_provider.controller.service')


def test_the_driver_leaves_octavia_apis_environment_alone():
    modules, environ = interpreter.after(
        'import dsr_provider.driver, dsr_provider.status_relay',
        unset=('EVENTLET_NO_GREENDNS',))
    assert not {m for m in modules if m.startswith('dsr_provider.controller')}
    assert 'EVENTLET_NO_GREENDNS' not in environ
