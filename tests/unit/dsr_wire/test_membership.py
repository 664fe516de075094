"""SE group membership survives a coordination backend that lost its data
(a Redis restarted without persistence): the member joins again.  Runs on
tooz's real file:// backend; the loss is its groups folder removed."""

import shutil
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
