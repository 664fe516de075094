"""config_flight.SingleFlight: asks of a key share a build that started
after they arrived, and only such a build.  Builds block on events the
test releases; nothing waits on time except the deadlines that end a
hung test."""

import collections
import threading
import time

import pytest

from dsr_provider.controller import config_flight

# Ends a test that would hang; no step waits this long when it passes.
DEADLINE = 10.0


def wait_until(predicate):
    end = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < end, 'not reached in time'
        time.sleep(0.001)   # a poll, not a synchronisation


class Builds:
    """build(key) -> (key, n), the nth build of key, once the test has
    released it (or raises what the test put in fail[(key, n)])."""

    def __init__(self):
        self.lock = threading.Lock()
        self.count = collections.Counter()
        self.started = collections.defaultdict(threading.Event)
        self.gate = collections.defaultdict(threading.Event)
        self.fail = {}

    def __call__(self, key):
        with self.lock:
            self.count[key] += 1
            n = self.count[key]
            started, gate = self.started[key, n], self.gate[key, n]
        started.set()
        assert gate.wait(DEADLINE), f'build {n} of {key} never released'
        if (key, n) in self.fail:
            raise self.fail[key, n]
        return key, n

    def wait_started(self, key, n):
        assert self.started[key, n].wait(DEADLINE), \
            f'build {n} of {key} never started'

    def release(self, key, n):
        self.gate[key, n].set()


class Ask(threading.Thread):
    """call(*args) on a thread of its own: an RPC thread asking."""

    def __init__(self, call, *args):
        super().__init__(daemon=True)
        self.call, self.args = call, args
        self.value = self.error = None
        self.start()

    def run(self):
        try:
            self.value = self.call(*self.args)
        except BaseException as exc:  # noqa: BLE001 -- the test reads it
            self.error = exc

    def result(self):
        self.join(DEADLINE)
        assert not self.is_alive(), 'no answer'
        if self.error is not None:
            raise self.error
        return self.value


def finished(document, variant):
    return document if variant is None else (document, variant)


@pytest.fixture
def builds():
    builds = Builds()
    yield builds
    for gate in list(builds.gate.values()):
        gate.set()    # a failed test leaves no thread blocked


@pytest.fixture
def flight(builds):
    return config_flight.SingleFlight(builds, finished)


def queue(flight, key, count, variant=None):
    """count more asks of key, once they all wait for the next build."""
    waiting = flight.queued(key) + count
    asks = [Ask(flight.answer, key, variant) for _ in range(count)]
    wait_until(lambda: flight.queued(key) == waiting)
    return asks


def during_a_build(flight, builds, key, count, variant=None):
    """An ask whose build (key's first) has started and blocks, and count
    asks that arrived during it, waiting for the next build."""
    first = Ask(flight.answer, key, variant)
    builds.wait_started(key, 1)
    return first, queue(flight, key, count, variant)


def two_builds_answer(builds, key, first, later):
    """What the asks of during_a_build get once both builds ended."""
    builds.release(key, 1)
    builds.release(key, 2)
    return first.result(), [ask.result() for ask in later]


def test_an_ask_during_a_build_gets_the_next_build(flight, builds):
    # It arrived after build 1 read the database: build 1 may lack the
    # change the SE was told about.
    first, (second,) = during_a_build(flight, builds, 'g', 1)
    builds.release('g', 1)
    assert first.result() == ('g', 1)
    builds.wait_started('g', 2)
    assert second.is_alive()
    builds.release('g', 2)
    assert second.result() == ('g', 2)
    assert builds.count['g'] == 2


def test_asks_during_a_build_share_one_more_build(flight, builds):
    asks = during_a_build(flight, builds, 'g', 8)
    assert two_builds_answer(builds, 'g', *asks) == (('g', 1), [('g', 2)] * 8)
    assert builds.count['g'] == 2
    # Nothing kept: the next ask builds again.
    builds.release('g', 3)
    assert flight.answer('g') == ('g', 3)


class Died(BaseException):
    """A builder thread ending on something other than an Exception."""


@pytest.mark.parametrize('error', [RuntimeError('database gone'), Died()])
def test_a_failed_build_fails_all_its_asks_and_the_next_builds_again(
        flight, builds, error):
    first, failing = during_a_build(flight, builds, 'g', 3)
    builds.fail['g', 2] = error
    builds.release('g', 1)
    builds.release('g', 2)
    assert first.result() == ('g', 1)
    for ask in failing:
        with pytest.raises(type(error)) as raised:
            ask.result()
        assert raised.value is error
    assert builds.count['g'] == 2
    builds.release('g', 3)
    assert flight.answer('g') == ('g', 3)


def test_groups_do_not_wait_for_each_other(flight, builds):
    g_first, g_later = during_a_build(flight, builds, 'g', 2)
    # g's build blocks; h's asks are built and answered meanwhile.
    h_asks = during_a_build(flight, builds, 'h', 2)
    assert two_builds_answer(builds, 'h', *h_asks) == (
        ('h', 1), [('h', 2)] * 2)
    assert g_first.is_alive() and all(ask.is_alive() for ask in g_later)
    assert two_builds_answer(builds, 'g', g_first, g_later) == (
        ('g', 1), [('g', 2)] * 2)


def test_each_variant_is_made_once_per_build(builds):
    made = collections.Counter()

    def finish(document, variant):
        made[document, variant] += 1
        return finished(document, variant)
    flight = config_flight.SingleFlight(builds, finish)
    first, packed = during_a_build(flight, builds, 'g', 3, 'packed')
    whole = queue(flight, 'g', 6, 'whole')
    assert two_builds_answer(builds, 'g', first, packed + whole) == (
        (('g', 1), 'packed'),
        [(('g', 2), 'packed')] * 3 + [(('g', 2), 'whole')] * 6)
    assert made == {(('g', 1), 'packed'): 1, (('g', 2), 'packed'): 1,
                    (('g', 2), 'whole'): 1}


def test_a_stuck_build_is_overtaken(flight, builds, monkeypatch):
    monkeypatch.setattr(config_flight, 'OVERTAKE_AFTER', 0.01)
    stuck = Ask(flight.answer, 'g')
    builds.wait_started('g', 1)
    later = Ask(flight.answer, 'g')
    # Build 2 starts beside build 1 (a lost database connection): it still
    # started after its ask arrived.
    builds.wait_started('g', 2)
    builds.release('g', 2)
    assert later.result() == ('g', 2)
    assert stuck.is_alive()
    builds.release('g', 1)
    assert stuck.result() == ('g', 1)
    builds.release('g', 3)
    assert flight.answer('g') == ('g', 3)


def test_the_asks_of_a_stuck_build_give_their_threads_back(
        flight, builds, monkeypatch):
    monkeypatch.setattr(config_flight, 'GIVE_UP_AFTER', 0.01)
    # One of the asks builds next (once build 1 ends), the other waits
    # for it and gives up.
    stuck, asks = during_a_build(flight, builds, 'g', 2)
    wait_until(lambda: not all(ask.is_alive() for ask in asks))
    (waiter,) = [ask for ask in asks if not ask.is_alive()]
    (builder,) = [ask for ask in asks if ask is not waiter]
    with pytest.raises(config_flight.Stalled):
        waiter.result()
    builds.release('g', 1)
    builds.release('g', 2)
    assert stuck.result() == ('g', 1)
    assert builder.result() == ('g', 2)
