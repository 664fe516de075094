"""Tier 2 scaling through the real product (issue 11): octavia-api and the
`openstack` CLI, dsr-controller on MariaDB, two L4 SE agents (XDP, BGP to
BIRD) and three L7 SE agents (tools/lab/l7_ses.py) in front of plain HTTP
servers -- two L7 SEs serve at first, the third is added under traffic,
then one dies (SIGKILL of its agent and HAProxies).

    client -- router -- se1, se2       L4 SEs: VIP -> Maglev -> IPIP
                   |---- m1, m2, m3    L7 SEs (HAProxy, SNAT); m3 later
                   |---- m4, m5        servers :8080

Under a request loop (a new connection every 50 ms and six long-lived
uploads, tools/lab/traffic_loop.py), with every L7 SE noting the client
ports of the connections it receives (l7_ses.SynRecorder):
1. scale-out: the third L7 SE is in both L4 SEs' rings within 2 s of
   publishing ready, new connections reach it, no request fails, and every
   upload open before it joined completes on its L7 SE (the L4 SEs'
   connection tables keep established flows where they are);
2. SIGKILL: the dead L7 SE leaves both rings within 2 s (its tooz
   heartbeat expires), only connections that went to it fail, every
   request after that succeeds, and dsr-status shows it out of the rings
   and not reporting.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from tooz import coordination

from amphora_agent.dataplane import dataplane as dp_mod
from dsr_wire import membership
from tests.functional.e2e import helpers as h
from tools.lab import l7_ses
from tools.lab import netns
from tools.lab import product_lab as pl
from tools.lab import traffic_loop

VIP, PORT = netns.VIP4, 80
L7, SERVERS = ('m1', 'm2', 'm3'), ('m4', 'm5')
FIRST, NEW = L7[:2], L7[2]
WEB_PORT = 8080
RING_BOUND = 2.0      # issue 11: L7 SE join/leave in the L4 rings
UPLOADS = 6           # long-lived connections of each loop
# dsr-status flags an SE silent for longer (the L7 agents report every
# second: [agent] stats_interval = 1).
STALE_AFTER = 5
# The lab (octavia-api, the controller, 2 L4 and 2 L7 agents) and a third
# L7 agent (Octavia's templater import) take minutes at load 10-30.
pytestmark = pytest.mark.timeout(900)
# The 2 s bound holds while the coordination heartbeats are kept (tooz
# membership_timeout and lock_timeout 1 s, beats every 0.5 s).  A process
# starved past 1 s (seen at load 30 on a 2-core host) loses its leader
# lock or its membership; the change then waits for re-election or
# re-join, and the test holds it to this wider bound, saying so.  Each L4
# SE's moment is the earlier of the test's reading of its maps and its
# logged apply (h.RingTimeline).  This file runs alone in make test-e2e
# (E2E_ALONE): beside a second lab, a CI run of stage 2 on a 2.0 GHz host
# took 4.7 s with no heartbeat lost.
HICCUPS = ('lost the leadership', 'lost our membership')
HICCUP_BOUND = 10.0


@pytest.fixture(scope='module')
def lab():
    with h.product(n_se=2, n_members=5, plain_members=L7 + SERVERS) as lab:
        ses = l7_ses.L7SEs(lab, L7)
        try:
            ses.start(FIRST)
            for name in SERVERS:
                l7_ses.start_plain_server(lab.topo, name, WEB_PORT)
            lab.l7 = ses
            lab.addr = {n: lab.topo.host(n).ipv4 for n in L7 + SERVERS}
            lab.syns = {n: l7_ses.SynRecorder(lab.topo, n, VIP, PORT)
                        for n in L7}
            create_lb(lab)
            yield lab
        finally:
            ses.close()


def create_lb(lab):
    """A tier-2 HTTP load balancer through the CLI, served by the first
    two L7 SEs, every object ACTIVE/ONLINE."""
    h.tier2_flavor(lab)
    h.act(lab, 'create', '--name', 'lb', '--provider', 'dsr', '--flavor',
          'tier2', '--vip-subnet-id', pl.VIP_SUBNET, '--vip-address', VIP,
          timeout=60)
    h.act(lab, 'listener', 'create', '--name', 'web', '--protocol', 'HTTP',
          '--protocol-port', str(PORT), 'lb', timeout=60)
    h.http_pool(lab, 'p-web', ('--listener', 'web'), WEB_PORT,
                {name: lab.addr[name] for name in SERVERS})
    ring_seen(lab, ring_of(lab, FIRST), 30,
              'the first two L7 SEs in the rings')
    h.wait_all_online(lab, 60)


def _ring(dp):
    """{member address: weight} of the VIP's listener in a dataplane."""
    members = {}
    for lst in dp.read_state().to_dict()['listeners']:
        if lst.get('port') == PORT:
            members.update({m['address']: m['weight']
                            for m in lst['members']})
    return members


