"""Leader election on the real Redis: a leader whose lock vanished (Redis
restarted empty) steps down, so two controllers never both report."""

import uuid

import pytest
import redis
from tooz import coordination

from dsr_provider.controller import election as election_mod

REDIS = 'redis://127.0.0.1:6379?membership_timeout=1&lock_timeout=1'


@pytest.fixture
def coordinators():
    namespace = f'dsrtest-{uuid.uuid4().hex[:8]}'
    started = []

    def make(member):
        coord = coordination.get_coordinator(
            f'{REDIS}&namespace={namespace}', member.encode())
        coord.start(start_heart=True)
        started.append(coord)
        return coord
    yield make, namespace
    for coord in started:
        coord.stop()
    client = redis.Redis(host='127.0.0.1', port=6379)
    for key in client.scan_iter(f'{namespace}*'):
        client.delete(key)


def test_one_leader_and_takeover_after_resign(coordinators):
    make, _ = coordinators
    a = election_mod.LeaderElection(make('a'), b'g', 'a')
    b = election_mod.LeaderElection(make('b'), b'g', 'b')
    assert a.check() is True
    assert b.check() is False
    assert a.check() is True        # keeps it round after round
    a.resign()
    assert b.check() is True
    assert a.check() is False


def test_leader_whose_lock_vanished_steps_down(coordinators):
    make, namespace = coordinators
    a = election_mod.LeaderElection(make('a'), b'g', 'a')
    b = election_mod.LeaderElection(make('b'), b'g', 'b')
    assert a.check() and not b.check()
    # Redis restarted empty: every key of the deployment is gone.
    client = redis.Redis(host='127.0.0.1', port=6379)
    keys = list(client.scan_iter(f'{namespace}*'))
    assert any(b'leader' in k for k in keys), keys
    client.delete(*keys)
    # b wins the free lock; a notices on its next round and steps down.
    assert b.check() is True
    assert a.check() is False
    assert b.check() is True and a.leading is False


def test_built_before_the_coordinator_starts(coordinators):
    """The controller builds its election before starting tooz."""
    make, namespace = coordinators
    coord = coordination.get_coordinator(
        f'{REDIS}&namespace={namespace}', b'late')
    election = election_mod.LeaderElection(coord, b'g', 'late')
    coord.start(start_heart=True)
    try:
        assert election.check() is True
    finally:
        election.resign()
        coord.stop()
