"""Tier 2 end to end in namespaces: client -> router -> L4 SE (XDP,
IPIP) -> L7 SE (decap, VIP on lo, HAProxy from the L7 document) -> plain
HTTP servers (SNAT), and the replies L7 SE -> router -> client."""

import collections
import json
import os
import re

from tests.functional.amphora_agent.l7.conftest import API_PORT
from tests.functional.amphora_agent.l7.conftest import SERVER_PORT
from tests.unit.amphora_agent.l7 import tls
from tools.lab import l7_docs as docs
from tools.lab import netns
from tools.lab import traffic_loop

REQUESTS = 24


def document(lab, generation=1, web_timeout=50000, vips=(netns.VIP4,),
             member_family=4):
    web = [docs.member(n, lab.addr(n, member_family), SERVER_PORT)
           for n in ('m3', 'm4')]
    api = [docs.member('api', lab.addr('m4'), API_PORT)]
    lb = docs.load_balancer(
        [docs.listener('li-http', 'p-web', port=80,
                       timeout_client_data=web_timeout,
                       policies=[docs.policy('pol-api', 'p-api', '/api')])],
        [docs.pool('p-web', web), docs.pool('p-api', api)], vips=vips)
    return docs.document(lb, generation=generation)


def served_by(body):
    m = re.search(r'member=(\S+)', body)
    assert m, body
    return m.group(1)


def get_with_member_header(topo, path):
    """GET path from the client; (status, X-Member) even for a 404."""
    return client_script(topo, (
        'import http.client,json,sys;'
        'c=http.client.HTTPConnection(sys.argv[1],80,timeout=10);'
        'c.request("GET",sys.argv[2]);r=c.getresponse();r.read();'
        'print(json.dumps([r.status,r.getheader("X-Member")]))'), path)


def client_script(topo, code, path):
    """Run a one-line Python client in the client namespace with the VIP
    and path as arguments; its last output line as a JSON tuple."""
    out = topo.run('client', [*netns.SCRIPT_PYTHON, '-c', code, netns.VIP4,
                              path]).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))


def test_tier2_http_through_l4_and_l7(tier2):
    topo = tier2.topo
    results = tier2.apply_l7(document(tier2))
    for name, out in results.items():
        assert out['load_balancers']['lb1']['status'] == 'ACTIVE', out
        assert out['ready'] is True, out
        assert out['tunnel_addresses'] == {'4': tier2.addr(name),
                                           '6': tier2.addr(name, 6)}

    # Counters: the servers' view of the sources, the L4 SE's view of
    # replies, the router's view of replies leaving the L7 SEs.
    at_server = {(srv, src): topo.nft_counter(srv, saddr=src)
                 for srv in ('m3', 'm4')
                 for src in (tier2.addr('m1'), tier2.addr('m2'),
                             topo.client.ipv4)}
    replies_at_l4 = topo.nft_counter('se1', saddr=netns.VIP4)
    replies_from_l7 = {n: topo.nft_counter(
        'router', ifname=topo.host(n).router_ifname, saddr=netns.VIP4)
        for n in ('m1', 'm2')}

    served = collections.Counter(
        served_by(topo.http_get(netns.VIP4, source_port=port))
        for port in range(40000, 40000 + REQUESTS))
    # Round robin on each L7 SE across the two servers.
    assert set(served) == {'m3', 'm4'}, served
    assert abs(served['m3'] - served['m4']) <= 2, served

    # SNAT: the servers see only the L7 SEs' addresses, both of them (the
    # L4 SE spread the client's flows over both L7 SEs), never the client.
    for srv in ('m3', 'm4'):
        assert at_server[(srv, topo.client.ipv4)].packets() == 0
    for l7se in ('m1', 'm2'):
        assert sum(at_server[(srv, tier2.addr(l7se))].packets()
                   for srv in ('m3', 'm4')) > 0, l7se

    # The L7 policy: /api goes to the second pool (its server answers 404
    # for the path, naming itself).
    assert get_with_member_header(topo, '/api/v1/items') == (404, 'api')
    assert get_with_member_header(topo, '/')[1] in ('m3', 'm4')

    # Replies leave the L7 SEs straight to the router, never via the L4 SE.
    assert replies_at_l4.packets() == 0
    for name, counter in replies_from_l7.items():
        assert counter.packets() > 0, name

    # HAProxy's counters, as Octavia reports them.
    _, stats = tier2.l7('m1', 'stats')
    listener = stats['lb1']['listeners']['li-http']
    assert listener['operating_status'] == 'ONLINE'
    assert listener['stats']['total_connections'] > 0
    assert stats['lb1']['pools']['p-web']['members']['m3'][
        'operating_status'] == 'NO_MONITOR'


