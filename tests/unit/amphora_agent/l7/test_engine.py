"""amphora_agent.l7.engine with real HAProxy processes on 127.0.0.1 (the
host side, which needs a network namespace, is a recording stand-in here;
tests/functional/amphora_agent/l7 runs the real one)."""

import ipaddress
import os
import shutil
import socket
import ssl
import subprocess

import pytest

from amphora_agent.l7 import certs
from amphora_agent.l7 import engine as engine_mod
from amphora_agent.l7 import stats as stats_mod
from amphora_agent.l7 import udp
from dsr_wire.schema import Invalid
from tests.unit.amphora_agent.l7 import test_udp
from tests.unit.amphora_agent.l7 import tls
from tools.lab import l7_docs as docs
from tools.lab.netns import wait_for
from tools.lab import ports

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

    def apply(self, vips, forward=False):
        self.forward = forward
        self.applied.append(sorted(vips))
        return []

    def teardown(self):
        self.applied.append([])
        return []

    def vips_on_loopback(self, vips):
        return True


def free_port():
    # Not bind(0): another test's socket took such a port before HAProxy
    # bound it (lb2 failed to start, rehearsal 173).
    return ports.server_port()


@pytest.fixture
def engine(tmp_path, cert_storage):
    eng = engine_mod.Engine(str(tmp_path / 'state'), RecordingHost(),
                            certs.OctaviaStore('local_cert_manager'),
                            binary=HAPROXY, log_socket=str(tmp_path / 'log'),
                            # Room for a loaded host.  (Rehearsals 139,
                            # 173 and 175 failed a reload at 20 and 60 s:
                            # not slowness, a reload sent right after a
                            # start was lost: see test_haproxy.py.)
                            timeout=60)
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


def test_an_unchanged_load_balancer_is_not_rendered_or_checked_again(
        engine, monkeypatch):
    """An apply costs what changed: each load balancer is an Octavia
    templater run and a haproxy -c process, seconds for a group's worth
    on a busy L7 SE."""
    from amphora_agent.l7 import haproxy
    checked, real_check = [], haproxy.check

    def check(binary, path):
        checked.append(os.path.basename(os.path.dirname(path)))
        return real_check(binary, path)
    monkeypatch.setattr(haproxy, 'check', check)
    p1, p2 = free_port(), free_port()
    result = engine.apply(docs.document(lb('lb1', p1), lb('lb2', p2)))
    assert [result[i]['action'] for i in ('lb1', 'lb2')] == [
        'started', 'started'], result
    assert sorted(checked) == ['lb1', 'lb2']
    checked.clear()
    workers = {i: engine.process(i).worker_pid() for i in ('lb1', 'lb2')}
    result = engine.apply(docs.document(
        lb('lb1', p1), lb('lb2', p2, [docs.policy('pol', 'p-api', '/v2')]),
        generation=2))
    assert checked == ['lb2']
    assert (result['lb1']['action'], result['lb2']['action']) == (
        'unchanged', 'reloaded'), result
    assert engine.process('lb1').worker_pid() == workers['lb1']
    assert engine.ready


def test_a_reload_that_cannot_bind_fails_at_once_and_the_old_worker_serves(
        engine):
    """The new configuration moves the listener to a port another process
    holds: the master cannot load it and goes on with the old worker.  The
    load balancer is ERROR with HAProxy's reason as soon as the master says
    so (not after the engine's 60 s wait for a new worker), the old port
    still serves, and the next apply, once the port is free, reloads."""
    p1, p2 = free_port(), free_port()
    engine.apply(docs.document(lb('lb1', p1)))
    worker = engine.process('lb1').worker_pid()
    holder = socket.socket()
    holder.bind(('127.0.0.1', p2))
    holder.listen()
    try:
        result = engine.apply(docs.document(lb('lb1', p2), generation=2))
        assert result['lb1']['status'] == 'ERROR', result
        error = result['lb1']['error']
        assert 'failed to load the new configuration' in error, error
        assert 'Address already in use' in error, error
        assert 'timed out' not in error, error
        assert engine.process('lb1').worker_pid() == worker
        socket.create_connection(('127.0.0.1', p1), timeout=5).close()
    finally:
        holder.close()
    result = engine.apply(docs.document(lb('lb1', p2), generation=3))
    assert (result['lb1']['status'], result['lb1']['action']) == (
        'ACTIVE', 'reloaded'), result
    socket.create_connection(('127.0.0.1', p2), timeout=5).close()


