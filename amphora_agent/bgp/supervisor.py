"""Keeps the SE's ExaBGP running: notices its death, restarts it with
back-off and re-announces the agent's intent.

    sup = BgpSupervisor(speaker, on_event=agent_wake, max_delay=30,
                        reset_after=60)
    sup.start()              # start or adopt ExaBGP, watch its PID
    sup.check()              # from the agent's loop: restart when due;
                             # True when ExaBGP was (re)started or
                             # adopted again after suspect()
    sup.report()             # {'state', 'restarts', 'last_error'}
    sup.close()              # stop watching (ExaBGP keeps running)

Why in the agent and not a service manager: ExaBGP must outlive the agent
(a restarted agent adopts it, see speaker.py) and the agent is the one that
knows what to announce; the agent therefore supervises the detached process
it adopted or started.  A service manager would need its own unit with its
own restart policy competing with the agent's adopt/restart logic, and this
machine class has none (PID 1 is not systemd).

Detection: a pidfd (pidfd_open, Linux >= 5.3) of the recorded PID becomes
readable the moment ExaBGP exits -- for a process that is not our child
too.  A small thread waits on it and calls ``on_event`` (the agent's wake),
so the death is handled by the agent's own worker thread within
milliseconds, not at its next tick.  The exit status belongs to ExaBGP's
parent (init), so the reason logged is the tail of ExaBGP's log.

Restart: ``speaker.start()`` launches a new ExaBGP and announces the
persisted intent (what the agent last asked for), so routes are back as
soon as the BGP sessions are.  Timing of the tries: supervision.HelperRecord.
"""

import os
import select
import threading
import time

from oslo_log import log as logging

from amphora_agent.bgp import speaker as speaker_mod
from amphora_agent import processes
from amphora_agent import supervision

LOG = logging.getLogger(__name__)


def _last_words(log_tail, n=3):
    lines = [ln.strip()[:200] for ln in log_tail.splitlines() if ln.strip()]
    return ' | '.join(lines[-n:])


class BgpSupervisor:
    def __init__(self, speaker, on_event=None, max_delay=30.0,
                 reset_after=60.0, clock=time.monotonic):
        self.speaker = speaker
        self.on_event = on_event
        self.record = supervision.HelperRecord('bgp', max_delay=max_delay,
                                               reset_after=reset_after)
        self._clock = clock
        self._watched = None        # (pid, start_time)
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._closed = False
        self._suspect = False

    # -- lifecycle ------------------------------------------------------

    def start(self):
        """Start or adopt ExaBGP.  A runtime failure is recorded and
        retried by check() with back-off (the agent keeps running without
        BGP meanwhile); configuration errors raise."""
        try:
            outcome = self.speaker.start()
        except speaker_mod.BgpError as exc:
            LOG.error('BGP: ExaBGP did not start: %s', exc)
            self.record.failed(f'start failed: {exc}', self._clock())
            return None
        self.record.started(self._clock(), restart=False)
        self._watch()
        return outcome

    def close(self):
        """Stop the watcher thread(s); ExaBGP is left alone."""
        if not self._closed:
            self._closed = True
            os.write(self._stop_w, b'x')

    # -- watching -------------------------------------------------------

    def _watch(self):
        proc = self.speaker.process()
        if proc is None:
            self._watched = None
            return
        pid, start_time = proc
        self._watched = (pid, start_time)
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._wake()           # gone already: check() will see it
            return
        # The PID may have been reused between the record and the open.
        if not processes.process_alive(pid, start_time):
            os.close(pidfd)
            self._wake()
            return
        threading.Thread(target=self._wait_exit, args=(pidfd, pid),
                         name=f'bgp-watch-{pid}', daemon=True).start()

    def _wait_exit(self, pidfd, pid):
        try:
            ready, _, _ = select.select([pidfd, self._stop_r], [], [])
        finally:
            os.close(pidfd)
        if pidfd in ready and not self._closed:
            LOG.debug('BGP: pidfd of ExaBGP %d readable', pid)
            self._wake()

    def _wake(self):
        if self.on_event is not None:
            self.on_event()

    def suspect(self):
        """A command failed as if ExaBGP were gone: look at it in the next
        check() even if its PID lives (a wedged API restarts it)."""
        self._suspect = True
        self._wake()

    # -- the agent's tick -------------------------------------------------

    def alive(self):
        if self._watched is None:
            return False
        return processes.process_alive(*self._watched)

    def check(self):
        """Run from the agent's worker thread on every loop iteration.
        Returns True when ExaBGP was (re)started, or adopted and re-synced
        after suspect(), and the agent's idea of what is announced must be
        read again."""
        now = self._clock()
        rec = self.record
        if rec.state == supervision.RUNNING:
            if self.alive() and not self._suspect:
                return False
            if self.alive():
                # The PID lives but a command failed: start() adopts it if
                # the API answers, else restarts it.
                self._suspect = False
                return self._try_start(now, suspect=True)
            pid = self._watched[0] if self._watched else None
            tail = _last_words(self.speaker.log_tail(10))
            error = f'ExaBGP pid {pid} exited; log: {tail or "(empty)"}'
            LOG.error('BGP: %s', error)
            rec.died(error, now)
            self._watched = None
        if rec.state == supervision.RESTARTING and rec.due(now):
            return self._try_start(now)
        return False

    def _try_start(self, now, suspect=False):
        rec = self.record
        try:
            outcome = self.speaker.start()
        except speaker_mod.BgpError as exc:
            rec.failed(f'restart failed: {exc}', now)
            LOG.error('BGP: restarting ExaBGP failed (%s); next try in '
                      '%.1f s', exc, rec.next_try - now)
            return False
        if suspect and outcome == 'adopted':
            # Same ExaBGP, its API answers and start() re-synced it to
            # the intent: the agent, which forgot what it announces when
            # the command failed, must read it again.
            return True
        if suspect:
            rec.died('ExaBGP API not answering', now)
        rec.started(self._clock())
        self._watch()
        LOG.warning('BGP: ExaBGP %s (pid %s, restart %d); intent '
                    're-announced', outcome, self.speaker.pid, rec.restarts)
        return True

    def next_check_in(self):
        """Seconds until a pending restart try is due (None: none)."""
        rec = self.record
        if rec.state != supervision.RESTARTING or rec.next_try is None:
            return None
        return max(0.0, rec.next_try - self._clock())

    def report(self):
        return self.record.report()
