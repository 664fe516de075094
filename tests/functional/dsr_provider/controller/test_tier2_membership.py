"""Automatic L7 SE membership through a real dsr-controller (MariaDB, a
private RabbitMQ vhost, Redis with a private tooz namespace): L7 SEs join
tooz group octavia-dsr.<l7 group> as the contract says, and the L4 group's
snapshot -- what get_config serves the L4 SEs -- lists a ready one within
2 s, gives a draining one weight 0 and drops one that leaves or dies (its
heartbeat expires: membership_timeout 1 s)."""

import json
import os
import re
import signal
import sys
import textwrap
import time

from cryptography.hazmat.primitives.asymmetric import ed25519
import pytest

from amphora_agent.l7 import wall_steps
from dsr_provider.controller import db as db_mod
from dsr_provider.controller import enrolment
from dsr_provider.controller import models
from dsr_provider.controller import store as store_mod
from dsr_provider.controller import tier2
from dsr_wire import membership
from tests.functional.dsr_provider.controller.test_controller_runtime \
    import FreshDeployment
from tests.unit.dsr_provider.controller.test_store_tier2 import graph
from tests.unit.dsr_provider.controller.test_store_tier2 import L4
from tests.unit.dsr_provider.controller.test_store_tier2 import L7G
from tools.lab import agent_lab
from tools.lab import netns

BOUND = 2.0     # issue 11: L4 rings follow L7 SE join/leave within 2 s


def caps(address, ready=True, draining=False):
    return {'role': 'tier2', 'tunnel_addresses': {'4': address},
            'ready': ready, 'draining': draining}


@pytest.fixture
def deployment(tmp_path):
    dep = FreshDeployment(str(tmp_path))
    try:
        dep.prepare()
        upgrade = dep.db_manage('upgrade')
        out = upgrade.communicate(timeout=300)
        assert upgrade.returncode == 0, out
        yield dep
    finally:
        dep.close()


def _members(store):
    """{member id: weight} of listener l2's pool in the L4 snapshot."""
    (lb,) = store.snapshot(L4)['load_balancers']
    pool = {lst['id']: lst for lst in lb['listeners']}['l2']['pool']
    return {m['id']: m['weight'] for m in pool['members']}


def _enrolled_and_stated(store):
    """se-a (198.51.100.1) and se-b (.2) as the real L7 agents are: only
    SEs enrolled in the L7 group count (docs/security.md), and only once
    they reported (signed), at the tunnel addresses of their report -- as
    stored from report_state."""
    for se_id, address in (('se-a', '198.51.100.1'),
                           ('se-b', '198.51.100.2')):
        enrolment.enrol(store.db, L7G, se_id,
                        ed25519.Ed25519PrivateKey.generate().public_key())
        store.record_agent(se_id, L7G, sent=('report_state', time.time()),
                           applied_generation=0,
                           tunnel_addresses={'4': address})


def _leading(deployment):
    """Launch controller ctl1 and wait for it to lead; its tooz URL."""
    ctl = deployment.launch('ctl1')
    ctl.wait_for_line(r'^READY', 180)
    netns.wait_for(lambda: 'is the leader' in deployment.log('ctl1'), 60,
                   'the controller leading')
    return f'{agent_lab.REDIS}&namespace=dsrrt-{deployment.tag}'


def _sealing_se_c(deployment, tmp_path):
    """(store, key file, tooz URL): lb2 stored, se-c enrolled in the L7
    group with a key of its own (to seal with, as the L7 agent does), a
    controller leading."""
    from dsr_wire import auth
    store = store_mod.Store(db_mod.Database(deployment.db_url), 'default')
    store.create_loadbalancer(graph())
    key = str(tmp_path / 'se-c.key')
    auth.generate_key(key)
    enrolment.enrol(store.db, L7G, 'se-c',
                    auth.load_private_key(key).public_key())
    return store, key, _leading(deployment)


def _end(store, proc, impostor):
    """A test's end, failed or not: the impostor's tooz member, the L7 SE
    process, the store's connections."""
    if impostor is not None:
        impostor.stop()
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    store.db.engine.dispose()


def _timed(predicate, bound, what, started=None):
    """Seconds from started (default: now) until predicate() holds; fails
    past bound."""
    started = time.monotonic() if started is None else started
    netns.wait_for(predicate, bound - (time.monotonic() - started), what)
    return time.monotonic() - started