def test_an_unchanged_load_balancer_whose_haproxy_died_is_started(engine):
    port = free_port()
    doc = docs.document(lb('lb1', port))
    engine.apply(doc)
    engine.process('lb1').stop()
    assert engine.dead() == ['lb1']     # the agent's supervision applies
    result = engine.apply(dict(doc, generation=2))
    assert result['lb1']['action'] == 'started', result
    assert engine.ready and engine.dead() == []
    socket.create_connection(('127.0.0.1', port), timeout=5).close()


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
    # lb2 is ERROR for the controller; this SE stays in the L4 pools of
    # the others (lb1's traffic must not stop for lb2's mistake).
    (reason,) = engine.rejected_objects()['loadbalancers'].values()
    assert engine.rejected_objects().keys() == {'loadbalancers'}
    assert 'HAProxy rejected the configuration' in reason
    assert engine.ready
    # An SE on which nothing runs is out.
    engine.apply(docs.document(lb('lb2', p2, [bad]), generation=3))
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


def test_a_removed_load_balancer_whose_haproxy_hangs_is_killed(engine):
    """A worker that does not exit on SIGTERM (hung; here stopped) is
    killed: the generation that removed its load balancer is reported
    applied, its delete DELETED, and its VIP may go to another tenant
    (the stop failed and the worker went on serving)."""
    import signal

    from amphora_agent import processes
    p1, p2 = free_port(), free_port()
    engine.apply(docs.document(lb('lb1', p1), lb('lb2', p2)))
    proc2 = engine.process('lb2')
    proc2.timeout = 1
    workers = processes.process_children(proc2.master_pid())
    assert workers
    for worker in workers:
        os.kill(worker, signal.SIGSTOP)
    engine.apply(docs.document(lb('lb1', p1), generation=2))
    assert engine.unstopped == set()
    assert not any(processes.process_alive(w) for w in workers)
    assert not os.path.exists(engine.paths.lb_dir('lb2'))
    with pytest.raises(OSError):
        socket.create_connection(('127.0.0.1', p2), timeout=5).close()


def test_missing_certificate_is_an_error_naming_it(engine, cert_storage):
    # Only the load balancer whose certificate is missing is ERROR.
    ref = tls.store(tls.self_signed_pem())
    missing = 'f6a4c0de-0000-4000-8000-000000000001'

    def tls_lb(id_, ref):
        return docs.load_balancer(
            [docs.listener(id_ + '-li', 'p', protocol='TERMINATED_HTTPS',
                           port=free_port(), default_tls_container_ref=ref)],
            [docs.pool('p', [docs.member('m1', M1)])], id_=id_,
            vips=('127.0.0.1',))
    lb1, lb2 = tls_lb('lb1', missing), tls_lb('lb2', ref)
    result = engine.apply(docs.document(lb1, lb2))
    assert result['lb1']['status'] == 'ERROR'
    assert f"certificate '{missing}': cannot be loaded with " \
        'local_cert_manager' in result['lb1']['error']
    assert str(cert_storage / f'{missing}.crt') in result['lb1']['error']
    assert result['lb2']['status'] == 'ACTIVE', result
    # The reference stored later: the next apply serves it.
    cert, key = tls.split(tls.self_signed_pem())
    (cert_storage / f'{missing}.crt').write_bytes(cert)
    (cert_storage / f'{missing}.key').write_bytes(key)
    result = engine.apply(docs.document(lb1, lb2, generation=2))
    assert result['lb1']['status'] == 'ACTIVE', result
    pem = engine.paths.cert_file('lb1', missing)
    assert oct(os.stat(pem).st_mode & 0o777) == '0o600'
    assert oct(os.stat(os.path.dirname(pem)).st_mode & 0o777) == '0o700'


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
    # Still disabled: nothing to render or stop, generation after
    # generation.
    for generation in (3, 4):
        result = engine.apply(docs.document(disabled, generation=generation))
        assert result['lb1']['action'] == 'unchanged', result
    assert not engine.process('lb1').running()
    # Enabled again: started.
    result = engine.apply(docs.document(lb('lb1', port), generation=5))
    assert result['lb1']['action'] == 'started', result


