"""The real agent supervises its ExaBGP and announces only what its SE can
serve: real agents on two SEs, real ExaBGP, BIRD with ECMP, real TCP.

(a) kill -9 of an SE's ExaBGP: the agent logs the death, restarts it and
    counts it in report_state's helpers; the SE is back in the router's
    ECMP route within 5 s (the measured figure is printed).
(b) The SE's uplink goes down and comes back the way an interface does:
    the kernel drops the SE's default routes and its IPv6 address; a
    network manager (played by the test) restores them later, the IPv6
    address with duplicate address detection.  The agent withdraws at once,
    re-announces only after the routes and a usable address are back, and
    every new TCP connection through the VIPs after link-up succeeds.
"""

import json
import os
import socket
import threading
import time

import pytest

from amphora_agent.bgp import exabgp_api
from amphora_agent import processes
from tools.lab.agent_lab import listener
from tools.lab.agent_lab import load_balancer
from tools.lab.agent_lab import member
from tools.lab import netns

pytestmark = pytest.mark.root

VIP4, VIP6 = netns.VIP4, netns.VIP6
P4, P6 = f'{VIP4}/32', f'{VIP6}/128'
BACK_IN_ECMP_BOUND = 5.0


def lbs(lab):
    """TCP on both VIPs, no health monitor: only serviceability can keep
    an SE that lost its routes from taking flows."""
    m4 = [member(f'm{m.index}', m.ipv4) for m in lab.topo.members]
    m6 = [member(f'm{m.index}v6', m.ipv6) for m in lab.topo.members]
    return [load_balancer([VIP4], [listener('l-tcp', 'TCP', 80, m4)]),
            load_balancer([VIP6], [listener('l6-tcp', 'TCP', 80, m6)],
                          id_='lb6')]


def exabgp_pid(lab, se):
    with open(os.path.join(lab.root, se, 'bgp', 'exabgp.pid')) as f:
        return json.load(f)['pid']


def agent_log(lab, se):
    with open(os.path.join(lab.root, f'{se}.log')) as f:
        return f.read()


def adj_rib_out(lab, se):
    lines = exabgp_api.send(os.path.join(lab.root, se, 'bgp', 'api.sock'),
                            'show adj-rib out')
    return [ln for ln in lines if ln not in ('done', '')]


def wait_nexthops(lab, prefix, ses, timeout):
    fam = 6 if ':' in prefix else 4
    want = sorted(lab.topo.host(s).addr(fam) for s in ses)
    t0 = time.monotonic()
    netns.wait_for(lambda: lab.bird.kernel_nexthops(prefix) == want,
                   timeout, f'{prefix} via {ses}', interval=0.01)
    return time.monotonic() - t0


def test_kill9_exabgp_is_restarted_and_back_in_ecmp(make_lab):
    lab = make_lab(n_se=2, n_members=1)
    lab.start_agents()
    lab.wait_applied(lab.publish(lbs(lab)))
    lab.wait_route(P4, ['se1', 'se2'])
    lab.wait_route(P6, ['se1', 'se2'])
    netns.wait_for(lambda: lab.state('se1').get('helpers', {}).get('bgp'),
                   10, 'helpers in report_state')
    assert lab.state('se1')['helpers']['bgp'] == {
        'state': 'running', 'restarts': 0, 'last_error': None}
    assert lab.state('se1')['serviceable'] is True

    figures = []
    for round_ in (1, 2):
        old = exabgp_pid(lab, 'se1')
        t0 = time.monotonic()
        os.kill(old, 9)
        # The routers drop se1 (TCP closed), then take it back.
        wait_nexthops(lab, P4, ['se2'], 5)
        wait_nexthops(lab, P4, ['se1', 'se2'], 30)
        back4 = time.monotonic() - t0
        wait_nexthops(lab, P6, ['se1', 'se2'], 30)
        back6 = time.monotonic() - t0
        figures.append((back4, back6))
        print(f'kill -9 #{round_}: se1 back in ECMP after {back4:.2f} s '
              f'(IPv4), {back6:.2f} s (IPv6)')
        assert exabgp_pid(lab, 'se1') != old
        netns.wait_for(
            lambda: lab.state('se1')['helpers']['bgp']['restarts'] ==
            round_, 5, f'restart {round_} reported')
        bgp = lab.state('se1')['helpers']['bgp']
        assert bgp['state'] == 'running'
        assert f'ExaBGP pid {old} exited' in bgp['last_error']
        log = agent_log(lab, 'se1')
        assert log.count(f'ExaBGP pid {old} exited') == 1, log[-3000:]
        assert max(back4, back6) < BACK_IN_ECMP_BOUND, figures
    # se2 was never disturbed.
    assert lab.state('se2')['helpers']['bgp']['restarts'] == 0


