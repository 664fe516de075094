"""Health checking of pool members with Octavia semantics.

API::

    checker = HealthChecker(on_change=cb, source4='198.18.1.2', source6=None)
    checker.set_targets({member_id: Target(address, port, monitor, admin)})
    checker.start()
    checker.status(member_id)   # ONLINE | ERROR | OFFLINE | NO_MONITOR
    checker.usable(member_id)   # ONLINE or NO_MONITOR: keep in the rings
    checker.stop()

``on_change(key, old_status, new_status)`` runs in the checker's notifier
thread (never in the caller's, never in the probing loop), in the order the
changes happened; a slow callback delays later notifications, not probes.
It is called for every status change of a known target, including the
first status of a target that set_targets() added (old_status None); a
removed target gets no call.

Statuses (Octavia operating statuses of a member):

* OFFLINE     the member (or its pool) is admin-down: not probed, not usable.
* NO_MONITOR  the pool has no health monitor (or an admin-down one): not
              probed, usable.
* ONLINE      monitored and usable.
* ERROR       monitored and failed: not usable.

State machine of a monitored member (Octavia's ``max_retries`` is the rise
threshold, ``max_retries_down`` the fall threshold): an ONLINE member goes
to ERROR after ``max_retries_down`` consecutive failed probes; an ERROR
member goes back ONLINE after ``max_retries`` consecutive successful ones;
any other result resets the opposite count.  A change takes effect the
moment the deciding probe completes (on_change follows within
milliseconds), so with ``timeout < delay`` a member that starts failing
leaves the usable set at most ``max_retries_down x delay + timeout`` later
-- within one interval after its last allowed failure -- and one that
recovers comes back at most ``max_retries x delay + timeout`` later.  With
``timeout >= delay`` a probe that times out delays the next (see
Scheduling): at most ``max_retries_down x (timeout + delay)`` for a member
that stops answering.

Initial status (``init_state``, HAProxy's server ``init-state`` names):

* ``'up'`` (default): a newly monitored member starts ONLINE -- usable, so
  a new pool never starts empty -- and its *first* probe decides: a failure
  takes it to ERROR at once, a success settles it ONLINE (then the usual
  ``max_retries_down`` rule applies).  This is HAProxy's default, i.e. what
  Octavia's amphora driver does: members are UP when HAProxy (re)loads and
  a member that is dead from the start is dropped after one probe (<=
  delay + timeout) instead of ``max_retries_down`` probes.
* ``'fully-up'``: starts ONLINE and needs ``max_retries_down`` failures.
* ``'down'``: starts ERROR; the first success brings it ONLINE.
* ``'fully-down'``: starts ERROR and needs ``max_retries`` successes.

The same initial state applies when a member comes back from OFFLINE or
NO_MONITOR (its monitor is new).  Changing only the monitor's parameters
(delay, thresholds, type, path, ...) of a probed member keeps its current
status and restarts its counts; changing its address or port makes it a
new member.

Scheduling: one asyncio loop in a background thread probes every member on
its own fixed-rate schedule (start times phase + k x delay, phase drawn in
[0, jitter x delay) so probes spread over the interval); all probes run
concurrently, so a probe waiting for its timeout delays no other member.
``timeout`` may exceed ``delay`` (Octavia allows it; HAProxy's ``inter``
is the delay, ``timeout check`` the timeout).  Probes of one member never
overlap: a probe still running at its member's next start time is not
joined by another; the next one starts ``delay`` after it ended, which is
what HAProxy does with every check.  So a member whose probes time out is
probed every ``timeout + delay`` seconds when ``timeout >= delay`` (every
``delay`` otherwise), and goes ERROR ``max_retries_down`` such probes after
it stopped answering.  Slots a stalled loop missed are skipped and
counted.

Supervision: if the loop thread (or the notifier thread) dies of an
exception while the checker runs, ``supervise()`` -- called by the agent's
worker thread on every loop iteration, so the new thread inherits the SE's
network namespace -- logs it once, restarts it with back-off
(supervision.HelperRecord) and every member's schedule starts again with
its status kept.  ``report()`` gives {'state', 'restarts', 'last_error'}.
"""