def udp_listener(port=53):
    return docs.listener('li-udp', 'p-udp', protocol='UDP', port=port,
                         insert_headers=None)


def udp_pool(*members):
    return docs.pool('p-udp', [docs.member('mu', M1, port=5353), *members],
                     protocol='UDP')


def test_udp_listeners_are_nftables_not_haproxy(engine):
    engine.udp = udp.UdpService(
        test_udp.RecordingNft(), test_udp.RecordingConntrack(),
        checker=test_udp.StillChecker(), adopt_tables=False)
    only_udp = docs.load_balancer([udp_listener()], [udp_pool()],
                                  id_='lb-udp', vips=('127.0.0.1',))
    result = engine.apply(docs.document(only_udp))
    assert result['lb-udp'] == {'status': 'ACTIVE', 'error': None,
                                'action': 'stopped', 'listeners': {}}
    assert not engine.process('lb-udp').running()
    assert engine.udp.nft.tables() == ['dsr_udp_lb_udp']
    assert engine.host.forward is True
    assert engine.ready
    # SNAT to the tunnel address of the member's family.
    assert 'snat ip to 198.18.7.2' in \
        engine.udp.nft.installed['dsr_udp_lb_udp']
    assert engine.stats()['lb-udp']['listeners']['li-udp'][
        'stats']['total_connections'] == 2
    engine.apply(docs.document(generation=2))
    assert engine.udp.nft.tables() == []


def test_a_rejected_udp_rule_set_leaves_haproxy_listeners_serving(engine):
    engine.udp = udp.UdpService(
        test_udp.RecordingNft(), test_udp.RecordingConntrack(),
        checker=test_udp.StillChecker(), adopt_tables=False)
    port = free_port()

    def mixed(*members, generation=1):
        return docs.document(docs.load_balancer(
            [docs.listener('li-http', 'p', port=port), udp_listener()],
            [docs.pool('p', [docs.member('m1', M1)]), udp_pool(*members)],
            vips=('127.0.0.1',)), generation=generation)
    assert engine.apply(mixed())['lb1']['status'] == 'ACTIVE'
    worker = engine.process('lb1').worker_pid()
    installed = dict(engine.udp.nft.installed)

    engine.udp.nft.refuse = '198.51.100.99'
    result = engine.apply(mixed(docs.member('m9', '198.51.100.99'),
                                generation=2))
    assert result['lb1']['status'] == 'ERROR'
    assert result['lb1']['error'] == 'nft rejected the UDP rule set: boom'
    assert engine.udp.nft.installed == installed
    assert engine.process('lb1').worker_pid() == worker
    socket.create_connection(('127.0.0.1', port), timeout=5).close()
    assert not engine.ready


def _l7_group(tmp_path, **overrides):
    from oslo_config import cfg

    from amphora_agent import opts
    conf = cfg.ConfigOpts()
    opts.register_l7_opts(conf)
    conf(args=[])
    conf.set_override('state_dir', str(tmp_path / 'state'), group='l7')
    for name, value in overrides.items():
        conf.set_override(name, value, group='l7')
    return conf.l7


def test_from_conf_fetches_with_the_configured_cert_manager(tmp_path):
    eng = engine_mod.Engine.from_conf(_l7_group(tmp_path), '/nonexistent',
                                      'l7se')
    assert eng.certs.driver_name == 'local_cert_manager'   # the default
    with pytest.raises(ValueError, match=r"\[l7\] cert_manager 'vault'"):
        engine_mod.Engine.from_conf(
            _l7_group(tmp_path, cert_manager='vault'), '/nonexistent',
            'l7se')


