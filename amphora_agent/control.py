"""The agent's control thread: its calls to the controller (RPC) and to
the coordination backend, made from the namespace the agent started in
while its worker thread lives in the SE's ([agent] netns).  Shared by the
tier-1 agent (service.py) and the L7 SE's (l7/agent.py)."""

import collections
import concurrent.futures
import threading

from oslo_log import log as logging
import tenacity

LOG = logging.getLogger(__name__)


def enter_netns(name):
    """Move the calling thread (and what it starts from now on: threads,
    child processes) into network namespace ``name`` ([agent] netns);
    never creates it.  Raises RuntimeError naming it when it cannot."""
    from pyroute2 import netns
    try:
        netns.setns(name, flags=0)
    except OSError as exc:
        raise RuntimeError(f'[agent] netns: cannot enter network namespace '
                           f'{name!r}: {exc}') from exc


class ControlThread:
    """Runs callables in a thread started in the agent's own namespace.

    Sockets belong to the network namespace of the thread that opens them;
    the agent's worker lives in the SE's namespace ([agent] netns), so
    every RPC and coordination write (which may open a new connection) is
    made from here instead.

    The worker never waits on the broker: a cast is queued and forgotten,
    only the newest of each kind kept (every report is a full state, so an
    older one not sent yet is of no use); a cast the broker did not take
    is sent again, with back-off, until it goes or a newer one of its kind
    replaces it.  A call's future is the caller's to wait on (or not).
    """

    # Longest wait between two tries of a report the broker refused.
    CAST_RETRY_MAX_DELAY = 10.0

    def __init__(self):
        self._cond = threading.Condition()
        self._calls = collections.deque()
        self._casts = {}        # kind -> (func, args, kwargs), newest only
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name='control',
                                        daemon=True)
        self._thread.start()

    def _next(self):
        with self._cond:
            while not (self._calls or self._casts or
                       self._stopping.is_set()):
                self._cond.wait()
            if self._calls:
                return self._calls.popleft()
            if self._casts:
                # Also once stopping: the last reports are tried once.
                kind = next(iter(self._casts))
                return kind, self._casts.pop(kind)
            return None

    def _loop(self):
        while True:
            item = self._next()
            if item is None:
                return
            if len(item) == 2:
                self._send(*item)
                continue
            future, func, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(func(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 -- to the caller
                future.set_exception(exc)

    def _superseded(self, kind):
        with self._cond:
            return kind in self._casts or self._stopping.is_set()

    def _send(self, kind, item):
        func, args, kwargs = item
        try:
            for attempt in tenacity.Retrying(
                    wait=tenacity.wait_exponential(
                        multiplier=0.5, max=self.CAST_RETRY_MAX_DELAY),
                    # A newer report of this kind replaces this one.
                    stop=lambda _state: self._superseded(kind),
                    sleep=self._stopping.wait,
                    before_sleep=tenacity.before_sleep_log(
                        LOG, logging.WARNING)):
                with attempt:
                    func(*args, **kwargs)
        except tenacity.RetryError:
            LOG.debug('%s replaced by a newer one before it was sent', kind)

    def submit(self, func, *args, **kwargs):
        """A future of func(*args, **kwargs) run on the control thread."""
        future = concurrent.futures.Future()
        with self._cond:
            self._calls.append((future, func, args, kwargs))
            self._cond.notify()
        return future

    def call(self, func, *args, timeout=None, **kwargs):
        return self.submit(func, *args, **kwargs).result(timeout)

    def cast(self, kind, func, *args, **kwargs):
        """Send func(*args, **kwargs) soon, unless another cast of `kind`
        comes first; never waits."""
        with self._cond:
            self._casts.pop(kind, None)     # the newest goes last
            self._casts[kind] = (func, args, kwargs)
            self._cond.notify()

    def stop(self):
        self._stopping.set()
        with self._cond:
            self._cond.notify()
        self._thread.join(timeout=10)


class ControllerProxy:
    """ControllerClient whose calls run on the control thread: reports are
    cast there without waiting; get_config waits at most ``timeout``."""

    CASTS = ('report_state', 'report_member_status', 'report_stats')

    def __init__(self, client, control, timeout=None):
        self._client = client
        self._control = control
        self._timeout = timeout

    def __getattr__(self, name):
        method = getattr(self._client, name)
        if name in self.CASTS:
            return lambda *a, **kw: self._control.cast(name, method, *a,
                                                       **kw)
        return lambda *a, **kw: self._control.call(
            method, *a, timeout=self._timeout, **kw)

    def submit(self, name, *args, **kwargs):
        """A future of the client's `name` call; the caller need not wait."""
        return self._control.submit(getattr(self._client, name), *args,
                                    **kwargs)
