"""The leader's wake-up between controllers (wake.py): a wake reaches the
loop only when a controller key signed it, once, inside the window; the
leader wakes itself without the broker; a key rotation needs no restart.
The cast itself crosses a real RabbitMQ in tests/functional/dsr_provider/
controller/test_wake.py."""

import logging
import os
import shutil

import pytest

from dsr_provider.controller import wake
from dsr_wire import auth
from tests.unit.dsr_provider import fakes


class Casts:
    """The fanout client's boundary: what was cast."""

    def __init__(self):
        self.sent = []

    def cast(self, ctxt, method, **args):
        self.sent.append((ctxt, method, args))


@pytest.fixture
def keys(tmp_path):
    controller = str(tmp_path / 'controller.key')
    auth.generate_key(controller)
    se = str(tmp_path / 'se.key')
    auth.generate_key(se)
    return controller, se


def _endpoint(controller_key, woken):
    return wake.WakeEndpoint('ctl1', lambda: woken.append(1),
                             key_for=wake.ControllerKeys(controller_key),
                             window=60.0)


def _waker(controller_key, leading, woken):
    waker = wake.Waker.__new__(wake.Waker)
    waker.controller_id = 'ctl2'
    waker._leading = lambda: leading
    waker._wake_local = lambda: woken.append('local')
    waker._signer = auth.Signer(controller_key) if controller_key else None
    waker._client = Casts()
    return waker


def test_a_wake_signed_by_a_controller_key_wakes_once(keys, caplog):
    controller_key, _ = keys
    woken = []
    endpoint = _endpoint(controller_key, woken)
    sender = _waker(controller_key, leading=False, woken=woken)
    sender('state of SE se1')
    [(ctxt, method, args)] = sender._client.sent
    assert method == 'wake' and args == {'origin': 'ctl2',
                                         'reason': 'state of SE se1'}
    endpoint.wake(ctxt, **args)
    assert woken == [1]
    # The same message again (a sniffer re-publishing it) wakes nothing.
    with caplog.at_level(logging.WARNING):
        endpoint.wake(ctxt, **args)
    assert woken == [1]
    assert 'auth: refused wake from origin=ctl2: replayed message' in \
        caplog.text
    assert endpoint.refusals.total() == 1


def test_unsigned_foreign_key_altered_or_stale_wakes_are_refused(
        keys, caplog, monkeypatch):
    controller_key, se_key = keys
    woken = []
    endpoint = _endpoint(controller_key, woken)
    args = {'origin': 'ctl2', 'reason': 'change'}
    with caplog.at_level(logging.WARNING):
        endpoint.wake({}, **args)
        # An SE's key signs its reports; it cannot wake the leader.
        endpoint.wake(auth.Signer(se_key).context('wake', args), **args)
        # Signed for another reason than the one delivered.
        ctxt = auth.Signer(controller_key).context('wake', args)
        endpoint.wake(ctxt, origin='ctl2', reason='something else')
        # Signed two minutes ago: outside the 60 s window.
        now = auth.time.time()
        monkeypatch.setattr(auth.time, 'time', lambda: now - 120)
        stale = auth.Signer(controller_key).context('wake', args)
        monkeypatch.undo()
        endpoint.wake(stale, **args)
    assert woken == []
    assert endpoint.refusals.total() == 4
    for reason in ('unsigned message', 'unknown key', 'bad signature',
                   'outside the 60 s window'):
        assert reason in caplog.text, reason


def test_its_own_fanout_is_ignored(keys):
    controller_key, _ = keys
    woken = []
    endpoint = _endpoint(controller_key, woken)
    args = {'origin': 'ctl1', 'reason': 'change'}
    endpoint.wake(auth.Signer(controller_key).context('wake', args), **args)
    assert woken == [] and endpoint.refusals.total() == 0


def test_the_leader_wakes_itself_without_the_broker(keys):
    controller_key, _ = keys
    woken = []
    leader = _waker(controller_key, leading=True, woken=woken)
    leader('change')
    assert woken == ['local'] and leader._client.sent == []


def test_without_authentication_wakes_are_unsigned_and_accepted():
    woken = []
    endpoint = wake.WakeEndpoint('ctl1', lambda: woken.append(1))
    sender = _waker(None, leading=False, woken=woken)
    sender('change')
    [(ctxt, _method, args)] = sender._client.sent
    assert ctxt == {}
    endpoint.wake(ctxt, **args)
    assert woken == [1]


def test_a_rotation_needs_no_restart_and_a_retired_key_stops(keys):
    controller_key, _ = keys
    clock = fakes.Clock()
    key_for = wake.ControllerKeys(controller_key, clock=clock)
    old_id = auth.Signer(controller_key).key_id
    assert key_for(old_id) is not None
    # rotate-controller-key prepare; another host activates first: it
    # signs with the new key, this one still holds the old one.
    auth.generate_key(controller_key + '.next')
    new_id = auth.Signer(controller_key + '.next').key_id
    assert key_for(new_id) is None          # looked at less than 1 s ago
    clock.now += 1.0
    assert key_for(new_id) is not None
    # activate here: the old key becomes .old and still verifies.
    shutil.move(controller_key, controller_key + '.old')
    shutil.move(controller_key + '.next', controller_key)
    clock.now += 1.0
    assert key_for(new_id) is not None and key_for(old_id) is not None
    # retire: whoever holds the old key (perhaps why it was rotated) can
    # no longer wake anyone, though its id was known.
    os.remove(controller_key + '.old')
    assert key_for(old_id) is not None      # not looked at yet
    clock.now += 1.0
    assert key_for(old_id) is None
    assert key_for(new_id) is not None


def test_a_refused_wakes_claimed_origin_cannot_forge_log_lines(
        keys, caplog):
    controller_key, _ = keys
    endpoint = _endpoint(controller_key, [])
    with caplog.at_level(logging.WARNING):
        endpoint.wake({}, origin='ctl9\nCRITICAL forged line' + 'x' * 500,
                      reason='change')
    [line] = [r.getMessage() for r in caplog.records]
    assert '\n' not in line and len(line) < 200, line
    assert 'origin=ctl9\\nCRITICAL forged line' in line
