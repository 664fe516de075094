"""The labs' controller configuration: their tight timers by default, a
lab's own values over them; the tempest labs run the apply timeout
tempest itself waits and tooz timeouts a starved host can keep
(tools/tempest/gate.py)."""

import configparser
import types

import pytest

from tools.lab import agent_lab
from tools.lab import product_lab
from tools.tempest import gate


@pytest.fixture
def agents_made(monkeypatch, tmp_path):
    """The real constructors, with a stand-in for the agents' side (which
    makes keys, folders and a vhost); records what each lab asked of it."""
    made = []

    def agents(topo, rabbit_url, redis_url, agent_config, plain_members):
        made.append({'redis_url': redis_url, 'agent_config': agent_config})
        return types.SimpleNamespace(
            tag='t', root=str(tmp_path), transport_url='rabbit://x',
            se_group='g', controller_key='/k',
            redis_url=redis_url or agent_lab.REDIS)
    monkeypatch.setattr(product_lab, '_Agents', agents)
    return made


def _controller_conf(lab):
    lab.stack = types.SimpleNamespace(driver_agent_sockets={
        'status': '/s', 'stats': '/t', 'get': '/g'})
    parser = configparser.ConfigParser()
    parser.read(lab.controller_conf('ctl1'))
    return parser['dsr_controller']


def test_the_labs_timers_by_default(agents_made):
    conf = _controller_conf(product_lab.ProductLab(object()))
    assert conf['apply_timeout'] == '20' and conf['stats_interval'] == '1'
    assert conf['coordination_url'] == agent_lab.REDIS
    assert conf['octavia_status_socket'] == '/s'


def test_a_labs_own_values_win(agents_made):
    conf = _controller_conf(product_lab.ProductLab(
        object(), controller_config={'apply_timeout': 45}))
    assert conf['apply_timeout'] == '45'
    assert conf['stats_interval'] == '1'
    assert conf['signing_key'] == '/k'


@pytest.mark.parametrize('tier', [1, 2])
def test_the_tempest_labs_timers(agents_made, tier):
    lab = gate.TempestLab(types.SimpleNamespace(members=[]), 'python',
                          tier=tier)
    conf = _controller_conf(lab)
    assert conf['apply_timeout'] == str(gate.TEMPEST_BUILD_TIMEOUT)
    [asked] = agents_made
    assert asked['redis_url'] == gate.TEMPEST_REDIS
    assert 'membership_timeout=5&lock_timeout=5' in gate.TEMPEST_REDIS
