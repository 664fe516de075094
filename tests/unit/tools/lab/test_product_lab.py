"""The labs' controller configuration: their tight timers by default, a
lab's own values over them; the tempest labs run the apply timeout
tempest itself waits and tooz timeouts a starved host can keep
(tools/tempest/gate.py)."""

import configparser
import types

import pytest

from tools.lab import agent_lab
from tools.lab import l7_ses
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
            se_group='g', controller_key='/k', provider_keys_dir='/p',
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


@pytest.mark.parametrize('tier', [1, 2])
def test_the_tempest_labs_report_at_a_slower_pace(agents_made, tier):
    lab = gate.TempestLab(types.SimpleNamespace(members=[]), 'python',
                          tier=tier)
    conf = _controller_conf(lab)
    assert conf['stats_interval'] == str(gate.TEMPEST_STATS_INTERVAL) != '1'
    [asked] = agents_made
    assert asked['agent_config']['agent'] == gate.TEMPEST_AGENT_TIMERS
    assert gate.TEMPEST_AGENT_TIMERS['stats_interval'] > 1


def _l7_agent_conf(l7, tmp_path):
    host = types.SimpleNamespace(ifname='eth0', ipv4='198.51.100.5',
                                 ipv6='2001:db8::5')
    l7.topo = types.SimpleNamespace(host=lambda name: host)
    l7.lab.agents = types.SimpleNamespace(
        transport_url='rabbit://x', redis_url='redis://y',
        controller_keys_dir=str(tmp_path / 'keys'),
        pin_root=str(tmp_path / 'pins'), se_group='g')
    l7.lab.stack = types.SimpleNamespace(cert_storage_path='/certs')
    l7.root = str(tmp_path / 'l7')
    (tmp_path / 'l7').mkdir(exist_ok=True)
    parser = configparser.ConfigParser()
    parser.read(l7.config_file('m1'))
    return parser['agent']


def test_the_l7_ses_timers_by_default_and_a_labs_own(tmp_path):
    def lab():
        return types.SimpleNamespace(
            topo=None, tag='t', agents=types.SimpleNamespace(
                se_group='g', root=str(tmp_path)))
    agent = _l7_agent_conf(l7_ses.L7SEs(lab(), ['m1']), tmp_path)
    assert (agent['stats_interval'], agent['resync_interval']) == ('1', '5')
    assert agent['role'] == 'tier2' and agent['drain_wait'] == '2.0'
    agent = _l7_agent_conf(l7_ses.L7SEs(
        lab(), ['m1'], agent_config={'stats_interval': 7}), tmp_path)
    assert (agent['stats_interval'], agent['resync_interval']) == ('7', '5')


def test_the_tempest_labs_l7_ses_report_at_the_tempest_pace(
        agents_made, tmp_path):
    topo = types.SimpleNamespace(members=[types.SimpleNamespace(name='m1')])
    lab = gate.TempestLab(topo, 'python', tier=2)
    agent = _l7_agent_conf(lab.l7_ses(), tmp_path)
    assert {k: float(agent[k]) for k in gate.TEMPEST_AGENT_TIMERS} == \
        gate.TEMPEST_AGENT_TIMERS


def test_the_agents_options_come_after_the_labs_own(monkeypatch, tmp_path):
    """_Agents appends its sections: oslo.config takes their values over
    the lab's earlier ones (the tempest labs' reporting pace)."""
    from oslo_config import cfg

    base = tmp_path / 'se1.conf'
    base.write_text('[agent]\nstats_interval = 1\nresync_interval = 5\n')
    monkeypatch.setattr(agent_lab.AgentLab, 'config_file',
                        lambda self, se: str(base))
    agents = product_lab._Agents.__new__(product_lab._Agents)
    agents._agent_config = {'agent': gate.TEMPEST_AGENT_TIMERS}
    conf = cfg.ConfigOpts()
    conf.register_opts([cfg.FloatOpt('stats_interval'),
                        cfg.FloatOpt('resync_interval')], group='agent')
    conf(['--config-file', agents.config_file('se1')], project='t')
    assert {k: conf.agent[k] for k in gate.TEMPEST_AGENT_TIMERS} == \
        gate.TEMPEST_AGENT_TIMERS
