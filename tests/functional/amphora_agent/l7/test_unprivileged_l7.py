"""An L7 SE's engine as the shipped unit runs it: an unprivileged user with
the unit's capabilities (etc/systemd/dsr-agent.service) and, for an L7
SE, its drop-in (etc/systemd/dsr-agent.service.d/tier2.conf), in a
network namespace of its own.  HAProxy binds a listener on port 80 and
answers; without the drop-in the load balancer is ERROR with HAProxy's
reason, and nothing is left running."""

import json
import os
import pathlib
import secrets
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.functional.amphora_agent.test_systemd_unit import _ensure_user
from tools.lab import systemd_unit

ROOT = pathlib.Path(__file__).resolve().parents[4]
UNIT = ROOT / 'etc' / 'systemd' / 'dsr-agent.service'
DROP_IN = ROOT / 'etc' / 'systemd' / 'dsr-agent.service.d' / 'tier2.conf'
USER = 'dsr-agent'

# Applies one load balancer (HTTP on 127.0.0.1:80) with the real engine
# and HAProxy, asks it over HTTP, stops it; prints one JSON line.
SCRIPT = '''
import json, shutil, socket, sys
from amphora_agent.l7 import engine as engine_mod
from tools.lab import l7_docs as docs
from tools.lab.l7_loopback import LoopbackHost


state = sys.argv[1]
engine = engine_mod.Engine(state, LoopbackHost(), None,
                           binary=shutil.which('haproxy'),
                           log_socket=state + '/log.sock', timeout=20)
out = {}
try:
    result = engine.apply(docs.document(docs.load_balancer(
        [docs.listener('li', 'p', port=80)],
        [docs.pool('p', [docs.member('m1', '198.51.100.11')])],
        vips=('127.0.0.1',))))
    out['result'] = result['lb1']
    out['config'] = open(engine.paths.config('lb1')).read() \\
        if result['lb1']['status'] == 'ACTIVE' else None
    if result['lb1']['status'] == 'ACTIVE':
        with socket.create_connection(('127.0.0.1', 80), timeout=10) as s:
            s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')
            out['answer'] = s.recv(100).decode(errors='replace')
finally:
    engine.stop()
    out['running'] = [i for i, p in engine.processes.items()
                      if p.running()]
print(json.dumps(out))
'''


def capabilities(*files):
    """The AmbientCapabilities= of a unit and its drop-ins, merged as
    systemd merges them (each non-empty assignment adds)."""
    caps = set()
    for path in files:
        service = systemd_unit.parse(path.read_text())['Service']
        caps |= {c.lower().removeprefix('cap_') for c in ' '.join(
            service.get('AmbientCapabilities', [])).split()}
    return sorted(caps)


@pytest.fixture
def namespace():
    name = f'dsrl7u-{secrets.token_hex(3)}'
    subprocess.run(['ip', 'netns', 'add', name], check=True)
    subprocess.run(['ip', '-n', name, 'link', 'set', 'lo', 'up'],
                   check=True)
    try:
        yield name
    finally:
        subprocess.run(['ip', 'netns', 'del', name], check=False)


def run_engine(namespace, caps):
    _ensure_user(USER)
    state = tempfile.mkdtemp(prefix='dsr-l7-unpriv-')
    try:
        shutil.chown(state, USER, USER)
        capset = ','.join(['-all'] + [f'+{c}' for c in caps])
        proc = subprocess.run(
            ['ip', 'netns', 'exec', namespace, 'setpriv',
             f'--reuid={USER}', f'--regid={USER}', '--init-groups',
             f'--inh-caps={capset}', f'--ambient-caps={capset}',
             f'--bounding-set={capset}', '--no-new-privs', '--',
             sys.executable, '-c', SCRIPT, state],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, 'PYTHONPATH': str(ROOT)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_an_l7_se_serves_port_80_with_the_units_drop_in(namespace):
    caps = capabilities(UNIT, DROP_IN)
    assert 'net_bind_service' in caps and 'sys_admin' not in caps
    out = run_engine(namespace, caps)
    assert out['result']['status'] == 'ACTIVE', out
    # HAProxy runs as the agent's user: no uid change in its
    # configuration (it would exit "Cannot set uid").
    assert 'user nobody' not in out['config']
    assert out['answer'].startswith('HTTP/1.'), out
    assert out['running'] == []


def test_without_the_drop_in_the_load_balancer_is_error_with_the_reason(
        namespace):
    out = run_engine(namespace, capabilities(UNIT))
    assert out['result']['status'] == 'ERROR', out
    assert 'Permission denied' in out['result']['error'], out
    assert out['running'] == []
