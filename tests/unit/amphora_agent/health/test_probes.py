"""Each probe type against real servers on loopback (no mocks)."""

import asyncio
import socket
import time

import pytest

from amphora_agent.health import monitor as hm
from amphora_agent.health import probes
from tests.unit.amphora_agent.health import servers

V6 = pytest.mark.skipif(not servers.has_ipv6(), reason='no IPv6 loopback')


def mon(kind, timeout=1.0, **kw):
    return hm.MonitorSpec(type=kind, delay=max(timeout, 1.0),
                          timeout=timeout, max_retries=1, **kw)


def probe(target, prober=None):
    p = prober or probes.Prober()

    async def go():
        try:
            return await p.probe(target)
        finally:
            if prober is None:
                p.close()
    return asyncio.run(go())


def icmp_available(family):
    for kind in (socket.SOCK_RAW, socket.SOCK_DGRAM):
        proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 \
            else socket.IPPROTO_ICMP
        try:
            socket.socket(family, kind, proto).close()
            return True
        except OSError:
            continue
    return False


# -- TCP ---------------------------------------------------------------------

def test_tcp_up():
    with servers.TcpAcceptor() as srv:
        ok, reason = probe(hm.Target('127.0.0.1', srv.port, mon('TCP')))
    assert ok, reason


def test_tcp_refused():
    port = servers.free_port()
    ok, reason = probe(hm.Target('127.0.0.1', port, mon('TCP')))
    assert not ok
    assert reason == 'connection refused'


@V6
def test_tcp_v6():
    with servers.TcpAcceptor('::1') as srv:
        assert probe(hm.Target('::1', srv.port, mon('TCP')))[0]
    assert not probe(hm.Target('::1', srv.port, mon('TCP')))[0]


def test_tcp_source_address():
    with servers.TcpAcceptor('0.0.0.0') as srv:
        p = probes.Prober(source4='127.0.0.3')
        ok, reason = probe(hm.Target('127.0.0.1', srv.port, mon('TCP')), p)
        p.close()
        assert ok, reason
        deadline = time.monotonic() + 5
        while not srv.peers and time.monotonic() < deadline:
            time.sleep(0.01)
    assert srv.peers == ['127.0.0.3']


# -- HTTP / HTTPS / TLS-HELLO -------------------------------------------------

@pytest.mark.parametrize('code, expected, ok', [
    (200, '200', True),
    (202, '200,202', True),
    (204, '200-204', True),
    (205, '200-204', False),
    (500, '200', False),
    (404, '404', True),
    (302, '200-299', False),
])
def test_http_expected_codes(code, expected, ok):
    with servers.HttpServer(code=code) as srv:
        got, reason = probe(hm.Target('127.0.0.1', srv.port,
                                      mon('HTTP', expected_codes=expected)))
    assert got is ok, reason
    assert str(code) in reason


def test_http_method_path_and_host():
    with servers.HttpServer() as srv:
        assert probe(hm.Target('127.0.0.1', srv.port, mon(
            'HTTP', http_method='HEAD', url_path='/healthz?x=1')))[0]
        assert probe(hm.Target('127.0.0.1', srv.port, mon(
            'HTTP', http_method='POST', url_path='/p', http_version=1.1,
            domain_name='health.example.com')))[0]
    # HTTP/1.0 names no host, as the amphora's HAProxy.
    assert srv.requests == [('HEAD', '/healthz?x=1', None),
                            ('POST', '/p', 'health.example.com')]


def test_http_path_beyond_ascii_is_sent_as_utf8():
    """Octavia accepts such a url_path; HAProxy sends its UTF-8 bytes (the
    probe crashed on it, or sent latin-1)."""
    with servers.HttpServer() as srv:
        for path in ('/health-\u5065', '/sant\u00e9'):
            ok, reason = probe(hm.Target('127.0.0.1', srv.port, mon(
                'HTTP', url_path=path)))
            assert ok, reason
    # http.server decodes the request line as latin-1.
    assert [p.encode('latin-1').decode() for _, p, _ in srv.requests] == [
        '/health-\u5065', '/sant\u00e9']


@V6
def test_http_v6_host_header():
    with servers.HttpServer('::1') as srv:
        assert probe(hm.Target('::1', srv.port, mon('HTTP',
                                                    http_version=1.1)))[0]
    assert srv.requests == [('GET', '/', '[::1]')]


def test_http_refused_and_not_http():
    port = servers.free_port()
    ok, reason = probe(hm.Target('127.0.0.1', port, mon('HTTP')))
    assert not ok and reason == 'connection refused'
    # a TCP server that closes at once: no status line
    with servers.TcpAcceptor() as srv:
        ok, reason = probe(hm.Target('127.0.0.1', srv.port, mon('HTTP')))
    assert not ok
    assert any(w in reason for w in ('closed', 'reset', 'pipe')), reason


