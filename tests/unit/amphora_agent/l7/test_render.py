"""amphora_agent.l7.render: Octavia's templater renders the L7 document;
the DSR edits are applied; HAProxy 2.6 accepts every configuration."""

import os
import re
import shutil
import subprocess

import pytest

from amphora_agent.l7 import haproxy
from amphora_agent.l7 import render
from dsr_wire import l7 as l7_schema
from tests.unit.amphora_agent.l7 import tls
from tools.lab import l7_docs as docs

HAPROXY = shutil.which('haproxy')
needs_haproxy = pytest.mark.skipif(
    HAPROXY is None, reason='haproxy is not installed (apt-get install '
                            'haproxy)')
SNAT = {4: '198.19.1.2', 6: '2001:db8:2:1::2'}
M1, M2, M3 = '198.51.100.11', '198.51.100.12', '198.51.100.13'


def rendered(lb, tmp_path, snat=SNAT):
    l7_schema.check_load_balancer(lb)
    paths = render.Paths(str(tmp_path))
    out = render.render(lb, paths, snat=snat)
    return paths, out


def accepted(paths, out, lb_id='lb1'):
    """Write what the engine writes and run haproxy -c on it."""
    for path in out.certs:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(tls.self_signed_pem())
    for path, content in out.crt_lists.items():
        with open(path, 'w') as f:
            f.write(content)
    config = paths.config(lb_id)
    os.makedirs(os.path.dirname(config), exist_ok=True)
    with open(config, 'w') as f:
        f.write(out.config)
    haproxy.check(HAPROXY, config)
    return True


def section(config, header):
    """The lines of one frontend/backend section."""
    lines = config.splitlines()
    start = lines.index(header)
    body = []
    for line in lines[start + 1:]:
        if line and not line.startswith(' '):
            break
        if line.strip():
            body.append(line.strip())
    return body


@needs_haproxy
def test_http_round_robin(tmp_path):
    lb = docs.load_balancer(
        [docs.listener('li1', 'p1')],
        [docs.pool('p1', [docs.member('m1', M1), docs.member('m2', M2)])])
    paths, out = rendered(lb, tmp_path)
    front = section(out.config, 'frontend li1')
    assert 'bind 192.0.2.10:80' in front
    assert 'mode http' in front
    assert 'default_backend p1:li1' in front
    back = section(out.config, 'backend p1:li1')
    assert 'balance roundrobin' in back
    assert 'option forwardfor' in back
    # SNAT: the L7 SE's own address as the source of every member
    # connection.
    assert f'server m1 {M1}:8080 weight 1 source 198.19.1.2' in back
    assert f'server m2 {M2}:8080 weight 1 source 198.19.1.2' in back
    # The engine owns the master process: it stays in the foreground.
    assert 'daemon' not in out.config.split()
    assert f'stats socket {paths.stats_socket("lb1")}' in out.config
    assert out.not_rendered == {}
    assert accepted(paths, out)


@needs_haproxy
def test_least_connections(tmp_path):
    lb = docs.load_balancer(
        [docs.listener('li1', 'p1')],
        [docs.pool('p1', [docs.member('m1', M1)],
                   algorithm='LEAST_CONNECTIONS')])
    paths, out = rendered(lb, tmp_path)
    assert 'balance leastconn' in section(out.config, 'backend p1:li1')
    assert accepted(paths, out)


@needs_haproxy
def test_source_ip_port_hashes_address_and_port(tmp_path):
    # Octavia's map has no SOURCE_IP_PORT (it would render round robin).
    lb = docs.load_balancer(
        [docs.listener('li1', 'p1')],
        [docs.pool('p1', [docs.member('m1', M1)],
                   algorithm='SOURCE_IP_PORT'),
         docs.pool('p2', [docs.member('m2', M2)], algorithm='SOURCE_IP')],
    )
    lb['listeners'][0]['l7policies'] = [docs.policy('pol', 'p2', '/x')]
    paths, out = rendered(lb, tmp_path)
    back = section(out.config, 'backend p1:li1')
    assert 'balance hash src,concat(:,txn.dsr_sport)' in back
    assert render.SPORT_VAR in back
    assert 'balance source' in section(out.config, 'backend p2:li1')
    assert accepted(paths, out)