def _entry(namespace_url, se_id='se-c'):
    """se_id's tooz entry in the L7 group, as the controller reads it."""
    observer = membership.coordinator(namespace_url, b'observer')
    observer.start()
    try:
        return observer.get_member_capabilities(
            membership.group_id(L7G), se_id.encode()).get()
    finally:
        observer.stop()


# An L7 SE's membership; with a key, sealed as the L7 agent seals; with a
# file too, its clock is ahead of ours by the seconds the file says.
_MEMBER = textwrap.dedent('''
    import json, sys, threading, time
    from dsr_wire import auth, capability_seal, membership
    sealer = None
    if len(sys.argv) > 5:       # the L7 agent's key: sealed, as it does
        clock = time.time
        if len(sys.argv) > 6:
            def clock(path=sys.argv[6]):
                with open(path) as f:
                    return time.time() + float(f.read())
        sealer = capability_seal.Sealer(auth.Signer(sys.argv[5]),
                                        sys.argv[2], sys.argv[3],
                                        clock=clock)
    m = membership.Membership(sys.argv[1], sys.argv[2], sys.argv[3],
                              json.loads(sys.argv[4]), sealer=sealer)
    m.start()
    print('joined', flush=True)
    threading.Event().wait()
''')


def test_l7_ses_join_drain_leave_and_expire(deployment):
    store = store_mod.Store(db_mod.Database(deployment.db_url), 'default')
    store.create_loadbalancer(graph())
    _enrolled_and_stated(store)
    url = _leading(deployment)
    measured = {}
    se_a = membership.Membership(url, 'se-a', L7G, caps('198.51.100.1'))
    try:
        se_a.start()
        measured['join'] = _timed(
            lambda: _members(store) == {'l7se:se-a@l2': 1}, BOUND,
            'se-a in the L4 pool')

        # As the L7 agent drains: ready false, draining true.
        se_a.update(caps('198.51.100.1', ready=False, draining=True))
        measured['drain'] = _timed(
            lambda: _members(store) == {'l7se:se-a@l2': 0}, BOUND,
            'se-a at weight 0')

        se_a.update(caps('198.51.100.1', ready=False))
        measured['not ready'] = _timed(
            lambda: _members(store) == {}, BOUND, 'se-a out (not ready)')
        se_a.update(caps('198.51.100.1'))
        netns.wait_for(lambda: _members(store) == {'l7se:se-a@l2': 1},
                       BOUND, 'se-a back')
    finally:
        left = time.monotonic()
        se_a.stop()
    measured['leave'] = _timed(lambda: _members(store) == {}, BOUND,
                               'se-a left the L4 pool', started=left)

    # An L7 SE that dies says nothing: its heartbeat expires (1 s).
    proc = netns.Proc([sys.executable, '-c', _MEMBER, url, 'se-b', L7G,
                       json.dumps(caps('198.51.100.2'))],
                      cwd=os.getcwd())
    proc.wait_for_line('^joined', 60)
    netns.wait_for(lambda: _members(store) == {'l7se:se-b@l2': 1}, BOUND,
                   'se-b in the L4 pool')
    killed = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    measured['expiry'] = _timed(lambda: _members(store) == {},
                                BOUND + 1.0, 'se-b expired from the pool',
                                started=killed)
    print('L7 SE membership -> L4 snapshot (s):',
          {k: round(v, 2) for k, v in measured.items()})
    # Every change was a new L4 generation, and the agents were told.
    log = deployment.log('ctl1')
    assert log.count(f'L7 group {L7G}: ready L7 SEs now') >= 7, log[-3000:]

    def told():
        with store.db.session() as s:
            group = s.get(models.SEGroup, L4)
            return group.published_generation == group.generation >= 8
    netns.wait_for(told, BOUND, 'config_changed published')
    store.db.engine.dispose()


