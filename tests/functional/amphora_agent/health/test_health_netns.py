"""The health checker in an SE namespace probing real member servers across
the router: HTTP (v4 and v6), TCP, PING (v4 and v6) and UDP-CONNECT.

Kill a server -> its targets go ERROR within
max_retries_down x delay + timeout + delay; restart it -> back ONLINE within
max_retries x delay + timeout + delay; black-hole a member -> PING and HTTP
go ERROR (timeouts), undo it -> ONLINE.  The checker runs in its own
process in the SE namespace (checker_process.py) and reports changes with
CLOCK_MONOTONIC timestamps, which are comparable across processes.
"""

import json
import os
import signal
import time

import pytest

from tools.lab import netns

pytestmark = pytest.mark.root

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, '..', '..', '..', '..'))
SCRIPT = os.path.join(HERE, 'checker_process.py')

DELAY, TIMEOUT, RISE, FALL = 0.5, 0.4, 2, 2
FAIL_BOUND = FALL * DELAY + TIMEOUT + DELAY
RISE_BOUND = RISE * DELAY + TIMEOUT + DELAY
SLACK = 1.0  # process start-up, pipes and a loaded CI machine
HTTP_PORT = 8080
UDP_PORT = 5353


def monitor(kind, **kw):
    m = dict(type=kind, delay=DELAY, timeout=TIMEOUT, max_retries=RISE,
             max_retries_down=FALL)
    m.update(kw)
    return m


class Checker:
    """Follows the CHANGE lines of a checker_process.py."""

    def __init__(self, proc):
        self.proc = proc

    def changes(self):
        out = []
        for line in list(self.proc.lines):
            if line.startswith('CHANGE '):
                out.append(json.loads(line[len('CHANGE '):]))
        return out

    def status(self, key):
        last = None
        for c in self.changes():
            if c['key'] == key:
                last = c['new']
        return last

    def wait_change(self, key, new, after, timeout):
        """The first change of ``key`` to ``new`` stamped after ``after``."""
        def find():
            for c in self.changes():
                if c['key'] == key and c['new'] == new and c['t'] >= after:
                    return c
            return None
        try:
            return netns.wait_for(find, timeout, f'{key} -> {new}')
        except TimeoutError as exc:
            raise AssertionError(
                f'{exc}; changes: {self.changes()}\n'
                f'output: {self.proc.output_tail()}') from None