@needs_haproxy
def test_l7_policy_redirect_to_pool_on_path_prefix(tmp_path):
    lb = docs.load_balancer(
        [docs.listener('li1', 'p1', policies=[
            docs.policy('pol-api', 'p-api', '/api')])],
        [docs.pool('p1', [docs.member('m1', M1)]),
         docs.pool('p-api', [docs.member('m3', M3)])])
    paths, out = rendered(lb, tmp_path)
    front = section(out.config, 'frontend li1')
    assert 'acl pol-api-r1 path -m beg /api' in front
    assert 'use_backend p-api:li1 if pol-api-r1' in front
    assert front.index('use_backend p-api:li1 if pol-api-r1') < \
        front.index('default_backend p1:li1')
    assert f'server m3 {M3}:8080 weight 1 source 198.19.1.2' in section(
        out.config, 'backend p-api:li1')
    assert accepted(paths, out)


@needs_haproxy
def test_terminated_https_uses_the_certificates_crt_list(tmp_path):
    lb = docs.load_balancer(
        [docs.listener('li-tls', 'p1', protocol='TERMINATED_HTTPS',
                       port=443,
                       default_tls_container_ref='https://barbican/v1/'
                                                 'containers/web',
                       sni_container_refs=['local:api'])],
        [docs.pool('p1', [docs.member('m1', M1)])])
    paths, out = rendered(lb, tmp_path)
    crt_list = paths.crt_list('lb1', 'li-tls')
    assert f'bind 192.0.2.10:443 ssl crt-list {crt_list}' in section(
        out.config, 'frontend li-tls')
    web, api = (paths.cert_file('lb1', r) for r in (
        'https://barbican/v1/containers/web', 'local:api'))
    assert web.endswith('/lb1/certs/web.pem')
    assert out.crt_lists == {crt_list: f'{web}\n{api}\n'}
    assert out.certs == {web: 'https://barbican/v1/containers/web',
                         api: 'local:api'}
    assert accepted(paths, out)


@needs_haproxy
def test_http_health_monitor(tmp_path):
    lb = docs.load_balancer(
        [docs.listener('li1', 'p1')],
        [docs.pool('p1', [docs.member('m1', M1),
                          docs.member('m2', M2, monitor_port=9000)],
                   healthmonitor=docs.monitor('HTTP'))])
    paths, out = rendered(lb, tmp_path)
    back = section(out.config, 'backend p1:li1')
    assert 'option httpchk GET /healthz' in back
    assert 'http-check expect rstatus 200|201|202|203|204' in back
    assert 'timeout check 1s' in back
    # rise = max_retries, fall = max_retries_down (Octavia's mapping); the
    # check leaves from the SNAT address too.
    assert (f'server m1 {M1}:8080 weight 1 check inter 2s fall 3 rise 2 '
            'source 198.19.1.2') in back
    assert re.search(r'server m2 .* port 9000 source 198\.19\.1\.2$',
                     '\n'.join(back), re.M)
    assert accepted(paths, out)


@needs_haproxy
def test_ipv6_members_and_vips(tmp_path):
    lb = docs.load_balancer(
        [docs.listener('li1', 'p1', allowed_cidrs=['203.0.113.0/24',
                                                   '2001:db8:c::/64'])],
        [docs.pool('p1', [docs.member('m1', '2001:db8:3::11'),
                          docs.member('m2', M2)])],
        vips=('2001:db8:f::10', docs.VIP4))
    paths, out = rendered(lb, tmp_path)
    front = section(out.config, 'frontend li1')
    assert 'bind 2001:db8:f::10:80' in front and 'bind 192.0.2.10:80' in \
        front
    assert ('tcp-request connection reject if !{ src 203.0.113.0/24 '
            '2001:db8:c::/64 }') in front
    back = section(out.config, 'backend p1:li1')
    # A bare IPv6 source would lose its last group to the port parser.
    assert 'server m1 2001:db8:3::11:8080 weight 1 source ' \
           '[2001:db8:2:1::2]' in back
    assert f'server m2 {M2}:8080 weight 1 source 198.19.1.2' in back
    assert accepted(paths, out)