def test_a_copy_of_a_dead_l7_ses_entry_does_not_keep_it_in_the_pools(
        deployment, tmp_path):
    """The coordination backend is not authenticated.  An L7 SE that seals
    its capabilities (as the L7 agent does with authentication on) is
    SIGKILLed, and whoever reaches Redis keeps its entry alive: joins as
    that member with the last capabilities it published, and heartbeats.
    The controller leaves it out of the L4 pools once its seal has not
    moved on for SEAL_STALE_AFTER (before, it stayed for as long as the
    copy was kept alive)."""
    from dsr_provider.controller import tier2
    store, key, url = _sealing_se_c(deployment, tmp_path)
    proc = netns.Proc([sys.executable, '-c', _MEMBER, url, 'se-c', L7G,
                       json.dumps(caps('198.51.100.3')), key],
                      cwd=os.getcwd())
    impostor = None
    try:
        proc.wait_for_line('^joined', 60)
        group = membership.group_id(L7G)
        observer = membership.coordinator(url, b'observer')
        observer.start()
        try:
            copy = observer.get_member_capabilities(group, b'se-c').get()
        finally:
            observer.stop()
        # Its signed report_state, as the L7 agent sends it: the run that
        # seals.
        store.record_agent('se-c', L7G, sent=('report_state', time.time()),
                           applied_generation=0,
                           seal_boot=json.loads(copy)['dsr_seal']['boot'],
                           tunnel_addresses={'4': '198.51.100.3'})
        netns.wait_for(lambda: _members(store) == {'l7se:se-c@l2': 1},
                       BOUND, 'se-c in the L4 pool')
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        killed = time.monotonic()
        impostor = membership.coordinator(url, b'se-c')
        impostor.start(start_heart=True)
        membership.join(impostor, group, copy)
        # Still listed (the copy heartbeats) and the same entry ...
        assert b'se-c' in impostor.get_members(group).get()
        # ... out once the seal has not moved on for SEAL_STALE_AFTER.
        gone = _timed(lambda: _members(store) == {},
                      tier2.SEAL_STALE_AFTER + BOUND,
                      'se-c out of the L4 pool', started=killed)
        assert b'se-c' in impostor.get_members(group).get()
        assert gone > tier2.SEAL_STALE_AFTER - 1.5, gone
        netns.wait_for(lambda: 'have not been signed again' in
                       deployment.log('ctl1'), BOUND, 'the warning')
        print(f'a copied entry of a dead L7 SE left the pool after '
              f'{gone:.2f} s')
    finally:
        _end(store, proc, impostor)


def _damping_deployment(deployment, half_life):
    """(store, tooz URL, se-a's membership): flap damping of the given
    half-life, suppressed at 2, back below 1 (the defaults: 60 s, 2.5,
    1.5); lb2 stored, se-a and se-b enrolled and stated, ctl1 leading,
    se-a in the L4 pool."""
    deployment.controller_conf = (f'l7_flap_half_life = {half_life}\n'
                                  'l7_flap_suppress = 2\n'
                                  'l7_flap_reuse = 1\n')
    store = store_mod.Store(db_mod.Database(deployment.db_url), 'default')
    store.create_loadbalancer(graph())
    _enrolled_and_stated(store)
    url = _leading(deployment)
    stable = membership.Membership(url, 'se-a', L7G, caps('198.51.100.1'))
    stable.start()
    try:
        netns.wait_for(lambda: _members(store) == {'l7se:se-a@l2': 1},
                       BOUND, 'se-a in the L4 pool')
    except BaseException:
        stable.stop()
        raise
    return store, url, stable


def _crash_until_kept_out(deployment, store, url, name='ctl1'):
    """se-b joins ready and dies (no draining) until the leader `name`
    keeps it out; returns the cycles it took."""
    both = {'l7se:se-a@l2': 1, 'l7se:se-b@l2': 1}
    cycles = 0
    while 'without draining again' not in deployment.log(name):
        assert cycles < 6, deployment.log(name)[-3000:]
        cycles += 1
        flappy = membership.Membership(url, 'se-b', L7G,
                                       caps('198.51.100.2'))
        flappy.start()
        try:
            netns.wait_for(lambda: _members(store) == both, BOUND,
                           f'se-b in the L4 pool ({cycles})')
        finally:
            flappy.stop()       # leaves without draining: a flap
        netns.wait_for(lambda: _members(store) == {'l7se:se-a@l2': 1},
                       BOUND, f'se-b out of the L4 pool ({cycles})')
    return cycles