def served(traffic):
    """New connections traffic_loop.py --progress has had served."""
    return sum(1 for line in list(traffic.lines) if line.startswith('OK '))


def wait_served(traffic, more, what):
    goal = served(traffic) + more
    netns.wait_for(lambda: served(traffic) >= goal, 60, what)


def test_reload_under_load_drops_nothing(tier2):
    topo = tier2.topo
    tier2.apply_l7(document(tier2))
    traffic = topo.spawn('client', [
        *netns.SCRIPT_PYTHON, traffic_loop.__file__, netns.VIP4, '80',
        '--interval', '0.02', '--progress'], ready=r'^STARTED',
        ready_timeout=20)
    try:
        wait_served(traffic, 10, 'new connections before the reload')
        # A changed listener timeout: both L7 SEs reload their HAProxy,
        # m2's from a new engine that adopts the running one (as after an
        # L7 agent's restart).
        results = tier2.apply_l7(document(tier2, generation=2,
                                          web_timeout=40000),
                                 new_engine=('m2',))
        for out in results.values():
            assert out['load_balancers']['lb1']['status'] == 'ACTIVE', out
            assert out['load_balancers']['lb1']['action'] == 'reloaded'
        for name in ('m1', 'm2'):
            config = open(os.path.join(tier2.state_root, name, 'lb1',
                                       'haproxy.cfg')).read()
            assert 'timeout client 40000' in config
        wait_served(traffic, 10, 'new connections after the reload')
    finally:
        os.killpg(traffic.pid, 15)
        rc, out = traffic.wait_output(60)
        netns.kill_proc(traffic)
    assert rc == 0, out[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary['new']['failed'] == 0, summary
    assert summary['new']['ok'] >= 20, summary
    assert set(summary['new']['members']) == {'m3', 'm4'}, summary
    # The upload that was running through an old worker finished there.
    assert summary['established']['ok'], summary


def get_https(topo, path='/'):
    """GET https://VIP/path from the client (SNI www.example.com, no
    verification: a test certificate); (status, body, TLS version)."""
    return client_script(topo, (
        'import http.client,json,ssl,sys;'
        'x=ssl.create_default_context();x.check_hostname=False;'
        'x.verify_mode=ssl.CERT_NONE;'
        'c=http.client.HTTPSConnection(sys.argv[1],443,timeout=10,'
        'context=x);c.request("GET",sys.argv[2]);r=c.getresponse();'
        'b=r.read().decode();'
        'print(json.dumps([r.status,b,c.sock.version()]))'), path)


def tls_handshake(topo, max_version, alpn):
    """A TLS handshake with VIP:443 from the client, offering TLS up to
    max_version ("TLSv1_2", "TLSv1_3") and the ALPN protocols alpn
    (comma-separated); (TLS version, ALPN protocol) or ("refused",
    reason)."""
    return client_script(topo, (
        'import json,socket,ssl,sys;'
        'x=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT);x.check_hostname=False;'
        'x.verify_mode=ssl.CERT_NONE;'
        f'x.maximum_version=ssl.TLSVersion.{max_version};'
        'x.set_alpn_protocols(sys.argv[2].split(","));\n'
        'try:\n'
        ' s=x.wrap_socket(socket.create_connection((sys.argv[1],443),10),'
        'server_hostname="www.example.com");'
        'print(json.dumps([s.version(),s.selected_alpn_protocol()]))\n'
        'except ssl.SSLError as e:print(json.dumps(["refused",str(e)]))'),
        alpn)


def test_terminated_https_and_health_monitor(tier2):
    """TERMINATED_HTTPS with a test certificate stored for Octavia's local
    certificate manager, TLS 1.3 only and ALPN h2 as the listener says,
    and an HTTP health monitor whose verdicts reach the member status: a
    server that stops is marked ERROR and no request goes to it."""
    topo = tier2.topo
    tls.write_local(os.path.join(tier2.state_root, 'certs'), 'web',
                    tls.self_signed_pem('www.example.com'))
    doc = document(tier2)
    lb = doc['load_balancers'][0]
    lb['pools'][0]['healthmonitor'] = docs.monitor(
        'HTTP', delay=1, timeout=1, max_retries=1, max_retries_down=1,
        url_path='/', expected_codes='200')
    lb['listeners'].append(docs.listener(
        'li-tls', 'p-web', protocol='TERMINATED_HTTPS', port=443,
        default_tls_container_ref='web', tls_versions=['TLSv1.3'],
        alpn_protocols=['h2', 'http/1.1']))
    for name, out in tier2.apply_l7(doc).items():
        assert out['load_balancers']['lb1']['status'] == 'ACTIVE', out
    # A client that stops at TLS 1.2 is refused; h2 is negotiated.
    refused = tls_handshake(topo, 'TLSv1_2', 'h2,http/1.1')
    assert refused[0] == 'refused' and 'PROTOCOL_VERSION' in \
        refused[1].upper(), refused
    assert tls_handshake(topo, 'TLSv1_3', 'h2,http/1.1') == ('TLSv1.3',
                                                             'h2')

    def member_status(l7se, member):
        pools = tier2.l7(l7se, 'stats')[1]['lb1']['pools']
        return pools['p-web']['members'][member]['operating_status']

    netns.wait_for(lambda: all(member_status(n, m) == 'ONLINE'
                               for n in ('m1', 'm2') for m in ('m3', 'm4')),
                   60, 'the health monitor to see both servers UP')
    status, body, version = get_https(topo)
    assert status == 200 and served_by(body) in ('m3', 'm4')
    assert version == 'TLSv1.3'

    tier2.servers['m4'].stop()
    netns.wait_for(lambda: all(member_status(n, 'm4') == 'ERROR'
                               for n in ('m1', 'm2')),
                   60, 'the health monitor to mark m4 DOWN')
    served = collections.Counter(
        served_by(topo.http_get(netns.VIP4, source_port=port))
        for port in range(41000, 41012))
    assert served == {'m3': 12}, served
    assert served_by(get_https(topo)[1]) == 'm3'


def test_ipv6_vip_and_members(tier2):
    """IPv6 end to end: VIP6 on the L7 SEs' loopback (no DAD), 6in6 from
    the L4 SE, IPv6 servers reached from the L7 SE's
    IPv6 address (a bracketed HAProxy source)."""
    topo = tier2.topo
    results = tier2.apply_l7(document(
        tier2, vips=(netns.VIP4, netns.VIP6), member_family=6))
    for out in results.values():
        assert out['load_balancers']['lb1']['status'] == 'ACTIVE', out
    from_l7 = {n: topo.nft_counter('m3', saddr=tier2.addr(n, 6))
               for n in ('m1', 'm2')}
    served = collections.Counter(
        served_by(topo.http_get(netns.VIP6, source_port=port))
        for port in range(44000, 44016))
    assert set(served) == {'m3', 'm4'}, served
    assert sum(c.packets() for c in from_l7.values()) > 0
    config = open(os.path.join(tier2.state_root, 'm1', 'lb1',
                               'haproxy.cfg')).read()
    assert f'source [{tier2.addr("m1", 6)}]' in config
    # The VIP is on lo without DAD (member/host.py's ensure_vips).
    shown = topo.run('m1', ['ip', '-6', 'addr', 'show', 'dev', 'lo']).stdout
    assert re.search(rf'inet6 {re.escape(netns.VIP6)}/128 .*nodad', shown), \
        shown