def test_no_snat_address_leaves_the_source_to_routing(tmp_path):
    lb = docs.load_balancer([docs.listener('li1', 'p1')],
                            [docs.pool('p1', [docs.member('m1', M1)])])
    _, out = rendered(lb, tmp_path, snat={6: '2001:db8:2:1::2'})
    back = section(out.config, 'backend p1:li1')
    assert f'server m1 {M1}:8080 weight 1' in back
    assert 'source' not in ' '.join(back)


def test_udp_listener_is_reported_not_rendered(tmp_path):
    lb = docs.load_balancer(
        [docs.listener('li-udp', 'p-udp', protocol='UDP', port=53,
                       insert_headers=None)],
        [docs.pool('p-udp', [docs.member('m1', M1, port=53)],
                   protocol='UDP')])
    _, out = rendered(lb, tmp_path)
    assert out.config is None
    assert 'served by nftables' in out.not_rendered['li-udp']


@needs_haproxy
def test_haproxy_check_rejects_with_its_reason(tmp_path):
    bad = tmp_path / 'bad.cfg'
    bad.write_text('frontend f\n    bind 192.0.2.10:80\n    mode http\n'
                   '    acl a path -m reg (\n    use_backend b if a\n')
    with pytest.raises(haproxy.ConfigRejected) as exc:
        haproxy.check(HAPROXY, str(bad))
    assert str(bad) in str(exc.value)
    assert 'regex' in str(exc.value).lower() or 'acl' in str(exc.value)


def test_global_maxconn_fits_the_file_limit(tmp_path):
    lb = docs.load_balancer(
        [docs.listener('li1', 'p1'), docs.listener('li2', 'p1', port=81)],
        [docs.pool('p1', [docs.member('m1', M1)])])
    paths = render.Paths(str(tmp_path))
    uncapped = render.render(lb, paths).config
    assert '    maxconn 100000' in uncapped.splitlines()   # Octavia's sum
    capped = render.render(lb, paths, fd_limit=20000).config.splitlines()
    assert capped[capped.index('global') + 1:].index('    maxconn 7897') < 8
    assert '    maxconn 50000' in capped     # the frontends' own limits
    assert render.render(lb, paths, fd_limit=-1).config == uncapped


def test_nothing_enabled_renders_nothing(tmp_path):
    lb = docs.load_balancer(
        [docs.listener('li1', 'p1', admin_state_up=False)],
        [docs.pool('p1', [docs.member('m1', M1)])])
    assert render.render(lb, render.Paths(str(tmp_path))).config is None
    lb = docs.load_balancer([docs.listener('li1', 'p1')],
                            [docs.pool('p1', [docs.member('m1', M1)])])
    lb['admin_state_up'] = False
    assert render.render(lb, render.Paths(str(tmp_path))).config is None


# --- a TERMINATED_HTTPS listener's TLS versions, ciphers and ALPN --------

OCTAVIA_CIPHERS = ('TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:'
                   'TLS_CHACHA20_POLY1305_SHA256:'
                   'ECDHE-RSA-AES256-GCM-SHA384:'
                   'ECDHE-ECDSA-AES128-GCM-SHA256')


def tls_lb(**tls):
    return docs.load_balancer(
        [docs.listener('li-tls', 'p1', protocol='TERMINATED_HTTPS', port=443,
                       default_tls_container_ref='local:web', **tls),
         docs.listener('li-http', 'p1', port=80, **tls)],
        [docs.pool('p1', [docs.member('m1', M1)])],
        vips=('192.0.2.10', '2001:db8::10'))


def binds(config, frontend):
    return [line for line in section(config, f'frontend {frontend}')
            if line.startswith('bind ')]


def checked_without_warnings(paths, out):
    """haproxy -c accepts it and warns about nothing but the server state
    file the engine writes later (a bind line mixing ssl-min-ver with
    no-tlsv1x flags is accepted with a warning that they are ignored)."""
    assert accepted(paths, out)
    proc = subprocess.run([HAPROXY, '-c', '-f', paths.config('lb1')],
                          capture_output=True, text=True, check=True)
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines()
                if 'WARNING' in line and 'server state file' not in line]
    assert warnings == [], warnings