import asyncio
import ipaddress
import queue
import random
import threading
import time
from typing import Callable
from typing import Hashable
from typing import Mapping
from typing import Optional

from oslo_log import log as logging

from amphora_agent.health import probes
from amphora_agent.health.spec import DEFAULT_EXPECTED_CODES  # noqa: F401
from amphora_agent.health.spec import HTTP  # noqa: F401
from amphora_agent.health.spec import HTTP_METHODS  # noqa: F401
from amphora_agent.health.spec import HTTPS  # noqa: F401
from amphora_agent.health.spec import InvalidMonitor
from amphora_agent.health.spec import MONITOR_TYPES  # noqa: F401
from amphora_agent.health.spec import MonitorSpec  # noqa: F401
from amphora_agent.health.spec import parse_expected_codes  # noqa: F401
from amphora_agent.health.spec import PING  # noqa: F401
from amphora_agent.health.spec import Target
from amphora_agent.health.spec import TCP  # noqa: F401
from amphora_agent.health.spec import TLS_HELLO  # noqa: F401
from amphora_agent.health.spec import UDP_CONNECT  # noqa: F401
from amphora_agent import supervision

LOG = logging.getLogger(__name__)

ONLINE = 'ONLINE'
ERROR = 'ERROR'
OFFLINE = 'OFFLINE'
NO_MONITOR = 'NO_MONITOR'
STATUSES = (ONLINE, ERROR, OFFLINE, NO_MONITOR)
USABLE = frozenset((ONLINE, NO_MONITOR))

INIT_STATES = ('up', 'fully-up', 'down', 'fully-down')

_STOP = object()


class HealthState:
    """Rise/fall state machine of one monitored member (no clock, no I/O).

    ``record(ok)`` feeds one probe result and returns ``(old, new)`` when
    the status changed, else None.
    """

    __slots__ = ('max_retries', 'max_retries_down', 'status', 'successes',
                 'failures', 'results', 'last_ok', 'last_reason')

    def __init__(self, max_retries, max_retries_down, init_state='up',
                 status=None):
        if init_state not in INIT_STATES:
            raise InvalidMonitor(f'init_state {init_state!r} is invalid: '
                                 f'one of {", ".join(INIT_STATES)}')
        self.max_retries = max_retries
        self.max_retries_down = max_retries_down
        self.successes = 0
        self.failures = 0
        self.results = 0
        self.last_ok = None
        self.last_reason = None
        if status is not None:
            # Carried over from a previous monitor: settled, counts reset.
            if status not in (ONLINE, ERROR):
                raise ValueError(f'status {status!r}: ONLINE or ERROR')
            self.status = status
        elif init_state in ('up', 'fully-up'):
            self.status = ONLINE
            if init_state == 'up':
                self.failures = max_retries_down - 1
        else:
            self.status = ERROR
            if init_state == 'down':
                self.successes = max_retries - 1

    def record(self, ok, reason=None):
        self.results += 1
        self.last_ok = bool(ok)
        self.last_reason = reason
        old = self.status
        if ok:
            self.failures = 0
            if old == ERROR:
                self.successes += 1
                if self.successes >= self.max_retries:
                    self.status = ONLINE
                    self.successes = 0
        else:
            self.successes = 0
            if old == ONLINE:
                self.failures += 1
                if self.failures >= self.max_retries_down:
                    self.status = ERROR
                    self.failures = 0
        if self.status != old:
            return old, self.status
        return None


class _Entry:
    __slots__ = ('key', 'target', 'state', 'task', 'removed')

    def __init__(self, key, target, state):
        self.key = key
        self.target = target
        self.state = state
        self.task = None
        self.removed = False

    @property
    def status(self):
        if not self.target.admin_state_up:
            return OFFLINE
        if self.target.monitor is None:
            return NO_MONITOR
        return self.state.status