def test_a_crash_looping_l7_se_is_kept_out_until_it_stays_up(deployment):
    """Flap damping (l7_damping.py): an L7 SE that keeps leaving the L4
    pools without draining is kept out of them when it rejoins, while
    another L7 SE serves, until its penalty has decayed; before, each
    cycle was two new generations of the L4 groups and a share of new
    connections sent to an SE about to die.  Half-life 4 s, suppressed
    at 2, back below 1 here (the defaults: 60 s, 2.5, 1.5)."""
    store, url, stable = _damping_deployment(deployment, half_life=4)
    both = {'l7se:se-a@l2': 1, 'l7se:se-b@l2': 1}
    flappy = None
    try:
        cycles = _crash_until_kept_out(deployment, store, url)
        assert cycles >= 2
        rejoined = time.monotonic()
        flappy = membership.Membership(url, 'se-b', L7G,
                                       caps('198.51.100.2'))
        flappy.start()
        netns.wait_for(lambda: 'se-b of L7 group' in deployment.log('ctl1')
                       and 'is back: kept out' in deployment.log('ctl1'),
                       BOUND, 'se-b seen and kept out')
        assert _members(store) == {'l7se:se-a@l2': 1}
        # Staying up, it is back once the penalty (2 to 3) decays below 1:
        # 4 to 6.3 s.
        back = _timed(lambda: _members(store) == both, 10.0,
                      'se-b back in the L4 pool', started=rejoined)
        assert back > 2.0, back
        print(f'a crash loop of {cycles} deaths kept se-b out for '
              f'{back:.1f} s')
    finally:
        if flappy is not None:
            flappy.stop()
        stable.stop()
        store.db.engine.dispose()


def test_a_new_leader_keeps_a_crash_looping_l7_se_out(deployment):
    """The leader keeps the flap penalties in the database: after it dies,
    the next leader goes on from them, and the crash-looping SE stays out
    of the L4 pools for the rest of its penalty.  Before, the new leader
    started with none and let it straight back in.  Half-life 8 s,
    suppressed at 2, back below 1: about 8 to 13 s after the last death."""
    store, url, stable = _damping_deployment(deployment, half_life=8)
    flappy = None
    try:
        second = deployment.launch('ctl2')
        second.wait_for_line(r'^READY', 180)
        _crash_until_kept_out(deployment, store, url)
        last_death = time.monotonic()
        # Kept by the leader: se-b, kept out.  Written once the pools
        # are stored (flush), after the log line: polled (rehearsal 181
        # read it a moment before, on a loaded host).
        netns.wait_for(lambda: [
            (se_id, suppressed) for _g, se_id, _p, _at, suppressed
            in store.flap_penalties()] == [('se-b', True)], BOUND,
            "the leader's kept penalty of se-b")
        os.kill(deployment.procs[0].pid, signal.SIGKILL)
        netns.wait_for(lambda: 'is the leader' in deployment.log('ctl2'),
                       30, 'ctl2 leading')
        flappy = membership.Membership(url, 'se-b', L7G,
                                       caps('198.51.100.2'))
        flappy.start()
        netns.wait_for(lambda: 'kept out by a previous leader' in
                       deployment.log('ctl2') and
                       'is back: kept out' in deployment.log('ctl2'),
                       BOUND + 3, 'ctl2 keeps se-b out')
        assert _members(store) == {'l7se:se-a@l2': 1}
        back = _timed(lambda: len(_members(store)) == 2, 20.0,
                      'se-b back in the L4 pool', started=last_death)
        assert back > 6.0, back
        print(f'kept out {back:.1f} s after its last death, across a '
              'change of leader')
    finally:
        if flappy is not None:
            flappy.stop()
        stable.stop()
        store.db.engine.dispose()


def test_a_leader_new_to_a_run_is_not_shown_its_recorded_seals_late(
        deployment, tmp_path):
    """Whoever can write Redis and keep an L7 SE's own writes from it
    records the SE's seals, and after it died shows them, one a second, to
    a leader that never saw its run (elected since: here, a run sealed in
    another namespace) 10 s late -- within auth_window, twice
    SEAL_STALE_AFTER.  The leader holds the run's first seal to the lag
    of the SE's signed report_state: the SE stays out of the L4 pools.
    A live SE (a new run, reported) is in within the bound: its seals are
    as late as its report, on the same clock."""
    store, key, url = _sealing_se_c(deployment, tmp_path)
    group = membership.group_id(L7G)

    def sealing_se(namespace_url):
        """(process, its first entry) of a sealing L7 SE se-c, reported
        (signed state naming its run, stored now)."""
        proc = netns.Proc([sys.executable, '-c', _MEMBER, namespace_url,
                           'se-c', L7G, json.dumps(caps('198.51.100.3')),
                           key], cwd=os.getcwd())
        proc.wait_for_line('^joined', 60)
        first = _entry(namespace_url)
        store.record_agent('se-c', L7G, sent=('report_state', time.time()),
                           applied_generation=0,
                           seal_boot=json.loads(first)['dsr_seal']['boot'],
                           tunnel_addresses={'4': '198.51.100.3'})
        return proc, first

    recorded_url = f'{url}-recorded'
    proc, first = sealing_se(recorded_url)
    recording = [first]
    impostor = None
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            entry = _entry(recorded_url)
            if entry != recording[-1]:
                recording.append(entry)
            time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        assert len(recording) >= 4, len(recording)
        time.sleep(10 - (time.time() -
                         json.loads(first)['dsr_seal']['ts']))
        impostor = membership.coordinator(url, b'se-c')
        impostor.start(start_heart=True)
        membership.join(impostor, group, recording[0])
        shown = time.monotonic()
        for entry in recording:
            impostor.update_capabilities(group, entry).get()
            moved_on = time.monotonic() + 1.0
            while time.monotonic() < moved_on:
                assert _members(store) == {}, (
                    f'in the pool {time.monotonic() - shown:.2f} s after '
                    f'its recording was first shown')
                time.sleep(0.05)
        assert re.search(r'its seal is shown (9|10|11) s later',
                         deployment.log('ctl1'))
        impostor.stop()
        impostor = None
        # A live SE, a new run: in at once.
        proc, _ = sealing_se(url)
        joined = _timed(lambda: _members(store) == {'l7se:se-c@l2': 1},
                        BOUND, 'the live se-c in the L4 pool')
        print(f'{len(recording)} recorded seals shown 10 s late to a '
              f'leader new to the run: never in the pool; a live SE in '
              f'after {joined:.2f} s')
    finally:
        _end(store, proc, impostor)


