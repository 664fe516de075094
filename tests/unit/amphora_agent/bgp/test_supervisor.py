"""BgpSupervisor: death noticed through a real pidfd, restarts with
back-off, state for report_state.

The speaker is faked at its boundary (start/process/log_tail); the process
it "runs" is a real one (sleep), killed with SIGKILL like a crashed ExaBGP.
"""

import signal
import subprocess
import threading
import time

import pytest

from amphora_agent.bgp import speaker as speaker_mod
from amphora_agent.bgp import supervisor as sup_mod
from amphora_agent import processes


class FakeSpeaker:
    def __init__(self):
        self.procs = []
        self.fail = 0           # start() raises this many times
        self.starts = 0

    def start(self):
        self.starts += 1
        if self.fail:
            self.fail -= 1
            raise speaker_mod.BgpError('ExaBGP exited while starting')
        if self.procs and self.procs[-1].poll() is None:
            return 'adopted'
        self.procs.append(subprocess.Popen(['sleep', '60']))
        return 'started'

    def process(self):
        if not self.procs or self.procs[-1].poll() is not None:
            return None
        pid = self.procs[-1].pid
        return pid, processes.process_start_time(pid)

    @property
    def pid(self):
        return self.procs[-1].pid if self.procs else None

    def log_tail(self, n=30):
        return 'INFO hello\nCRITICAL boom: something broke\n'

    def kill(self):
        proc = self.procs[-1]
        proc.send_signal(signal.SIGKILL)
        proc.wait()          # the test is the parent; ExaBGP's is init

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def speaker():
    s = FakeSpeaker()
    yield s
    s.close()


def test_kill9_wakes_the_agent_and_restarts_at_once(speaker):
    woken = threading.Event()
    sup = sup_mod.BgpSupervisor(speaker, on_event=woken.set)
    try:
        assert sup.start() == 'started'
        assert sup.check() is False and not woken.is_set()
        first = speaker.pid
        t0 = time.monotonic()
        speaker.kill()
        assert woken.wait(5), 'pidfd did not report the death'
        noticed = time.monotonic() - t0
        assert noticed < 1.0, noticed
        assert sup.check() is True               # restarted in this call
        assert speaker.pid != first and speaker.process() is not None
        report = sup.report()
        assert report['state'] == 'running' and report['restarts'] == 1
        assert f'ExaBGP pid {first} exited' in report['last_error']
        assert 'CRITICAL boom' in report['last_error']
    finally:
        sup.close()


def test_failed_restarts_back_off_and_recover(speaker):
    clock = Clock()
    sup = sup_mod.BgpSupervisor(speaker, max_delay=4.0, reset_after=60.0,
                                clock=clock)
    try:
        sup.start()
        clock.now += 100
        speaker.kill()
        speaker.fail = 3
        tries = []
        for _ in range(40):              # 40 ticks of 0.5 s
            before = speaker.starts
            restarted = sup.check()
            if speaker.starts != before:
                tries.append(clock.now)
            if restarted:
                break
            assert sup.report()['state'] == 'restarting'
            clock.now += 0.5
        # Immediately, then after 1, 2 and 4 s.
        assert [t - tries[0] for t in tries] == [0.0, 1.0, 3.0, 7.0]
        assert sup.report() == {
            'state': 'running', 'restarts': 1,
            'last_error': 'restart failed: ExaBGP exited while starting'}
    finally:
        sup.close()


def test_start_failure_is_retried_not_raised(speaker):
    clock = Clock()
    speaker.fail = 1
    sup = sup_mod.BgpSupervisor(speaker, clock=clock)
    try:
        assert sup.start() is None
        assert sup.report()['state'] == 'restarting'
        assert sup.check() is True
        assert sup.report()['state'] == 'running'
    finally:
        sup.close()


def test_suspect_with_a_live_process_adopts_without_counting(speaker):
    woken = threading.Event()
    sup = sup_mod.BgpSupervisor(speaker, on_event=woken.set)
    try:
        sup.start()
        sup.suspect()
        assert woken.is_set()
        # start() adopted and re-synced it: the agent reads what it
        # announces again (it forgot when the command failed).
        assert sup.check() is True
        assert sup.check() is False
        assert sup.report()['restarts'] == 0
        assert speaker.starts == 2
    finally:
        sup.close()


def test_close_stops_the_watcher_without_waking(speaker):
    woken = threading.Event()
    sup = sup_mod.BgpSupervisor(speaker, on_event=woken.set)
    sup.start()
    watchers = [t for t in threading.enumerate()
                if t.name.startswith('bgp-watch-')]
    assert watchers
    sup.close()
    for t in watchers:
        t.join(5)
        assert not t.is_alive()
    speaker.kill()
    assert not woken.wait(0.2)