class HealthChecker:
    """Probes targets and keeps their Octavia operating status.

    ``on_change(key, old, new)``: see the module doc.
    ``source4`` / ``source6``: source addresses of the probes (None or '':
    the kernel picks by route); a probe that cannot bind its source fails.
    ``init_state``: status of a newly monitored target (module doc).
    ``jitter``: a target's first probe is at a random phase in
    [0, jitter x delay) after it is added (or after start()).
    ``on_probe(key, scheduled, started, finished, ok)``: optional, called in
    the probing loop after each probe with loop.time() values (monotonic
    clock) -- for metrics; it must be quick.
    ``prober``: an object with ``async probe(target) -> (ok, reason)`` and
    ``close()`` (tests); default :class:`probes.Prober`.
    """

    def __init__(self, on_change: Optional[Callable] = None,
                 source4=None, source6=None, *, init_state='up',
                 jitter=1.0, on_probe=None, prober=None, seed=None):
        if init_state not in INIT_STATES:
            raise InvalidMonitor(f'init_state {init_state!r} is invalid: '
                                 f'one of {", ".join(INIT_STATES)}')
        if not 0 <= jitter <= 1:
            raise InvalidMonitor(f'jitter {jitter!r} is invalid: a fraction '
                                 'of the delay in 0..1')
        source4 = _source(source4, 4, 'source4')
        source6 = _source(source6, 6, 'source6')
        self.on_change = on_change
        self.init_state = init_state
        self.jitter = jitter
        self.on_probe = on_probe
        self._prober = prober or probes.Prober(source4, source6)
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._entries = {}
        self._removed = []
        self._events = queue.SimpleQueue()
        self._loop = None
        self._thread = None
        self._notifier = None
        self._running = False
        self._counters = {'probes': 0, 'failures': 0, 'skipped_slots': 0,
                          'max_lag': 0.0, 'callback_errors': 0}
        self.record = supervision.HelperRecord('health')
        self._crash = {}    # 'loop' / 'notifier' -> the exception

    # -- targets -------------------------------------------------------------

    def set_targets(self, targets: Mapping[Hashable, Target], down=()):
        """Make ``targets`` the complete set of targets.

        Idempotent: an unchanged target keeps its status, counts and
        schedule; new targets start in their initial status; removed ones
        stop being probed and are forgotten.  Everything is validated first:
        on an error nothing changes.

        ``down``: keys of new targets that start ``'down'`` whatever
        ``init_state`` (an agent restart: members the previous agent had
        found down, as HAProxy's server state file does).
        """
        for key, target in targets.items():
            if not isinstance(target, Target):
                raise InvalidMonitor(f'target {key!r}: {target!r} is not a '
                                     'Target')
        with self._lock:
            for key in [k for k in self._entries if k not in targets]:
                entry = self._entries.pop(key)
                self._retire(entry)
            for key, target in targets.items():
                old = self._entries.get(key)
                # The agent hands back the same Target while unchanged.
                if old is not None and (old.target is target
                                        or old.target == target):
                    continue
                self._install(key, target, old,
                              'down' if key in down else self.init_state)
        self._wake()

    def _install(self, key, target, old, init_state):
        state = None
        if target.probed:
            mon = target.monitor
            carried = None
            if (old is not None and old.target.probed and
                    old.target.address == target.address and
                    old.target.port == target.port):
                carried = old.state.status
            state = HealthState(mon.max_retries, mon.max_retries_down,
                                init_state, status=carried)
        entry = _Entry(key, target, state)
        old_status = None
        if old is not None:
            old_status = old.status
            self._retire(old)
        self._entries[key] = entry
        if entry.status != old_status:
            self._events.put((key, old_status, entry.status))

    def _retire(self, entry):
        entry.removed = True
        if entry.task is not None:
            self._removed.append(entry)

    # -- queries -------------------------------------------------------------

    def status(self, key, default=None):
        """The target's status, or ``default`` for an unknown key."""
        entry = self._entries.get(key)
        return default if entry is None else entry.status

    def statuses(self):
        with self._lock:
            return {k: e.status for k, e in self._entries.items()}

    def usable(self, key):
        """True when the target may take traffic (ONLINE or NO_MONITOR);
        False for unknown keys."""
        entry = self._entries.get(key)
        return entry is not None and entry.status in USABLE

    def details(self, key):
        """Status plus probe counters of one target (for debugging)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            d = {'status': entry.status, 'target': entry.target}
            if entry.state is not None:
                s = entry.state
                d.update(results=s.results, last_ok=s.last_ok,
                         last_reason=s.last_reason, successes=s.successes,
                         failures=s.failures)
            return d

    def stats(self):
        with self._lock:
            out = dict(self._counters)
            out['targets'] = len(self._entries)
            out['probed'] = sum(1 for e in self._entries.values()
                                if e.target.probed)
            out['running'] = self._running
            return out

    # -- lifecycle ------------------------------------------------------------

    def start(self):
        """Start probing (a loop thread and a notifier thread).  Sockets
        are opened in the network namespace of the thread calling start()."""
        with self._lock:
            if self._running:
                return
            _raise_nofile_limit()
            self._running = True
            self._notifier = self._start_notifier()
            ready = self._start_loop()
        ready.wait()
        self._wake()

    def _start_loop(self):
        self._crash.pop('loop', None)
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run_loop, args=(self._loop, ready),
            name='health-checker', daemon=True)
        self._thread.start()
        return ready

    def _start_notifier(self):
        self._crash.pop('notifier', None)
        notifier = threading.Thread(target=self._notify,
                                    name='health-notify', daemon=True)
        notifier.start()
        return notifier

    def set_backoff(self, max_delay, reset_after):
        """Back-off of restarts after a crash (see supervision)."""
        self.record = supervision.HelperRecord(
            'health', max_delay=max_delay, reset_after=reset_after)

    def supervise(self, now=None):
        """Restart a crashed loop or notifier thread (with back-off);
        returns True when one was restarted.  Call it from a thread of the
        network namespace the probes must run in."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if not self._running:
                return False
            loop_dead = self._thread is not None and \
                not self._thread.is_alive()
            notifier_dead = self._notifier is not None and \
                not self._notifier.is_alive()
            rec = self.record
            if (loop_dead or notifier_dead) and \
                    rec.state == supervision.RUNNING:
                what = 'probing loop' if loop_dead else 'notifier'
                exc = self._crash.get('loop' if loop_dead else 'notifier')
                error = f'health {what} thread died: ' + (
                    f'{type(exc).__name__}: {exc}' if exc is not None
                    else 'stopped without stop()')
                LOG.error('%s; restarting it', error)
                rec.died(error, now)
            if rec.state != supervision.RESTARTING or not rec.due(now):
                return False
            if loop_dead:
                for entry in self._entries.values():
                    entry.task = None   # died with the loop
                self._removed.clear()
                ready = self._start_loop()
            else:
                ready = None
            if notifier_dead:
                self._notifier = self._start_notifier()
            rec.started(now)
        if ready is not None:
            ready.wait()
            self._wake()
        LOG.warning('health checker restarted (restart %d)', rec.restarts)
        return True

    def report(self):
        return self.record.report()

    def stop(self, timeout=10.0):
        """Stop probing, close every socket, deliver pending notifications
        and join both threads.  Statuses are kept; start() resumes."""
        with self._lock:
            if not self._running:
                return
            self._running = False
            loop, thread, notifier = self._loop, self._thread, self._notifier
        loop.call_soon_threadsafe(loop.stop)
        me = threading.current_thread()
        if me is not thread:  # stop() from on_probe: the loop ends after it
            thread.join(timeout)
        self._events.put(_STOP)
        if me is not notifier:  # stop() from on_change: ends after it
            notifier.join(timeout)
        with self._lock:
            for entry in self._entries.values():
                entry.task = None
            self._removed.clear()
            self._loop = self._thread = self._notifier = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- notifier thread ------------------------------------------------------

    def _notify(self):
        while True:
            event = self._events.get()
            if event is _STOP:
                return
            if self.on_change is None:
                continue
            try:
                self.on_change(*event)
            except Exception:  # noqa: BLE001 - a callback bug must not stop us
                self._counters['callback_errors'] += 1
                LOG.exception('health on_change%r failed', event)
            except BaseException as exc:
                # Ends this thread; supervise() starts a new notifier.
                self._crash['notifier'] = exc
                LOG.exception('health notifier died')
                return

    # -- loop thread ----------------------------------------------------------

    def _wake(self):
        loop = self._loop
        if loop is not None and self._running:
            try:
                loop.call_soon_threadsafe(self._reconcile_tasks)
            except RuntimeError:  # loop closed by a concurrent stop()
                pass

    def _run_loop(self, loop, ready):
        asyncio.set_event_loop(loop)
        ready.set()
        try:
            loop.run_forever()
        except BaseException as exc:
            # SystemExit / KeyboardInterrupt (asyncio handles the rest) or a
            # broken selector: the thread ends; supervise() restarts it.
            self._crash['loop'] = exc
            LOG.exception('health probing loop died')
        finally:
            try:
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    loop.run_until_complete(
                        asyncio.gather(*tasks, return_exceptions=True))
            finally:
                try:
                    self._prober.close()
                finally:
                    loop.close()

    def _reconcile_tasks(self):
        loop = asyncio.get_running_loop()
        with self._lock:
            if not self._running:
                return
            for entry in self._removed:
                if entry.task is not None:
                    entry.task.cancel()
                    entry.task = None
            self._removed.clear()
            now = loop.time()
            for entry in self._entries.values():
                if entry.target.probed and entry.task is None:
                    phase = self._rng.uniform(
                        0, self.jitter * entry.target.monitor.delay)
                    entry.task = loop.create_task(
                        self._probe_loop(entry, now + phase),
                        name=f'health-{entry.key}')

    async def _probe_loop(self, entry, first):
        loop = asyncio.get_running_loop()
        target = entry.target
        delay = target.monitor.delay
        probe = self._prober.probe
        counters = self._counters
        scheduled = first
        while True:
            wait = scheduled - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            started = loop.time()
            try:
                ok, reason = await probe(target)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a probe bug: failure
                LOG.exception('health probe of %s failed', entry.key)
                ok, reason = False, f'probe error: {exc!r}'
            finished = loop.time()
            self._record(entry, ok, reason)
            lag = started - scheduled
            if lag > counters['max_lag']:
                counters['max_lag'] = lag
            if self.on_probe is not None:
                try:
                    self.on_probe(entry.key, scheduled, started, finished, ok)
                except Exception:  # noqa: BLE001
                    LOG.exception('health on_probe failed')
            if lag >= delay:
                # The loop started this probe whole slots late (a stalled
                # loop): those slots are skipped, not fired as a burst.
                counters['skipped_slots'] += int(lag // delay)
            scheduled += delay
            if finished > scheduled:
                # The probe ran past the next start (timeout >= delay, or
                # a stalled loop).  Probes of a member never overlap; as
                # HAProxy does (its next check is due `inter` after the
                # previous one ended), the next starts `delay` after this
                # one finished.
                scheduled = finished + delay

    def _record(self, entry, ok, reason):
        with self._lock:
            self._counters['probes'] += 1
            if not ok:
                self._counters['failures'] += 1
            if entry.removed:
                return
            change = entry.state.record(ok, reason)
            if change is not None:
                LOG.info('member %s (%s %s:%s): %s -> %s (%s)', entry.key,
                         entry.target.monitor.type, entry.target.address,
                         entry.target.port, change[0], change[1], reason)
                self._events.put((entry.key,) + change)


def _source(value, family, field):
    if not value:
        return None
    try:
        addr = ipaddress.ip_address(str(value))
    except ValueError:
        addr = None
    if addr is None or addr.version != family:
        raise InvalidMonitor(f'{field} {value!r} is invalid: an IPv{family} '
                             'address of this SE, or None')
    return str(addr)


NOFILE_WANTED = 65536


def _raise_nofile_limit():
    """Every probe holds a socket until it ends: with many members timing
    out at once, 1,024 descriptors (a common soft limit) would make probes
    of healthy members fail with EMFILE.  Raise the soft limit towards the
    hard one (never lower it)."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = NOFILE_WANTED if hard == resource.RLIM_INFINITY else \
            min(hard, NOFILE_WANTED)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            LOG.debug('RLIMIT_NOFILE soft limit %s -> %s', soft, want)
    except (ImportError, OSError, ValueError) as exc:  # pragma: no cover
        LOG.debug('RLIMIT_NOFILE not raised: %s', exc)
