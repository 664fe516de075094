"""The oslo-config-generator files describe every option a deployment
writes, and the committed samples are what they generate (issue 13).

* oslo-config-validator, with etc/oslo-config-generator/<daemon>.conf,
  accepts a config file written the way DevStack writes it (the plugin's
  iniset lines in devstack/lib/octavia-dsr plus DevStack's own: the RPC
  transport_url, colourised logging), and refuses an unknown option;
* etc/<daemon>.conf.sample is the generator's current output
  (`tox -e genconfig` regenerates them).
"""

import configparser
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
GENERATOR_DIR = ROOT / 'etc' / 'oslo-config-generator'

# What DevStack itself writes into every service's config: iniset_rpc_backend
# (transport_url) and setup_logging (the colourised oslo.log formats).
DEVSTACK_COMMON = """
[DEFAULT]
debug = True
transport_url = rabbit://stackrabbit:secret@192.0.2.1:5672/
logging_context_format_string = %(color)s%(levelname)s %(name)s \
[%(global_request_id)s %(request_id)s %(project_name)s \
%(user_name)s%(color)s] %(instance)s%(color)s%(message)s
logging_default_format_string = %(color)s%(levelname)s %(name)s \
[-%(color)s] %(instance)s%(color)s%(message)s
logging_debug_format_suffix = {{(pid=%(process)d) %(funcName)s \
%(pathname)s:%(lineno)d}}
logging_exception_prefix = ERROR %(name)s %(instance)s

[oslo_messaging_rabbit]
heartbeat_timeout_threshold = 60
"""

# The plugin's writes (devstack/lib/octavia-dsr _dsr_configure_agent,
# _dsr_configure_bgp, _dsr_configure_controller).
DEVSTACK_WRITES = {
    'dsr-agent': """
[agent]
se_id = devstack-se
se_group = default
state_dir = /run/octavia-dsr
tunnel_source4 = 192.0.2.1
netns = se1

[dataplane]
interface = eth1
xdp_mode = native
pin_dir = /sys/fs/bpf/octavia-dsr
decap_pin_dir = /sys/fs/bpf/octavia-dsr/decap

[coordination]
backend_url = redis://127.0.0.1:6379

[auth]
private_key = /etc/octavia-dsr/keys/se.key
controller_keys_dir = /etc/octavia-dsr/keys/controllers
state_dir = /var/lib/octavia-dsr

[bgp]
enabled = True
local_asn = 65001
state_dir = /run/octavia-dsr/bgp
peers = 192.0.2.254 65000
md5_password = secret
""",
    'dsr-controller': """
[dsr_controller]
database_connection = mysql+pymysql://root:secret@127.0.0.1/octavia_dsr
default_se_group = default
coordination_url = redis://127.0.0.1:6379
signing_key = /etc/octavia-dsr/keys/controller.key
octavia_status_socket = /var/run/octavia/status.sock
octavia_stats_socket = /var/run/octavia/stats.sock
octavia_get_socket = /var/run/octavia/get.sock
""",
}

DAEMONS = sorted(DEVSTACK_WRITES)


def _validate(daemon, text, tmp_path):
    conf = tmp_path / f'{daemon}.conf'
    conf.write_text(text)
    return subprocess.run(
        [str(BIN / 'oslo-config-validator'),
         '--config-file', str(GENERATOR_DIR / f'{daemon}.conf'),
         '--input-file', str(conf)],
        capture_output=True, text=True, timeout=120, cwd=ROOT)


def _merged(*texts):
    """One ini text from several (DevStack edits one file in place)."""
    cfg = configparser.RawConfigParser(strict=False)
    cfg.optionxform = str
    for text in texts:
        cfg.read_string(text)
    lines = []
    for section in ['DEFAULT'] + cfg.sections():
        items = (cfg.defaults() if section == 'DEFAULT'
                 else {k: v for k, v in cfg.items(section, raw=True)
                       if k not in cfg.defaults()})
        lines.append(f'[{section}]')
        lines += [f'{k} = {v}' for k, v in items.items()]
        lines.append('')
    return '\n'.join(lines)


@pytest.mark.parametrize('daemon', DAEMONS)
def test_validator_accepts_a_devstack_written_config(daemon, tmp_path):
    proc = _validate(daemon, _merged(DEVSTACK_COMMON,
                                     DEVSTACK_WRITES[daemon]), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize('daemon', DAEMONS)
def test_validator_refuses_an_unknown_option(daemon, tmp_path):
    # Guards the test above: the validator really checks the options.
    proc = _validate(daemon, _merged(DEVSTACK_COMMON, DEVSTACK_WRITES[daemon],
                                     '[DEFAULT]\nno_such_option = 1\n'),
                     tmp_path)
    assert proc.returncode != 0
    assert 'DEFAULT/no_such_option' in proc.stdout + proc.stderr


def _project_blocks(text):
    """{(section, namespace): lines} of the project's own namespaces.

    The libraries' blocks (oslo.log, oslo.messaging) depend on the installed
    library versions, so only octavia_dsr.* is compared."""
    blocks = {}
    section = namespace = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith('[') and line.endswith(']'):
            section, namespace = line[1:-1], None
        elif (line.startswith('# From ') and 0 < i < len(lines) - 1
              and lines[i - 1] == '#' and lines[i + 1] == '#'):
            namespace = line[len('# From '):]
        elif namespace and namespace.startswith('octavia_dsr.'):
            blocks.setdefault((section, namespace), []).append(line)
    return {key: '\n'.join(value).strip('#\n')
            for key, value in blocks.items()}


@pytest.mark.parametrize('daemon', DAEMONS)
def test_sample_is_the_generator_output(daemon, tmp_path):
    out = tmp_path / f'{daemon}.conf.sample'
    proc = subprocess.run(
        [str(BIN / 'oslo-config-generator'),
         '--config-file', str(GENERATOR_DIR / f'{daemon}.conf'),
         '--output-file', str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    generated = out.read_text()
    committed = (ROOT / 'etc' / f'{daemon}.conf.sample').read_text()
    assert _project_blocks(generated), 'no octavia_dsr options generated'
    assert _project_blocks(committed) == _project_blocks(generated), (
        f'etc/{daemon}.conf.sample is stale: run tox -e genconfig')
    # The libraries' namespaces are in it too (DEFAULT/transport_url is
    # oslo.messaging's, DEFAULT/debug oslo.log's).
    assert '#transport_url = ' in committed
    assert '#debug = false' in committed
