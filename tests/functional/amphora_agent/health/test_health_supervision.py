"""The health checker's probing loop dies of an injected exception inside
an SE namespace; the supervising thread (as the agent's worker does)
restarts it there, and real probes across the router go on deciding the
member's status."""

import os
import threading

import pytest

from amphora_agent.health import monitor as hm
from tools.lab import netns

pytestmark = pytest.mark.root

PORT = 8080


def _netns_inode(tid):
    return os.stat(f'/proc/self/task/{tid}/ns/net').st_ino


def test_killed_probing_loop_is_restarted_in_the_se_namespace(
        make_topology):
    topo = make_topology(n_se=1, n_members=1)
    m1 = topo.host('m1')
    server = topo.start_http_server('m1', binds=(m1.ipv4,), port=PORT)
    events = []
    cond = threading.Condition()

    def on_change(key, old, new):
        with cond:
            events.append((key, old, new))
            cond.notify_all()

    checker = hm.HealthChecker(on_change=on_change)
    stop = threading.Event()
    ready = threading.Event()
    restarted = []

    def worker():
        # Like the agent's worker: enter the SE namespace, start the
        # checker, supervise it on every loop iteration.
        from pyroute2 import netns as pnetns
        pnetns.setns(topo.ns('se1'), flags=0)
        checker.set_targets({'m1': hm.Target(m1.ipv4, PORT, hm.MonitorSpec(
            type='TCP', delay=0.2, timeout=0.2, max_retries=1,
            max_retries_down=1))})
        checker.start()
        ready.set()
        while not stop.is_set():
            if checker.supervise():
                restarted.append(checker._thread.native_id)
            stop.wait(0.05)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        se_inode = os.stat(netns.netns_path(topo.ns('se1'))).st_ino
        assert _netns_inode(checker._thread.native_id) == se_inode

        def status_is(status):
            return checker.status('m1') == status
        netns.wait_for(lambda: status_is('ONLINE'), 5, 'm1 ONLINE')

        old = checker._thread

        def boom():
            raise SystemExit('injected')
        checker._loop.call_soon_threadsafe(boom)
        netns.wait_for(lambda: restarted, 5, 'probing loop restarted')
        assert not old.is_alive()
        report = checker.report()
        assert report == {'state': 'running', 'restarts': 1,
                          'last_error': 'health probing loop thread died: '
                                        'SystemExit: injected'}
        # The new loop thread lives in the SE namespace too ...
        assert _netns_inode(restarted[0]) == se_inode
        # ... and its probes decide: stop the member's server, then back.
        netns.kill_proc(server)
        netns.wait_for(lambda: status_is('ERROR'), 5, 'm1 ERROR')
        topo.start_http_server('m1', binds=(m1.ipv4,), port=PORT)
        netns.wait_for(lambda: status_is('ONLINE'), 5, 'm1 ONLINE again')
        # on_change follows the status from the notifier thread (the
        # monitor's doc): the last event is waited for, not assumed.
        with cond:
            assert cond.wait_for(
                lambda: events[-1] == ('m1', 'ERROR', 'ONLINE'), 5), events
            assert ('m1', 'ONLINE', 'ERROR') in events
    finally:
        stop.set()
        thread.join(5)
        checker.stop()
