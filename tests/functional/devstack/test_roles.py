"""DSR_NODE roles: a node touches only what its role owns.

`stack post-config` then `clean` (harness.sh, as in test_plugin.py) with
DSR_NODE=api and DSR_NODE=se, with the project as installed in this venv
(no install phase, no service started):

* api: octavia.conf gains dsr (amphora kept) and [dsr_provider]; no
  controller or agent configuration, no database, no user; clean puts
  octavia.conf back as it was;
* se: the agent's configuration, key and user, its unit drop-in; octavia.conf
  untouched, no database, no enrolment (the controller is elsewhere: the
  plugin prints the enrol command); clean removes the user and files.
"""

import configparser
import os
from pathlib import Path
import secrets
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = Path(__file__).resolve().parents[3]
HARNESS = Path(__file__).resolve().parent / 'harness.sh'
OCTAVIA_CONF = """[DEFAULT]
transport_url = rabbit://guest:guest@127.0.0.1:5672/

[api_settings]
bind_host = 127.0.0.1
"""


def _sections(path):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(path)
    return {s: dict(parser[s]) for s in parser.sections()}


def _database_exists(name):
    out = subprocess.run(['mariadb', '-uroot', '-h127.0.0.1', '-N', '-e',
                          f"SHOW DATABASES LIKE '{name}'"],
                         capture_output=True, text=True, timeout=60,
                         check=True)
    return bool(out.stdout.strip())


def _user_exists(name):
    return subprocess.run(['getent', 'passwd', name], capture_output=True,
                          timeout=30).returncode == 0


@pytest.fixture
def node(request):
    tag = secrets.token_hex(3)
    root = Path(tempfile.mkdtemp(prefix=f'dsrrole{tag}-'))
    bindir = Path(sys.executable).parent
    env = {
        'PATH': f'{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:'
                '/usr/bin:/sbin:/bin',
        'LANG': 'C.UTF-8', 'HOME': '/root',
        'DEST': str(root / 'opt/stack'), 'DATA_DIR': str(root / 'data'),
        'STACK_USER': 'root', 'HOST_IP': '127.0.0.1',
        'SERVICE_HOST': '127.0.0.1', 'ENABLE_DEBUG_LOG_LEVEL': 'False',
        'SYSTEMD_DIR': str(root / 'systemd'),
        'DEVSTACK_VENV': str(bindir.parent), 'ENABLED_SERVICES': '',
        'OCTAVIA_CONF': str(root / 'etc/octavia/octavia.conf'),
        'HARNESS_STATE': str(root / 'harness'),
        'HARNESS_TRANSPORT_URL': 'rabbit://guest:guest@127.0.0.1:5672/',
        'OCTAVIA_DSR_DIR': str(ROOT),
        'OCTAVIA_DSR_CONF_DIR': str(root / 'etc/octavia-dsr'),
        'OCTAVIA_DSR_RUN_DIR': str(root / 'run'),
        'OCTAVIA_DSR_STATE_DIR': str(root / 'var/lib/octavia-dsr'),
        'OCTAVIA_DSR_PIN_DIR': f'/sys/fs/bpf/octavia-dsr-role{tag}',
        'OCTAVIA_DSR_DB_NAME': f'octavia_dsr_role{tag}',
        'OCTAVIA_DSR_REDIS_NAMESPACE': f'dsrrole-{tag}',
        'OCTAVIA_DSR_AGENT_USER': f'dsrrole{tag}a',
        'OCTAVIA_DSR_SE_ID': f'se-role{tag}',
        # No such interface: clean has nothing to detach.
        'OCTAVIA_DSR_SE_INTERFACE': f'dsrnone{tag}',
    }
    conf = Path(env['OCTAVIA_CONF'])
    conf.parent.mkdir(parents=True)
    conf.write_text(OCTAVIA_CONF)

    def phase(*args):
        out = subprocess.run(['bash', HARNESS, ROOT / 'devstack', *args],
                             env=env, capture_output=True, text=True,
                             timeout=240, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stderr[-6000:]
        return out.stdout + out.stderr

    yield env, phase
    subprocess.run(['userdel', env['OCTAVIA_DSR_AGENT_USER']],
                   capture_output=True)
    subprocess.run(['groupdel', env['OCTAVIA_DSR_AGENT_USER']],
                   capture_output=True)
    subprocess.run(['mariadb', '-uroot', '-h127.0.0.1', '-e',
                    f"DROP DATABASE IF EXISTS {env['OCTAVIA_DSR_DB_NAME']}"],
                   capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def test_api_node_configures_octavia_only(node):
    env, phase = node
    env['DSR_NODE'] = 'api'
    conf = env['OCTAVIA_CONF']
    before = _sections(conf)
    phase('stack', 'post-config')
    after = _sections(conf)
    names = [p.split(':')[0] for p in
             after['api_settings']['enabled_provider_drivers'].split(',')]
    assert names == ['amphora', 'octavia', 'dsr']
    assert 'default_provider_driver' not in after['api_settings']
    assert after['dsr_provider']['transport_url'] == \
        env['HARNESS_TRANSPORT_URL']
    dsr_conf = Path(env['OCTAVIA_DSR_CONF_DIR'])
    assert not (dsr_conf / 'dsr-controller.conf').exists()
    assert not (dsr_conf / 'dsr-agent.conf').exists()
    assert not _database_exists(env['OCTAVIA_DSR_DB_NAME'])
    assert not _user_exists(env['OCTAVIA_DSR_AGENT_USER'])
    assert not Path(env['SYSTEMD_DIR']).exists()

    phase('clean')
    assert _sections(conf) == before
    assert not dsr_conf.exists()
    assert not Path(env['DATA_DIR'], 'octavia-dsr').exists()


def test_se_node_leaves_octavia_and_the_database_alone(node):
    env, phase = node
    env['DSR_NODE'] = 'se'
    conf = env['OCTAVIA_CONF']
    before = Path(conf).read_bytes()
    out = phase('stack', 'post-config')
    assert Path(conf).read_bytes() == before
    assert not _database_exists(env['OCTAVIA_DSR_DB_NAME'])
    dsr_conf = Path(env['OCTAVIA_DSR_CONF_DIR'])
    assert not (dsr_conf / 'dsr-controller.conf').exists()
    assert not (dsr_conf / 'keys/controller.key').exists()
    agent = _sections(dsr_conf / 'dsr-agent.conf')
    assert agent['agent']['se_id'] == env['OCTAVIA_DSR_SE_ID']
    assert agent['bgp']['enabled'] == 'False'     # no peer given
    assert oct(os.stat(dsr_conf / 'keys/se.key').st_mode & 0o777) == '0o600'
    assert _user_exists(env['OCTAVIA_DSR_AGENT_USER'])
    # The controller is on another node: enrolment is the operator's.
    assert 'enrol this SE on the controller node' in out
    assert 'no controller public key' in out
    systemd = Path(env['SYSTEMD_DIR'])
    assert (systemd / 'devstack@dsr-agent.service.d').is_dir()
    assert not (systemd / 'devstack@dsr-controller.service.d').exists()

    phase('clean')
    assert Path(conf).read_bytes() == before
    assert not _user_exists(env['OCTAVIA_DSR_AGENT_USER'])
    for path in (dsr_conf, Path(env['OCTAVIA_DSR_STATE_DIR']),
                 systemd / 'devstack@dsr-agent.service.d',
                 Path(env['DATA_DIR'], 'octavia-dsr')):
        assert not path.exists(), path
