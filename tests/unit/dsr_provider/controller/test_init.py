"""The controller starts without eventlet's green resolver
(dsr_provider/controller/__init__.py), and the driver that octavia-api
loads neither imports the controller package nor gets the variable."""

from tests.unit.amphora_agent.test_init import modules_after


def test_the_controller_starts_without_the_green_resolver():
    loaded, variable = modules_after(
        'import dsr_provider.controller.service')
    assert 'eventlet' in loaded
    assert 'eventlet.support.greendns' not in loaded
    assert 'dns' not in loaded
    assert variable == 'yes'


def test_the_driver_leaves_octavia_apis_environment_alone():
    loaded, variable = modules_after(
        'import dsr_provider.driver, dsr_provider.status_relay')
    assert not {m for m in loaded if m.startswith('dsr_provider.controller')}
    assert variable is None