def handshake(port, maximum=None, alpn=None, ciphers=None):
    """A TLS handshake with the VIP (no verification: a test
    certificate); (version, ALPN protocol, cipher) or the SSLError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if maximum:
        ctx.maximum_version = maximum
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if ciphers:
        ctx.set_ciphers(ciphers)
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=5) as s, \
                ctx.wrap_socket(s, server_hostname='www.example.com') as t:
            return t.version(), t.selected_alpn_protocol(), t.cipher()[0]
    except ssl.SSLError as exc:
        return exc


def test_listener_tls_settings_are_what_haproxy_negotiates(engine):
    """tls_versions, tls_ciphers and alpn_protocols of the document, seen
    by clients; a listener without them (an older controller's document)
    keeps HAProxy's defaults."""
    ref = tls.store(tls.self_signed_pem())   # an ECDSA certificate
    ports = {'only13': free_port(), 'only12': free_port(),
             'older': free_port()}
    listeners = [
        docs.listener('only13', 'p', protocol='TERMINATED_HTTPS',
                      port=ports['only13'], default_tls_container_ref=ref,
                      tls_versions=['TLSv1.3'],
                      alpn_protocols=['h2', 'http/1.1']),
        # The server's preference order, as given (not sorted).
        docs.listener('only12', 'p', protocol='TERMINATED_HTTPS',
                      port=ports['only12'], default_tls_container_ref=ref,
                      tls_versions=['TLSv1.2'],
                      tls_ciphers='ECDHE-ECDSA-CHACHA20-POLY1305:'
                                  'ECDHE-ECDSA-AES128-GCM-SHA256'),
        docs.listener('older', 'p', protocol='TERMINATED_HTTPS',
                      port=ports['older'], default_tls_container_ref=ref)]
    result = engine.apply(docs.document(docs.load_balancer(
        listeners, [docs.pool('p', [docs.member('m1', M1)])],
        vips=('127.0.0.1',))))
    assert result['lb1']['status'] == 'ACTIVE', result

    # TLSv1.3 only: a client that stops at TLS 1.2 is refused.
    refused = handshake(ports['only13'], maximum=ssl.TLSVersion.TLSv1_2)
    assert isinstance(refused, ssl.SSLError), refused
    assert 'PROTOCOL_VERSION' in str(refused).upper(), refused
    assert handshake(ports['only13'], alpn=['h2', 'http/1.1'])[:2] == (
        'TLSv1.3', 'h2')
    assert handshake(ports['only13'], alpn=['http/1.1'])[1] == 'http/1.1'

    # TLSv1.2 only, the first cipher of the listener's list preferred.
    assert handshake(ports['only12']) == (
        'TLSv1.2', None, 'ECDHE-ECDSA-CHACHA20-POLY1305')
    assert isinstance(handshake(ports['only12'],
                                ciphers='ECDHE-ECDSA-AES256-GCM-SHA384'),
                      ssl.SSLError)

    # HAProxy's defaults: TLS 1.2 and 1.3, no ALPN.
    assert handshake(ports['older'], alpn=['h2', 'http/1.1'])[:2] == (
        'TLSv1.3', None)
    assert handshake(ports['older'], maximum=ssl.TLSVersion.TLSv1_2)[0] == \
        'TLSv1.2'


def test_a_missing_haproxy_makes_its_load_balancers_error_not_the_apply(
        tmp_path):
    eng = engine_mod.Engine(str(tmp_path / 'state'), RecordingHost(), None,
                            binary=str(tmp_path / 'no-haproxy'),
                            log_socket=str(tmp_path / 'log'))
    result = eng.apply(docs.document(lb('lb1', free_port())))
    assert result['lb1']['status'] == 'ERROR', result
    assert 'no-haproxy' in result['lb1']['error'], result
    eng.stop()


def test_a_failed_reload_is_retried_though_the_files_are_in_place(
        engine, monkeypatch, sni_listener):
    """The SNI certificate's crt-list is written, then the reload fails
    (ERROR): the next apply finds the files as rendered, and must reload
    all the same, not report what HAProxy never loaded as unchanged."""
    from amphora_agent.l7 import haproxy
    from tests.functional.amphora_agent.inject import fail_first_call
    port, sni, document = sni_listener
    engine.apply(document(1, []))
    fail_first_call(monkeypatch, haproxy.Process, 'reload',
                    haproxy.HaproxyError('reload timed out'))
    result = engine.apply(document(2, [sni]))
    assert result['lb1']['status'] == 'ERROR', result
    result = engine.apply(document(3, [sni]))
    assert (result['lb1']['status'], result['lb1']['action']) == (
        'ACTIVE', 'reloaded'), result
    wait_for(lambda: served_name(port, 'api.example.org') ==
             'api.example.org', 10, 'the SNI certificate served')


@pytest.fixture
def sni_listener(cert_storage):
    """(port, SNI certificate reference, document(generation, sni refs)):
    one TERMINATED_HTTPS listener on 127.0.0.1:port whose default
    certificate is www.example.com's; the SNI one is api.example.org's."""
    default = tls.store(tls.self_signed_pem('www.example.com'))
    sni = tls.store(tls.self_signed_pem('api.example.org'))
    port = free_port()

    def document(generation, sni_refs):
        return docs.document(docs.load_balancer(
            [docs.listener('li', 'p', protocol='TERMINATED_HTTPS',
                           port=port, default_tls_container_ref=default,
                           sni_container_refs=sni_refs)],
            [docs.pool('p', [docs.member('m1', M1)])],
            vips=('127.0.0.1',)), generation=generation)
    return port, sni, document


def served_name(port, server_hostname):
    """The common name of the certificate the VIP serves for an SNI."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(('127.0.0.1', port), timeout=5) as s, \
            ctx.wrap_socket(s, server_hostname=server_hostname) as t:
        cert = x509.load_der_x509_certificate(t.getpeercert(True))
    return cert.subject.get_attributes_for_oid(
        NameOID.COMMON_NAME)[0].value


def test_an_sni_certificate_added_to_a_listener_is_served(
        engine, sni_listener):
    """Only the listener's crt-list changes (the HAProxy configuration
    names the list, not the certificates): HAProxy must still reload."""
    port, sni, document = sni_listener
    engine.apply(document(1, []))
    assert served_name(port, 'api.example.org') == 'www.example.com'
    result = engine.apply(document(2, [sni]))
    assert result['lb1']['action'] == 'reloaded', result

    wait_for(lambda: served_name(port, 'api.example.org') ==
             'api.example.org', 10, 'the SNI certificate served')
    assert served_name(port, 'www.example.com') == 'www.example.com'
    cert_dir = engine.paths.cert_dir('lb1')
    assert len(os.listdir(cert_dir)) == 3       # two keys, a crt-list
    # And taken out again: its key leaves the disk too.
    assert engine.apply(document(3, []))['lb1']['action'] == 'reloaded'
    wait_for(lambda: served_name(port, 'api.example.org') ==
             'www.example.com', 10, 'the SNI certificate no longer served')
    assert len(os.listdir(cert_dir)) == 2       # the default key, the list
    assert not os.path.exists(engine.paths.cert_file('lb1', sni))


def test_a_check_that_times_out_fails_its_load_balancer_alone(
        engine, monkeypatch):
    """haproxy -c timing out on one load balancer (a host stalled, a
    huge configuration) makes it ERROR; the others are applied (the
    TimeoutExpired aborted the whole apply)."""
    real = subprocess.run

    def run(cmd, *args, **kwargs):
        if '-c' in cmd and 'lbslow' in cmd[-1]:
            raise subprocess.TimeoutExpired(cmd, kwargs.get('timeout'))
        return real(cmd, *args, **kwargs)
    monkeypatch.setattr(subprocess, 'run', run)
    ports = {name: free_port() for name in ('lba', 'lbslow', 'lbz')}
    result = engine.apply(docs.document(
        *(lb(name, port) for name, port in ports.items())))
    assert result['lbslow']['status'] == 'ERROR'
    assert 'timed out' in result['lbslow']['error']
    assert result['lba']['status'] == result['lbz']['status'] == 'ACTIVE'
    socket.create_connection(('127.0.0.1', ports['lbz']), timeout=5).close()


def test_a_failed_statistics_query_repeats_the_last_answer(
        engine, monkeypatch):
    """A stats socket that does not answer once: the load balancer's
    last statistics, not none (its listeners missing from a report read
    as counters started again; its members as OFFLINE)."""
    engine.apply(docs.document(lb('lb1', free_port())))
    first = engine.stats()['lb1']
    assert 'error' not in first

    def refused(path):
        raise OSError('stats socket refused')
    monkeypatch.setattr(stats_mod, 'collect', refused)
    assert engine.stats()['lb1'] == first
    # Not for ever: a HAProxy that never answers again has no counters.
    later = engine_mod.time.monotonic() + engine_mod.STATS_STALE
    monkeypatch.setattr(engine_mod.time, 'monotonic', lambda: later)
    assert engine.stats()['lb1'] == {'error': 'stats socket refused'}
