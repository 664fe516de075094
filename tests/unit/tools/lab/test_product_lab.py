"""ProductLab's controller configuration: the labs' tight timers by
default, a lab's own values over them (the tempest labs run the apply
timeout tempest itself waits: tools/tempest/gate.py)."""

import configparser
import types

from tools.lab import product_lab
from tools.tempest import gate


def _controller_conf(tmp_path, controller_config=None):
    lab = product_lab.ProductLab.__new__(product_lab.ProductLab)
    lab.controller_config = product_lab.ProductLab.CONTROLLER_DEFAULTS | (
        controller_config or {})
    lab.agents = types.SimpleNamespace(
        root=str(tmp_path), transport_url='rabbit://x', se_group='g',
        redis_url='redis://r', controller_key='/k')
    lab.tag, lab.status_relay = 't', False
    lab.controller_db, lab.controller_db_port = 'db', 3306
    lab.stack = types.SimpleNamespace(driver_agent_sockets={
        'status': '/s', 'stats': '/t', 'get': '/g'})
    parser = configparser.ConfigParser()
    parser.read(lab.controller_conf('ctl1'))
    return parser['dsr_controller']


def test_the_labs_timers_by_default(tmp_path):
    conf = _controller_conf(tmp_path)
    assert conf['apply_timeout'] == '20' and conf['stats_interval'] == '1'
    assert conf['octavia_status_socket'] == '/s'


def test_a_labs_own_values_win(tmp_path):
    conf = _controller_conf(
        tmp_path, {'apply_timeout': gate.TEMPEST_APPLY_TIMEOUT})
    assert conf['apply_timeout'] == str(gate.TEMPEST_BUILD_TIMEOUT)
    assert conf['stats_interval'] == '1'
    assert conf['signing_key'] == '/k'