def kill(proc):
    """SIGKILL a server and reap it: its sockets are closed on return (a
    SIGTERM'd test server closes its sockets one by one, up to a second
    apart)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    netns.kill_proc(proc)
    return time.monotonic()


@pytest.mark.timeout(120)
def test_member_failure_and_recovery(make_topology):
    topo = make_topology(n_se=1, n_members=2)
    se = topo.ses[0]
    m1, m2 = topo.members
    # Members answer ICMP errors without the 1/s per-destination limit, so
    # UDP-CONNECT sees every port unreachable at a 0.5 s delay (Octavia
    # itself refuses UDP-CONNECT delays under 3 s by default).
    topo.sysctl('m2', 'net.ipv4.icmp_ratelimit', 0)
    http1 = topo.start_http_server('m1', binds=[m1.ipv4, m1.ipv6],
                                   port=HTTP_PORT)
    topo.start_http_server('m2', binds=[m2.ipv4], port=HTTP_PORT)
    udp2 = topo.start_udp_echo('m2', binds=[m2.ipv4], port=UDP_PORT)

    targets = {
        'm1-http4': dict(address=m1.ipv4, port=HTTP_PORT,
                         monitor=monitor('HTTP', url_path='/')),
        'm1-http6': dict(address=m1.ipv6, port=HTTP_PORT,
                         monitor=monitor('HTTP')),
        'm1-tcp': dict(address=m1.ipv4, port=HTTP_PORT,
                       monitor=monitor('TCP')),
        'm2-ping4': dict(address=m2.ipv4, monitor=monitor('PING')),
        'm2-ping6': dict(address=m2.ipv6, monitor=monitor('PING')),
        'm2-udp': dict(address=m2.ipv4, port=UDP_PORT,
                       monitor=monitor('UDP-CONNECT')),
        'm2-missing': dict(address=m2.ipv4, port=HTTP_PORT,
                           monitor=monitor('HTTP', url_path='/missing')),
        'm2-404-ok': dict(address=m2.ipv4, port=HTTP_PORT,
                          monitor=monitor('HTTP', url_path='/missing',
                                          expected_codes='404')),
        'm2-nomon': dict(address=m2.ipv4, port=HTTP_PORT, monitor=None),
        'm2-admin': dict(address=m2.ipv4, port=HTTP_PORT,
                         monitor=monitor('TCP'), admin_state_up=False),
    }
    config = {'source4': se.ipv4, 'source6': se.ipv6, 'targets': targets}
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = topo.spawn('se1', [netns.PYTHON, SCRIPT, json.dumps(config)],
                      ready=r'^READY', ready_timeout=20, env=env, cwd=REPO)
    chk = Checker(proc)
    figures = {}

    # Initial statuses, then the 404 target fails its first probe.
    t0 = time.monotonic()
    chk.wait_change('m2-missing', 'ERROR', 0, DELAY + TIMEOUT + SLACK)
    assert chk.status('m2-nomon') == 'NO_MONITOR'
    assert chk.status('m2-admin') == 'OFFLINE'
    # Let every monitored target get a few probes: nothing else changes.
    netns.wait_for(lambda: time.monotonic() - t0 > 3 * DELAY, 5, 'probes')
    bad = [c for c in chk.changes()
           if c['new'] == 'ERROR' and c['key'] != 'm2-missing']
    assert not bad, chk.changes()

    # Kill m1's HTTP server: its HTTP and TCP targets go ERROR.
    t_kill = kill(http1)
    for key in ('m1-http4', 'm1-http6', 'm1-tcp'):
        c = chk.wait_change(key, 'ERROR', t_kill, FAIL_BOUND + SLACK)
        assert c['t'] - t_kill <= FAIL_BOUND + SLACK / 2, c
        assert c['reason'] == 'connection refused', c
        figures[f'{key} down'] = c['t'] - t_kill
    # Restart it: back ONLINE.
    topo.start_http_server('m1', binds=[m1.ipv4, m1.ipv6], port=HTTP_PORT)
    t_up = time.monotonic()
    for key in ('m1-http4', 'm1-http6', 'm1-tcp'):
        c = chk.wait_change(key, 'ONLINE', t_up, RISE_BOUND + SLACK)
        assert c['t'] - t_up <= RISE_BOUND + SLACK / 2, c
        figures[f'{key} up'] = c['t'] - t_up

    # Kill m2's UDP server: the ICMP port unreachable marks it ERROR.
    t_kill = kill(udp2)
    c = chk.wait_change('m2-udp', 'ERROR', t_kill, FAIL_BOUND + SLACK)
    assert c['reason'] == 'connection refused', c
    figures['m2-udp down'] = c['t'] - t_kill
    topo.start_udp_echo('m2', binds=[m2.ipv4], port=UDP_PORT)
    chk.wait_change('m2-udp', 'ONLINE', time.monotonic(),
                    RISE_BOUND + SLACK)

    # Black-hole m2 (it drops everything it receives): probes time out.
    # (Not a link down: that would flush the router's IPv6 address.)
    topo.run('m2', ['nft', '-f', '-'], input=(
        'add table inet hcdrop\n'
        'add chain inet hcdrop input { type filter hook input priority 0; '
        'policy drop; }\n'))
    t_down = time.monotonic()
    for key in ('m2-ping4', 'm2-ping6', 'm2-404-ok'):
        c = chk.wait_change(key, 'ERROR', t_down, FAIL_BOUND + SLACK)
        assert c['t'] - t_down <= FAIL_BOUND + SLACK / 2, c
        assert c['reason'] == f'timeout after {TIMEOUT:g}s', c
        figures[f'{key} down'] = c['t'] - t_down
    topo.run('m2', ['nft', 'delete', 'table', 'inet', 'hcdrop'])
    t_up = time.monotonic()
    for key in ('m2-ping4', 'm2-ping6', 'm2-404-ok'):
        c = chk.wait_change(key, 'ONLINE', t_up, RISE_BOUND + SLACK)
        assert c['t'] - t_up <= RISE_BOUND + SLACK / 2, c
        figures[f'{key} up'] = c['t'] - t_up

    # The 404 target never changed again; the untouched ones never failed.
    assert [(c['old'], c['new']) for c in chk.changes()
            if c['key'] == 'm2-missing'] == [(None, 'ONLINE'),
                                             ('ONLINE', 'ERROR')]
    for key in ('m2-nomon', 'm2-admin'):
        assert len([c for c in chk.changes() if c['key'] == key]) == 1
    print(f'bounds: down <= {FAIL_BOUND:g}s, up <= {RISE_BOUND:g}s; '
          'measured: ' + ', '.join(f'{k} {v:.2f}s'
                                   for k, v in figures.items()))
    rc = proc.stop()
    assert rc == 0, proc.output_tail()