def _api_helper(pid):
    for kid in processes.process_children(pid):
        if any('exabgp_api.py' in a for a in processes.process_cmdline(kid)):
            return kid
    return None


def test_api_helper_deaths_make_exabgp_exit_and_it_is_restarted(make_lab):
    """ExaBGP gives up after repeated deaths of its API helper (FIELD-NOTES):
    the agent sees ExaBGP exit and restarts it like a crash."""
    lab = make_lab(n_se=1, n_members=1)
    lab.start_agents()
    lab.wait_applied(lab.publish(lbs(lab)))
    lab.wait_route(P4, ['se1'])
    pid = exabgp_pid(lab, 'se1')
    kills = 0
    while processes.process_alive(pid) and kills < 20:
        helper = netns.wait_for(
            lambda: _api_helper(pid) or not processes.process_alive(pid),
            10, 'an API helper (or ExaBGP gone)')
        if helper is True:
            break
        os.kill(helper, 9)
        kills += 1
        netns.wait_for(lambda: _api_helper(pid) != helper, 10,
                       'the helper replaced or ExaBGP gone')
    t_exit = time.monotonic()
    assert not processes.process_alive(pid), f'{kills} kills'
    netns.wait_for(lambda: lab.state('se1')['helpers']['bgp']['restarts']
                   == 1, 5, 'restart reported')
    assert exabgp_pid(lab, 'se1') != pid
    # The route the new ExaBGP announced (the old session closed with it).
    wait_nexthops(lab, P4, ['se1'], 10)
    back = time.monotonic() - t_exit
    print(f'API helper killed {kills} times -> ExaBGP exited; se1 back in '
          f'the route {back:.2f} s after')
    assert back < BACK_IN_ECMP_BOUND


class Connector:
    """New TCP connections to a VIP, one after the other, from a thread in
    the client's namespace; records (start time, ok, error)."""

    def __init__(self, lab, vip, timeout=1.0):
        self.lab = lab
        self.vip = vip
        self.timeout = timeout
        self.results = []
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def _run(self):
        from pyroute2 import netns as pnetns
        pnetns.setns(self.lab.topo.ns('client'), flags=0)
        self.ready.set()
        family = socket.AF_INET6 if ':' in self.vip else socket.AF_INET
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.settimeout(self.timeout)
                    s.connect((self.vip, 80))
                    s.sendall(b'GET / HTTP/1.0\r\nHost: x\r\n\r\n')
                    data = b''
                    while True:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                ok = b'member=' in data
                self.results.append((t, ok, None if ok else repr(data)))
            except OSError as exc:
                self.results.append((t, False, repr(exc)))
            self.stop.wait(0.005)

    def finish(self):
        self.stop.set()
        self.thread.join(10)

    def since(self, t0):
        return [r for r in self.results if r[0] >= t0]


def _address_flags(ipr, ifname, address):
    idx = ipr.link_lookup(ifname=ifname)[0]
    for a in ipr.get_addr(index=idx):
        if a.get('IFA_ADDRESS') == address:
            return a.get('IFA_FLAGS', a['flags'])
    return None


def _new_flows(lab, se):
    stats = lab.controller.stats.get(f'{se}-{lab.tag}') or {}
    return sum(item.get('total_connections', 0)
               for item in stats.get('listeners', {}).values())


class Sampler:
    """Every 10 ms: the router's next hops for both VIPs and se2's state
    (IPv6 address usable, default routes present), read together."""

    def __init__(self, lab, se):
        self.lab = lab
        self.se = lab.topo.host(se)
        self.samples = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        from tools.lab.bird import kernel_nexthops
        router = netns.ipr(self.lab.topo.router.ns)
        host = netns.ipr(self.se.ns)
        try:
            while not self.stop.is_set():
                t = time.monotonic()
                hops = kernel_nexthops(router, P4) + \
                    kernel_nexthops(router, P6)
                flags = _address_flags(host, self.se.ifname, self.se.ipv6)
                defaults = sum(1 for fam in (socket.AF_INET,
                                             socket.AF_INET6)
                               for r in host.get_routes(family=fam,
                                                        table=254)
                               if r.get('dst_len') == 0)
                usable = flags is not None and not flags & 0x40 and \
                    defaults == 2
                carried = self.se.ipv4 in hops or self.se.ipv6 in hops
                self.samples.append((t, carried, usable))
                self.stop.wait(0.01)
        finally:
            router.close()
            host.close()

    def finish(self):
        self.stop.set()
        self.thread.join(10)