def test_http_hang_times_out():
    with servers.HangServer() as srv:
        t0 = time.monotonic()
        ok, reason = probe(hm.Target('127.0.0.1', srv.port,
                                     mon('HTTP', timeout=0.3)))
        elapsed = time.monotonic() - t0
    assert not ok
    assert reason == 'timeout after 0.3s'
    # Its own timeout, not a later one (the server never answers); the
    # upper bound leaves room for a loaded host's stalls.
    assert 0.28 <= elapsed < 3.0


def test_https_without_verification():
    with servers.HttpServer(tls=True, code=200) as srv:
        ok, reason = probe(hm.Target('127.0.0.1', srv.port, mon('HTTPS')))
        assert ok, reason
        ok, reason = probe(hm.Target('127.0.0.1', srv.port, mon(
            'HTTPS', expected_codes='204')))
        assert not ok and 'HTTP 200' in reason
    assert len(srv.requests) == 2


def test_https_against_plain_http_fails():
    with servers.HttpServer(tls=False) as srv:
        ok, reason = probe(hm.Target('127.0.0.1', srv.port, mon('HTTPS')))
    assert not ok, reason


def test_tls_hello():
    with servers.HttpServer(tls=True) as srv:
        ok, reason = probe(hm.Target('127.0.0.1', srv.port,
                                     mon('TLS-HELLO')))
    assert ok, reason
    with servers.TcpAcceptor() as srv:
        ok, reason = probe(hm.Target('127.0.0.1', srv.port,
                                     mon('TLS-HELLO')))
    assert not ok
    # HAProxy's ssl-hello-chk: a server that wants a client certificate
    # answers the hello, and is up (it was ERROR: the probe wanted a
    # whole handshake).
    with servers.HttpServer(mtls=True) as srv:
        ok, reason = probe(hm.Target('127.0.0.1', srv.port,
                                     mon('TLS-HELLO')))
    assert ok, reason


def test_a_tls_failure_names_the_tls_reason():
    with servers.HttpServer(mtls=True) as srv:
        ok, reason = probe(hm.Target('127.0.0.1', srv.port, mon('HTTPS')))
    assert not ok and reason.startswith('TLS: '), reason
    assert 'EPERM' not in reason


# -- UDP-CONNECT --------------------------------------------------------------

def test_udp_connect_refused_is_down():
    port = servers.free_port(kind=socket.SOCK_DGRAM)
    ok, reason = probe(hm.Target('127.0.0.1', port,
                                 mon('UDP-CONNECT', timeout=1.0)))
    assert not ok
    assert reason == 'connection refused'


def test_udp_connect_silent_is_up():
    with servers.UdpServer(echo=False) as srv:
        t0 = time.monotonic()
        ok, reason = probe(hm.Target('127.0.0.1', srv.port,
                                     mon('UDP-CONNECT', timeout=0.2)))
        assert time.monotonic() - t0 >= 0.19
        deadline = time.monotonic() + 5
        while not srv.received and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.received == 1
    assert ok and reason == 'no ICMP error'


def test_udp_connect_answer_is_up():
    with servers.UdpServer(echo=True) as srv:
        ok, reason = probe(hm.Target('127.0.0.1', srv.port,
                                     mon('UDP-CONNECT', timeout=1.0)))
    assert ok and reason == 'answered'


@V6
def test_udp_connect_v6():
    port = servers.free_port(socket.AF_INET6, socket.SOCK_DGRAM, '::1')
    assert not probe(hm.Target('::1', port, mon('UDP-CONNECT')))[0]
    with servers.UdpServer('::1', echo=False) as srv:
        assert probe(hm.Target('::1', srv.port,
                               mon('UDP-CONNECT', timeout=0.2)))[0]


# -- PING ---------------------------------------------------------------------

@pytest.mark.skipif(not icmp_available(socket.AF_INET),
                    reason='no ICMP socket (not root, ping_group_range)')
def test_ping_v4():
    p = probes.Prober()

    async def go():
        try:
            # several concurrent pings share one socket
            return await asyncio.gather(*[
                p.probe(hm.Target('127.0.0.1', None, mon('PING')))
                for _ in range(20)])
        finally:
            p.close()
    results = asyncio.run(go())
    assert all(ok for ok, _ in results), results
    assert results[0][1] == 'echo reply'


@V6
@pytest.mark.skipif(not icmp_available(socket.AF_INET6),
                    reason='no ICMPv6 socket')
def test_ping_v6():
    ok, reason = probe(hm.Target('::1', None, mon('PING')))
    assert ok, reason


@pytest.mark.skipif(not icmp_available(socket.AF_INET),
                    reason='no ICMP socket')
def test_ping_replies_are_matched_to_their_target():
    # 127.0.0.1 answers; a reply from it must not complete a ping of
    # another address.  192.0.2.0/24 (TEST-NET-1) gets no reply here:
    # the ping times out (or fails at once when there is no route).
    p = probes.Prober()

    async def go():
        try:
            return await asyncio.gather(
                p.probe(hm.Target('127.0.0.1', None, mon('PING'))),
                p.probe(hm.Target('192.0.2.254', None,
                                  mon('PING', timeout=0.3))))
        finally:
            p.close()
    (ok1, _), (ok2, reason2) = asyncio.run(go())
    assert ok1
    assert not ok2, reason2