def test_an_l7_se_whose_clock_goes_back_stays_in_the_pools(
        deployment, tmp_path):
    """An L7 SE whose clock ran 6 s ahead is set right (NTP steps it
    back): its seals look 6 s late to the leader -- as a recording shown
    late would -- and so does the signed report_state its agent sends at
    once and again 2 s later (amphora_agent/l7/wall_steps.py; stored here
    as the endpoint stores it).  The leader follows the SE's new lag: it
    never leaves the L4 pool.  Then its clock, right, is stepped back 6 s:
    the controller drops its reports until its clock has passed the last
    one's time (the agent reports again then), so it is out of the pool
    for a few seconds, and back.  Before, it left after SEAL_STALE_AFTER
    for good, until its agent restarted."""
    store, key, url = _sealing_se_c(deployment, tmp_path)
    ahead = tmp_path / 'ahead'
    ahead.write_text('6')
    proc = netns.Proc([sys.executable, '-c', _MEMBER, url, 'se-c', L7G,
                       json.dumps(caps('198.51.100.3')), key, str(ahead)],
                      cwd=os.getcwd())

    def report():
        store.record_agent('se-c', L7G, sent=(
            'report_state', time.time() + float(ahead.read_text())),
            applied_generation=0, seal_boot=boot,
            tunnel_addresses={'4': '198.51.100.3'})

    def step(seconds):
        """The SE's clock moved: its agent reports at once, and when
        again (monotonic)."""
        ahead.write_text(str(float(ahead.read_text()) + seconds))
        report()
        return time.monotonic() + wall_steps.again_after(seconds)

    def in_pool():
        return _members(store) == {'l7se:se-c@l2': 1}
    try:
        proc.wait_for_line('^joined', 60)
        boot = json.loads(_entry(url))['dsr_seal']['boot']
        report()
        _timed(in_pool, BOUND, 'se-c in the L4 pool')
        stepped = time.monotonic()
        again = step(-6.0)
        # Past the time after which it left before (5.2 s).
        while again is not None or \
                time.monotonic() < stepped + tier2.SEAL_STALE_AFTER + 2:
            assert in_pool(), (
                f'out of the pool {time.monotonic() - stepped:.2f} s '
                f'after its clock went back')
            if again is not None and time.monotonic() >= again:
                report()
                again = None
            time.sleep(0.1)
        assert 'its clock went back' in deployment.log('ctl1')
        stepped = time.monotonic()
        again = step(-6.0)
        out = None
        while out is None or not in_pool():
            now = time.monotonic()
            assert now < again + BOUND, (
                f'not back in the pool {now - stepped:.2f} s after its '
                f'clock, right, went back 6 s (out: {out})')
            if out is None and not in_pool():
                out = now
            if now >= again:
                report()
                again = float('inf')
            time.sleep(0.1)
        print(f'a clock 6 s ahead set right: never out of the pool; a '
              f'right clock stepped back 6 s: out {out - stepped:.2f} s '
              f'after the step, back after '
              f'{time.monotonic() - stepped:.2f} s')
    finally:
        _end(store, proc, None)