@needs_haproxy
@pytest.mark.parametrize('tls,options', [
    # Octavia's defaults (a TERMINATED_HTTPS listener created without
    # them carries them): TLS 1.2 ciphers in "ciphers", TLS 1.3 suites in
    # "ciphersuites", each in the given (preference) order, not sorted.
    ({'tls_versions': ['TLSv1.2', 'TLSv1.3'], 'tls_ciphers': OCTAVIA_CIPHERS,
      'alpn_protocols': ['h2', 'http/1.1', 'http/1.0']},
     'ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3 '
     'ciphers ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256 '
     'ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:'
     'TLS_CHACHA20_POLY1305_SHA256 alpn h2,http/1.1,http/1.0'),
    # TLS 1.3 only: the TLS 1.2 ciphers have no use.
    ({'tls_versions': ['TLSv1.3'], 'tls_ciphers': OCTAVIA_CIPHERS},
     'ssl-min-ver TLSv1.3 ssl-max-ver TLSv1.3 ciphersuites '
     'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:'
     'TLS_CHACHA20_POLY1305_SHA256'),
    # Listed out of order, TLS 1.2 only: no TLS 1.3 suites.
    ({'tls_versions': ['TLSv1.2'], 'tls_ciphers': OCTAVIA_CIPHERS,
      'alpn_protocols': ['http/1.1', 'h2']},
     'ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.2 '
     'ciphers ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256 '
     'alpn http/1.1,h2'),
    ({'tls_versions': ['TLSv1.3', 'TLSv1.2']},
     'ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3'),
    # Only TLS 1.3 suites while TLS 1.2 is on: TLS 1.2 keeps OpenSSL's
    # ciphers (HAProxy refuses an empty list), as on an amphora.
    ({'tls_ciphers': 'TLS_AES_256_GCM_SHA384'},
     'ciphersuites TLS_AES_256_GCM_SHA384'),
    ({'alpn_protocols': ['h2']}, 'alpn h2'),
])
def test_terminated_https_bind_lines_carry_the_tls_settings(
        tmp_path, tls, options):
    paths, out = rendered(tls_lb(**tls), tmp_path)
    crt_list = paths.crt_list('lb1', 'li-tls')
    # Every VIP's bind line.
    assert binds(out.config, 'li-tls') == [
        f'bind 192.0.2.10:443 ssl crt-list {crt_list} {options}',
        f'bind 2001:db8::10:443 ssl crt-list {crt_list} {options}']
    # Octavia's own rendering of them is not used (no-tlsv1x flags).
    assert 'no-tlsv1' not in out.config and 'no-sslv3' not in out.config
    # An HTTP listener carrying them (Octavia sets its defaults on a PUT
    # of null) has no TLS to apply them to.
    assert binds(out.config, 'li-http') == [
        'bind 192.0.2.10:80', 'bind 2001:db8::10:80']
    checked_without_warnings(paths, out)


@needs_haproxy
def test_a_document_without_tls_settings_leaves_haproxys_defaults(tmp_path):
    # An older controller's document: the bind lines of before.
    paths, out = rendered(tls_lb(), tmp_path)
    crt_list = paths.crt_list('lb1', 'li-tls')
    assert binds(out.config, 'li-tls') == [
        f'bind 192.0.2.10:443 ssl crt-list {crt_list}',
        f'bind 2001:db8::10:443 ssl crt-list {crt_list}']
    checked_without_warnings(paths, out)


@pytest.mark.parametrize('tls,field', [
    ({'tls_versions': ['TLSv1.1', 'TLSv1.2']}, 'tls_versions[0]'),
    ({'tls_versions': []}, 'tls_versions'),
    ({'tls_ciphers': 'HIGH\n    bind :1'}, 'tls_ciphers'),
    ({'tls_ciphers': 'TLS_RSA_WITH_AES_128_CBC_SHA'}, 'tls_ciphers'),
    ({'alpn_protocols': ['spdy/3']}, 'alpn_protocols[0]'),
])
def test_the_document_refuses_tls_settings_haproxy_cannot_apply(tls, field):
    with pytest.raises(l7_schema.Invalid) as info:
        l7_schema.check_load_balancer(tls_lb(**tls), 'lb')
    assert str(info.value).startswith(f'lb.listeners[0].{field} '), \
        str(info.value)
    assert '(allowed: ' in str(info.value)
