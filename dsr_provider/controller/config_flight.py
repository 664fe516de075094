"""One get_config build for the asks of an SE group that arrive together
("single flight").

Every SE of a group asks for the group's document at once when it gets a
new generation, and each build reads the whole group from the database
(seconds at 10,000 listeners).  Asks share a build, but an ask is only
given a build that started (began its database reads) after the ask
arrived: its answer is as fresh as a build of its own, and nothing is kept
once the asks of a build have their answers, so there is no cache to go
stale (an answer cached per generation served a document built while a
change was being committed: endpoints.AgentEndpoint._answer).

Per key (SE group): a running build and at most one "next" build that
has not started.  An ask joins next, or creates it and then runs it when
the running build ends (or is overtaken: OVERTAKE_AFTER); the waiters
take its outcome, value or exception.
The answer of each variant (packed or not) is made once per build, by the
first ask of that variant, and shared by the others.
"""

import threading

# The longest the next build waits for the running one before starting
# beside it: its asks need a build that starts after they arrived, and the
# wait is only there to share.  A build this slow is stuck (a database
# connection lost without a reset: the next build gets another one) or
# could not answer its asks within the agents' deadline anyway
# (agent_rpc.AnswerDeadline, at most 10 s + a quarter).
OVERTAKE_AFTER = 10.0
# The longest an ask waits for its answer: past the agents' deadline
# nobody reads it, and the asks of a stuck build must give their RPC
# threads back (oslo.messaging's pool is shared by every method).
GIVE_UP_AFTER = 60.0


class Stalled(RuntimeError):
    """The build an ask waited for did not end within GIVE_UP_AFTER."""


class _Outcome:
    """A value or an exception, computed once, for every thread that
    waits for it."""

    def __init__(self):
        self._done = threading.Event()
        self._value = None
        self._error = None

    def settle(self, compute):
        # BaseException too: a builder that dies must not leave its
        # waiters waiting.
        try:
            self._value = compute()
        except BaseException as exc:  # noqa: BLE001 -- raised by result()
            self._error = exc
        finally:
            self._done.set()

    def wait(self, timeout):
        return self._done.wait(timeout)

    def result(self, timeout):
        if not self._done.wait(timeout):
            raise Stalled(f'no answer within {timeout} s')
        if self._error is not None:
            raise self._error
        return self._value


class _Build:
    """One build of a key's document and the answers made from it."""

    def __init__(self):
        self.document = _Outcome()
        self.asks = 0
        self._answers = {}
        self._lock = threading.Lock()

    def answer(self, variant, finish, timeout):
        document = self.document.result(timeout)
        with self._lock:
            made = self._answers.get(variant)
            mine = made is None
            if mine:
                made = self._answers[variant] = _Outcome()
        if mine:
            made.settle(lambda: finish(document, variant))
        return made.result(timeout)


class _Key:
    __slots__ = ('running', 'next')

    def __init__(self):
        self.running = None
        self.next = None


class SingleFlight:
    """answer(key, variant): finish(build(key), variant), from a build
    that started after the call."""

    def __init__(self, build, finish):
        self._build = build
        self._finish = finish
        self._lock = threading.Lock()
        self._keys = {}

    def answer(self, key, variant=None):
        with self._lock:
            state = self._keys.setdefault(key, _Key())
            build = state.next
            mine = build is None
            if mine:
                build = state.next = _Build()
                ahead = state.running
            build.asks += 1
        if mine:
            self._run(key, state, build, ahead)
        return build.answer(variant, self._finish, GIVE_UP_AFTER)

    def queued(self, key):
        """How many asks of key wait for a build that has not started."""
        with self._lock:
            state = self._keys.get(key)
            return state.next.asks if state and state.next else 0

    def _run(self, key, state, build, ahead):
        def start():
            if ahead is not None:
                ahead.document.wait(OVERTAKE_AFTER)
            # From here on an ask starts the following build: this one
            # may be reading before that ask's change was committed.
            with self._lock:
                state.running, state.next = build, None
            return self._build(key)
        try:
            build.document.settle(start)
        finally:
            with self._lock:
                # An overtaken build ending late leaves its successors be.
                if state.running is build:
                    state.running = None
                if state.next is build:
                    state.next = None
                if state.running is None and state.next is None and \
                        self._keys.get(key) is state:
                    del self._keys[key]