def rings(lab):
    """{L4 SE: its ring} as its dataplane runs it, read from its pinned
    maps in this process: what dsrctl show prints, without its interpreter
    start (0.5-2 s under load, which would blur join and leave times)."""
    with contextlib.ExitStack() as stack:
        return {se: _ring(stack.enter_context(dp_mod.Dataplane.open(
            os.path.join(lab.agents.pin_root, se), create=False)))
            for se in h.se_names(lab)}


@contextlib.contextmanager
def observer_priority():
    """The calling thread (only: what it starts keeps the default) runs at
    nice -10 while it times the product; the product's processes keep
    their normal priority.  With autogroup scheduling (Debian's default:
    kernel.sched_autogroup_enabled) nice orders threads only within their
    session, and every product process has a session of its own, so the
    readings can still be late on a loaded host: h.RingTimeline takes
    the agents' own logged applies too."""
    tid = threading.get_native_id()
    old = os.getpriority(os.PRIO_PROCESS, tid)
    os.setpriority(os.PRIO_PROCESS, tid, -10)
    try:
        yield
    finally:
        os.setpriority(os.PRIO_PROCESS, tid, old)


def ring_seen(lab, expected, timeout, what):
    """Poll every L4 SE's ring (maps held open) until all are `expected`;
    {SE: the wall time of the read that showed it there} (an upper bound
    of when it ran it: a round of reads takes milliseconds)."""
    seen, last = {}, {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(observer_priority())
        dps = {se: stack.enter_context(dp_mod.Dataplane.open(
            os.path.join(lab.agents.pin_root, se), create=False))
            for se in h.se_names(lab)}

        def ok():
            for se, dp in dps.items():
                if se not in seen:
                    last[se] = _ring(dp)
                    if last[se] == expected:
                        seen[se] = time.time()
            return len(seen) == len(dps)
        try:
            netns.wait_for(ok, timeout, what, interval=0.01)
        except TimeoutError as exc:
            raise AssertionError(f'{exc}; rings: {last}') from None
    return seen


def serving(lab):
    """The L7 SEs in the rings now (weight 1), by name."""
    by_addr = {a: n for n, a in lab.addr.items()}
    found = {frozenset(by_addr[a] for a, w in r.items() if w)
             for r in rings(lab).values()}
    assert len(found) == 1, rings(lab)
    return sorted(found.pop())


def ring_of(lab, names):
    return {lab.addr[n]: 1 for n in names}


class Loop:
    """tools/lab/traffic_loop.py in the client namespace: new connections
    and UPLOADS long-lived ones; result() stops it."""

    def __init__(self, lab):
        self.proc = lab.topo.spawn(
            'client', [*netns.SCRIPT_PYTHON, traffic_loop.__file__, VIP,
                       str(PORT), '--established', str(UPLOADS)],
            ready=r'^STARTED', ready_timeout=60)
        self.uploads = [int(line.split()[1])
                        for line in self.proc.output().splitlines()
                        if line.startswith('ESTABLISHED ')]
        assert len(self.uploads) == UPLOADS, self.proc.output()

    def result(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            rc, out = self.proc.wait_output(120)
        finally:
            netns.kill_proc(self.proc)
        assert rc == 0, out[-2000:]
        return json.loads(out.strip().splitlines()[-1])


def where(lab, ports):
    """{client port: the L7 SEs whose recorder saw its SYN}."""
    seen = {n: lab.syns[n].ports() for n in L7}
    return {p: sorted(n for n in L7 if p in seen[n]) for p in ports}


class ReadyWatch:
    """When an L7 SE publishes ready in its tooz group (what the
    controller reads), polled in a thread from the moment it is made."""

    def __init__(self, lab, se_id):
        self.coordinator = coordination.get_coordinator(
            lab.agents.redis_url, f'observer-{lab.tag}'.encode())
        self.coordinator.start()
        self.group = membership.group_id(lab.l7.group)
        self.se_id = se_id
        self.at = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self):
        with observer_priority():
            self._poll_ready()

    def _poll_ready(self):
        while not self._stop.wait(0.02):
            caps = membership.members(self.coordinator, self.group).get(
                self.se_id) or {}
            if caps.get('ready') is True:
                self.at = time.monotonic()
                return

    def close(self):
        self._stop.set()
        self._thread.join(10)
        self.coordinator.stop()


class Hiccups:
    """Heartbeat losses (HICCUPS) logged by the controller and the L7
    agents from now on."""

    def __init__(self, lab):
        self.logs = [os.path.join(lab.agents.root, 'ctl1.log')] + [
            os.path.join(lab.l7.root, f'{n}.log') for n in L7]
        self.start = {p: self._size(p) for p in self.logs}

    @staticmethod
    def _size(path):
        try:
            return os.path.getsize(path)
        except FileNotFoundError:
            return 0

    def found(self):
        lines = []
        for path in self.logs:
            try:
                with open(path, errors='replace') as f:
                    f.seek(self.start[path])
                    lines += [line.strip()[:200] for line in f
                              if any(x in line for x in HICCUPS)]
            except FileNotFoundError:
                continue
        return lines

    def bound(self):
        """RING_BOUND, or HICCUP_BOUND (printed) if a heartbeat was lost."""
        found = self.found()
        if found:
            print(f'\n!! heartbeat lost (load {os.getloadavg()[0]:.0f}): '
                  f'bound {HICCUP_BOUND} s instead of {RING_BOUND} s: '
                  + ' | '.join(found))
            return HICCUP_BOUND
        return RING_BOUND


def fleet(lab):
    """dsr-status --format json on the controller's configuration."""
    out = subprocess.run(
        [sys.executable, '-m', 'dsr_provider.cmd.status', '--config-file',
         os.path.join(lab.agents.root, 'ctl1.conf'), '--format', 'json',
         '--stale-after', str(STALE_AFTER)],
        capture_output=True, text=True, timeout=60)
    assert out.returncode in (0, 1), out.stdout + out.stderr
    (group,) = [g for g in json.loads(out.stdout)['se_groups']
                if g['se_group'] == lab.l7.group]
    return group


def test_l7_se_added_under_traffic(lab):
    assert serving(lab) == list(FIRST)
    at_servers = {srv: lab.topo.nft_counter(srv, saddr=lab.addr[NEW])
                  for srv in SERVERS}
    loop = Loop(lab)
    watch = None
    try:
        netns.wait_for(lambda: 'MEMBER m4' in loop.proc.output() and
                       'MEMBER m5' in loop.proc.output(), 20,
                       'the loop served by both servers')
        watch = ReadyWatch(lab, lab.l7.se_id(NEW))
        hiccups = Hiccups(lab)
        timeline = h.RingTimeline(lab)
        t0 = time.monotonic()
        started = time.time()
        lab.l7.start_agent(NEW, timeout=240)
        seen = ring_seen(lab, ring_of(lab, L7), 60, f'{NEW} in the rings')
        netns.wait_for(lambda: watch.at is not None, 5,
                       f'{NEW} ready in its tooz group')
        # New connections reach it: the servers see its SNAT address.
        netns.wait_for(lambda: sum(c.packets() for c in
                                   at_servers.values()) > 0, 10,
                       f'{NEW}\'s SNAT address at the servers')
        netns.wait_for(lambda: len(lab.syns[NEW].ports()) >= 5, 10,
                       f'new connections through {NEW}')
    finally:
        if watch is not None:
            watch.close()
        result = loop.result()
    placed = where(lab, loop.uploads)
    new = result['new']
    on_new = [a for a in new['attempts'] if a[1] in lab.syns[NEW].ports()]
    wall = time.time() - time.monotonic()
    # Ready: the earlier of the agent's log of publishing it (written just
    # before its tooz write) and the test's own poll of tooz.
    polled = wall + watch.at
    published = timeline.publishing_ready(NEW, started)
    new_id = lab.l7.se_id(NEW)
    ready_at, joined, how = timeline.change(
        started, seen, lambda ready, _draining: new_id in ready,
        'members_added', detection_follows=True,
        start=polled if published is None else min(published, polled))
    print(f'\nL7 SE {NEW} started -> ready {ready_at - wall - t0:.2f} s, '
          f'ready -> in both L4 rings {joined:.2f} s '
          f'({how}); loop: '
          f'{new["ok"]} ok, {new["failed"]} failed, {len(on_new)} through '
          f'{NEW}; uploads on {placed}')
    assert new['failed'] == 0, new['errors']
    assert on_new and all(a[3] is None for a in on_new), on_new
    # The uploads stayed on the L7 SE they started on, and completed.
    assert all(len(p) == 1 and p[0] in FIRST for p in placed.values()), \
        placed
    for est in result['established_all']:
        assert est['ok'], est
    assert joined <= hiccups.bound(), joined
    h.wait_all_active(lab)


def test_l7_se_killed_under_traffic(lab):
    running = serving(lab)
    assert len(running) >= 2, running
    for rec in lab.syns.values():
        rec.clear()
    loop = Loop(lab)
    try:
        netns.wait_for(lambda: all(lab.syns[n].ports() - set(loop.uploads)
                                   for n in running), 20,
                       'new connections through every L7 SE')
        placed = where(lab, loop.uploads)
        # The victim: the L7 SE holding the most uploads.
        victim = max(running, key=lambda n: sum(
            1 for p in placed.values() if p == [n]))
        survivors = [n for n in running if n != victim]
        hiccups = Hiccups(lab)
        timeline = h.RingTimeline(lab)
        t0 = lab.l7.kill_agent(victim)
        killed_wall = time.time() - (time.monotonic() - t0)
        seen = ring_seen(lab, ring_of(lab, survivors), 30,
                         f'{victim} out of the rings')
        # Requests that start after the test saw the change must succeed.
        bound_wall = max(seen.values())
        # The loop goes on through the survivors after it left.
        before = sum(len(lab.syns[n].ports()) for n in survivors)
        netns.wait_for(lambda: sum(len(lab.syns[n].ports())
                                   for n in survivors) >= before + 20, 20,
                       '20 more connections through the survivors')
    finally:
        result = loop.result()
    victim_ports = lab.syns[victim].ports()
    new = result['new']
    failed = [a for a in new['attempts'] if a[3] is not None]
    after = [a for a in new['attempts'] if a[0] > bound_wall]
    uploads = {est['port']: est for est in result['established_all']}
    on_victim = [(p, uploads[p]['ok']) for p, n in placed.items()
                 if n == [victim]]
    victim_id = lab.l7.se_id(victim)
    _, left, how = timeline.change(
        killed_wall, seen, lambda ready, _draining: victim_id not in ready,
        'members_removed')
    print(f'\nL7 SE {victim} killed at {killed_wall:.3f} (SIGKILL, agent and '
          f'HAProxy) -> out of both L4 rings {left:.2f} s '
          f'({how}); '
          f'loop: {new["ok"]} ok, {len(failed)} failed (all through '
          f'{victim}), {len(after)} after it left; uploads on {placed}, '
          f'through {victim}: {on_victim}')
    # Only connections that went to the dead L7 SE failed ...
    assert all(a[1] in victim_ports for a in failed), (failed, victim)
    assert all(a[0] >= killed_wall - 2.5 for a in failed), failed
    for port, est in uploads.items():
        if placed[port] != [victim]:
            assert est['ok'], (est, placed)
    # ... and every request after it left the rings succeeded.
    assert after and all(a[3] is None for a in after), after
    assert left <= hiccups.bound(), left

    # The controller's fleet view: out of the L4 rings, not reporting.
    last = {}

    def gone():
        group = fleet(lab)
        last.update(group)
        ids = [m['se_id'] for m in group['l7_ses_in_l4_rings']]
        ses = {s['se_id']: s for s in group['ses']}
        dead = ses.get(lab.l7.se_id(victim), {})
        return (sorted(ids) == sorted(lab.l7.se_id(n) for n in survivors)
                and any(p.startswith('no report for')
                        for p in dead.get('problems', ()))
                and not any(ses[lab.l7.se_id(n)]['problems']
                            for n in survivors))
    try:
        netns.wait_for(gone, STALE_AFTER + 20, f'dsr-status: {victim} gone',
                       interval=0.5)
    except TimeoutError as exc:
        raise AssertionError(f'{exc}; {json.dumps(last)[:3000]}') from None
    h.wait_all_active(lab)