def test_uplink_down_then_up_reannounces_only_when_serviceable(make_lab):
    lab = make_lab(n_se=2, n_members=2)
    lab.start_agents()
    lab.wait_applied(lab.publish(lbs(lab)))
    lab.wait_route(P4, ['se1', 'se2'])
    lab.wait_route(P6, ['se1', 'se2'])
    se2 = lab.topo.host('se2')
    ip2 = lab.topo.ipr('se2')
    # Like a real host: a re-added IPv6 address runs DAD (tentative ~1 s).
    lab.topo.sysctls('se2', {f'net.ipv6.conf.{se2.ifname}.accept_dad': 1,
                             f'net.ipv6.conf.{se2.ifname}.dad_transmits': 1})

    clients = [Connector(lab, VIP4).start(), Connector(lab, VIP6).start()]
    sampler = Sampler(lab, 'se2').start()
    try:
        # -- down: the kernel flushes se2's routes and IPv6 address.
        lab.topo.run('se2', ['ip', 'link', 'set', se2.ifname, 'down'])
        t_down = time.monotonic()
        netns.wait_for(lambda: lab.state('se2').get('serviceable') is False
                       and lab.state('se2').get('announced') == [], 5,
                       'se2 reports unserviceable and announces nothing')
        withdrawn_after = time.monotonic() - t_down
        assert adj_rib_out(lab, 'se2') == []
        wait_nexthops(lab, P4, ['se1'], 5)
        wait_nexthops(lab, P6, ['se1'], 5)
        # The outage was 15 s; the mechanism is the same for 3 s.
        time.sleep(3.0)  # scenario time, not synchronisation
        assert lab.state('se2')['serviceable'] is False

        # -- up: only the connected IPv4 route comes back by itself.
        lab.topo.run('se2', ['ip', 'link', 'set', se2.ifname, 'up'])
        t_up = time.monotonic()
        # A network manager restores the rest, a little later.
        netns.wait_for(lambda: lab.topo.link_up('se2'), 5, 'se2 link up')
        time.sleep(1.0)  # scenario: the address comes back after 1 s
        assert lab.bird.kernel_nexthops(P4) == [lab.topo.host('se1').ipv4]
        lab.topo.run('se2', ['ip', 'addr', 'add', f'{se2.ipv6}/64', 'dev',
                             se2.ifname])
        time.sleep(1.0)  # scenario: the routes come back after 2 s
        assert lab.bird.kernel_nexthops(P4) == [lab.topo.host('se1').ipv4]
        lab.topo.run('se2', ['ip', 'route', 'replace', 'default', 'via',
                             se2.gw4])
        lab.topo.run('se2', ['ip', '-6', 'route', 'replace', 'default',
                             'via', se2.gw6])
        t_routes = time.monotonic()
        netns.wait_for(lambda: not (_address_flags(ip2, se2.ifname,
                                                   se2.ipv6) & 0x40),
                       10, 'IPv6 address out of DAD')
        t_usable = time.monotonic()

        back4 = t_routes + wait_nexthops(lab, P4, ['se1', 'se2'], 20)
        back6 = t_routes + wait_nexthops(lab, P6, ['se1', 'se2'], 20)
        netns.wait_for(lambda: lab.state('se2').get('serviceable') is True,
                       5, 'se2 serviceable reported')
        # se2 takes new flows after it is back (its own stats reports).
        before = _new_flows(lab, 'se2')
        netns.wait_for(lambda: _new_flows(lab, 'se2') > before, 10,
                       'new flows through se2')
        time.sleep(2.0)  # more connections through both SEs
    finally:
        for c in clients:
            c.finish()
        sampler.finish()
    # Never in the router's route after link-up while se2 lacked its
    # routes or a usable IPv6 address.
    early = [(round(t - t_up, 3), usable)
             for t, carried, usable in sampler.samples
             if t >= t_up and carried and not usable]
    assert early == [], early[:5]
    assert any(carried for t, carried, _ in sampler.samples if t >= t_up)
    after = [r for c in clients for r in c.since(t_up)]
    failed = [r for r in after if not r[1]]
    print(f'uplink down/up: withdrawn {withdrawn_after:.2f} s after '
          f'link-down; link-up -> routes restored {t_routes - t_up:.2f} s, '
          f'IPv6 usable {t_usable - t_up:.2f} s, back in ECMP '
          f'{back4 - t_up:.2f} s (v4) {back6 - t_up:.2f} s (v6); new '
          f'connections after link-up: {len(after)}, failed: {len(failed)}')
    assert len(after) > 50
    assert failed == [], failed[:5]
    log = agent_log(lab, 'se2')
    assert 'SE cannot forward, announcing nothing: uplink eth0 is down' \
        in log
