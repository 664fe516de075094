"""amphora_agent.l7.engine with real HAProxy processes on 127.0.0.1 (the
host side, which needs a network namespace, is a recording stand-in here;
tests/functional/amphora_agent/l7 runs the real one)."""

import ipaddress
import os
import shutil
import socket

import pytest

from amphora_agent.l7 import certs
from amphora_agent.l7 import engine as engine_mod
from dsr_wire.schema import Invalid
from tests.unit.amphora_agent.l7 import tls
from tools.lab import l7_docs as docs

HAPROXY = shutil.which('haproxy')
pytestmark = pytest.mark.skipif(HAPROXY is None,
                                reason='haproxy is not installed')
M1 = '198.51.100.11'


class RecordingHost:
    """What Engine needs of amphora_agent.l7.host.Host, recorded."""

    mode = 'ebpf'

    def __init__(self):
        self.applied = []
        self.tunnel_addresses = {4: ipaddress.ip_address('198.18.7.2')}

    def apply(self, vips):
        self.applied.append(sorted(vips))
        return []

    def teardown(self):
        self.applied.append([])
        return []

    def vips_on_loopback(self, vips):
        return True


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def engine(tmp_path):
    (tmp_path / 'certs').mkdir()
    eng = engine_mod.Engine(str(tmp_path / 'state'), RecordingHost(),
                            certs.LocalStore(str(tmp_path / 'certs')),
                            binary=HAPROXY, log_socket=str(tmp_path / 'log'),
                            timeout=20)
    yield eng
    eng.stop()
    assert not any(p.running() for p in eng.processes.values())


def lb(id_, port, policies=()):
    return docs.load_balancer(
        [docs.listener(id_ + '-li', 'p', port=port, policies=policies)],
        [docs.pool('p', [docs.member('m1', M1)]),
         docs.pool('p-api', [docs.member('m2', '198.51.100.12')])],
        id_=id_, vips=('127.0.0.1',))


def test_apply_runs_one_haproxy_per_load_balancer(engine):
    p1, p2 = free_port(), free_port()
    result = engine.apply(docs.document(lb('lb1', p1), lb('lb2', p2)))
    assert {k: v['status'] for k, v in result.items()} == {
        'lb1': 'ACTIVE', 'lb2': 'ACTIVE'}, result
    assert engine.ready and engine.generation == 1
    assert {r['action'] for r in result.values()} == {'started'}
    assert engine.host.applied[-1] == ['127.0.0.1']
    for port in (p1, p2):          # bound on the VIP
        socket.create_connection(('127.0.0.1', port), timeout=5).close()
    config = open(engine.paths.config('lb1')).read()
    assert f'server m1 {M1}:8080 weight 1 source 198.18.7.2' in config
    stats = engine.stats()
    assert stats['lb1']['listeners']['lb1-li']['operating_status'] == \
        'ONLINE'
    assert stats['lb1']['pools']['p']['members'] == {
        'm1': {'status': 'no check', 'operating_status': 'NO_MONITOR'}}
    assert set(stats['lb1']['listeners']['lb1-li']['stats']) == {
        'bytes_in', 'bytes_out', 'active_connections',
        'total_connections', 'request_errors'}


def test_same_document_again_does_not_reload(engine):
    doc = docs.document(lb('lb1', free_port()))
    engine.apply(doc)
    worker = engine.process('lb1').worker_pid()
    result = engine.apply(dict(doc, generation=2))
    assert result['lb1']['action'] == 'unchanged'
    assert engine.process('lb1').worker_pid() == worker


def test_a_rejected_configuration_is_rejected_alone(engine):
    p1, p2 = free_port(), free_port()
    engine.apply(docs.document(lb('lb1', p1), lb('lb2', p2)))
    workers = {i: engine.process(i).worker_pid() for i in ('lb1', 'lb2')}
    good_config = open(engine.paths.config('lb2')).read()

    bad = docs.policy('pol', 'p-api', '/api')
    bad['rules'][0].update(compare_type='REGEX', value='(')
    changed = lb('lb1', p1, policies=[docs.policy('pol', 'p-api', '/v2')])
    result = engine.apply(docs.document(changed, lb('lb2', p2, [bad]),
                                        generation=2))

    assert result['lb2']['status'] == 'ERROR'
    assert 'HAProxy rejected the configuration' in result['lb2']['error']
    assert "regex '(' is invalid" in result['lb2']['error']
    # lb2 keeps running its previous configuration, untouched ...
    assert engine.process('lb2').worker_pid() == workers['lb2']
    assert open(engine.paths.config('lb2')).read() == good_config
    socket.create_connection(('127.0.0.1', p2), timeout=5).close()
    # ... while lb1's change went in (a reload: a new worker).
    assert result['lb1']['status'] == 'ACTIVE'
    assert result['lb1']['action'] == 'reloaded'
    assert engine.process('lb1').worker_pid() != workers['lb1']
    assert 'path -m beg /v2' in open(engine.paths.config('lb1')).read()
    assert not engine.ready


def test_removed_load_balancer_is_stopped_and_forgotten(engine):
    p1, p2 = free_port(), free_port()
    engine.apply(docs.document(lb('lb1', p1), lb('lb2', p2)))
    proc2 = engine.process('lb2')
    engine.apply(docs.document(lb('lb1', p1), generation=2))
    assert not proc2.running()
    assert not os.path.exists(engine.paths.lb_dir('lb2'))
    with pytest.raises(OSError):
        socket.create_connection(('127.0.0.1', p2), timeout=5).close()
    engine.apply(docs.document(generation=3))
    assert engine.host.applied[-1] == []       # VIPs and decap undone
    assert not engine.process('lb1').running()


def test_missing_certificate_is_an_error_naming_it(engine, tmp_path):
    tls_lb = docs.load_balancer(
        [docs.listener('li', 'p', protocol='TERMINATED_HTTPS',
                       port=free_port(),
                       default_tls_container_ref='local:web')],
        [docs.pool('p', [docs.member('m1', M1)])], vips=('127.0.0.1',))
    result = engine.apply(docs.document(tls_lb))
    assert result['lb1']['status'] == 'ERROR'
    assert "certificate 'local:web': cannot read" in result['lb1']['error']
    (tmp_path / 'certs' / 'web.pem').write_bytes(tls.self_signed_pem())
    result = engine.apply(docs.document(tls_lb, generation=2))
    assert result['lb1']['status'] == 'ACTIVE', result
    pem = engine.paths.cert_file('lb1', 'local:web')
    assert oct(os.stat(pem).st_mode & 0o777) == '0o600'


def test_a_refused_document_changes_nothing(engine):
    engine.apply(docs.document(lb('lb1', free_port())))
    worker = engine.process('lb1').worker_pid()
    bad = docs.document(lb('lb1', free_port()), generation=2)
    bad['load_balancers'][0]['pools'][0]['lb_algorithm'] = 'RANDOM'
    with pytest.raises(Invalid, match='lb_algorithm'):
        engine.apply(bad)
    assert engine.generation == 1
    assert engine.process('lb1').worker_pid() == worker


def test_disabled_load_balancer_is_stopped(engine):
    port = free_port()
    engine.apply(docs.document(lb('lb1', port)))
    disabled = lb('lb1', port)
    disabled['admin_state_up'] = False
    result = engine.apply(docs.document(disabled, generation=2))
    assert result['lb1'] == {'status': 'ACTIVE', 'error': None,
                             'action': 'stopped', 'listeners': {}}
    assert not engine.process('lb1').running()
    assert engine.ready
