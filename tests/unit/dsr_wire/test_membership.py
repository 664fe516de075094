"""SE group membership survives a coordination backend that lost its data
(a Redis restarted without persistence): the member joins again.  Runs on
tooz's real file:// backend; the loss is its groups folder removed."""

import shutil
import threading
import time

from tooz import coordination

from dsr_wire import membership


def _backend(tmp_path):
    return f'file://{tmp_path}'


def test_ensure_joined_rejoins_a_lost_group(tmp_path):
    coord = coordination.get_coordinator(_backend(tmp_path), b'se1')
    coord.start()
    try:
        group = membership.group_id('g1')
        membership.join(coord, group, b'{"role": "l4"}')
        assert membership.ensure_joined(coord, b'se1', group) is False

        shutil.rmtree(tmp_path / 'groups')      # the backend forgot us
        assert membership.ensure_joined(coord, b'se1', group,
                                        b'{"role": "l4"}') is True
        assert coord.get_members(group).get() == {b'se1'}
        assert coord.get_member_capabilities(group, b'se1').get() == \
            b'{"role": "l4"}'
        assert membership.ensure_joined(coord, b'se1', group) is False
    finally:
        coord.stop()


def test_membership_rejoins_in_the_background(tmp_path, monkeypatch):
    monkeypatch.setattr(membership, 'REJOIN_CHECK_INTERVAL', 0.05)
    m = membership.Membership(_backend(tmp_path), 'se1', 'g1',
                              {'role': 'l4'})
    m.start()
    try:
        assert set(m.members()) == {'se1'}
        shutil.rmtree(tmp_path / 'groups')
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if set(m.members()) == {'se1'}:
                    break
            except coordination.GroupNotCreated:
                pass
            time.sleep(0.05)   # polling with a deadline
        assert m.members() == {'se1': {'role': 'l4'}}
    finally:
        m.stop()


def test_update_before_start_is_joined_with_and_after_it_published(
        tmp_path, monkeypatch):
    """update() before start() sets what it joins with; after, it
    publishes (file://: tooz cannot update there, so it leaves and joins
    again) and a re-join uses the new capabilities."""
    monkeypatch.setattr(membership, 'REJOIN_CHECK_INTERVAL', 0.05)
    m = membership.Membership(_backend(tmp_path), 'l7se1', 'g1',
                              {'ready': False})
    observer = membership.Membership(_backend(tmp_path), 'ctl', 'g1', {})
    m.update({'ready': False, 'draining': False})
    m.start()
    observer.start()
    try:
        assert observer.members()['l7se1'] == {'ready': False,
                                               'draining': False}
        m.update({'ready': True, 'draining': False})
        assert observer.members()['l7se1'] == {'ready': True,
                                               'draining': False}
        shutil.rmtree(tmp_path / 'groups')      # the backend forgot us
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if 'l7se1' in observer.members():
                    break
            except coordination.GroupNotCreated:
                pass
            time.sleep(0.05)   # polling with a deadline
        assert observer.members()['l7se1'] == {'ready': True,
                                               'draining': False}
    finally:
        observer.stop()
        m.stop()


def test_coordinator_calls_run_in_the_callers_thread(tmp_path):
    # tooz's default executor starts a worker thread for the calls (and
    # stop() waits for its one-second idle poll); ours runs them inline.
    coord = membership.coordinator(_backend(tmp_path), 'se1')
    before = set(threading.enumerate())
    coord.start()
    try:
        membership.join(coord, membership.group_id('g1'))
        assert coord.get_members(membership.group_id('g1')).get() == {b'se1'}
        assert set(threading.enumerate()) == before
    finally:
        coord.stop()


def test_coordinator_url_keeps_its_options_and_an_executor_it_names(
        monkeypatch):
    seen = []
    monkeypatch.setattr(membership.coordination, 'get_coordinator',
                        lambda url, member: seen.append((url, member)))
    membership.coordinator('redis://127.0.0.1:6379?namespace=x&timeout=5',
                           'se1')
    membership.coordinator('redis://127.0.0.1:6379?executor=threaded', b'c')
    membership.coordinator('file:///var/lib/tooz', 'se2')
    assert seen == [
        ('redis://127.0.0.1:6379?namespace=x&timeout=5'
         '&executor=synchronous', b'se1'),
        ('redis://127.0.0.1:6379?executor=threaded', b'c'),
        ('file:///var/lib/tooz?executor=synchronous', b'se2'),
    ]


def test_a_member_whose_entry_cannot_be_read_is_left_out_alone():
    """Anybody who reaches the backend can write a member's entry: one
    that does not decode (tooz's SerializationError, or not JSON) leaves
    out that member, and the group is read."""
    from tooz import utils as tooz_utils

    class Coordinator:
        def get_members(self, group):
            return _Done({b'se1', b'se2', b'se3'})

        def get_member_capabilities(self, group, member):
            if member == b'se2':
                raise tooz_utils.SerializationError('not msgpack')
            return _Done(b'{"role": "tier2"' if member == b'se3'
                         else b'{"role": "tier2"}')
    assert membership.members(Coordinator(), b'g') == {
        'se1': {'role': 'tier2'}}


class _Done:
    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value
