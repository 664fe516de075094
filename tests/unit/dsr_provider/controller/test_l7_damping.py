"""Flap damping of the L7 SEs in the L4 pools (l7_damping.py)."""

import pytest

from dsr_provider.controller import l7_damping

G = 'edge-l7'
UP = {'tunnel_addresses': {'4': '198.51.100.1'}, 'draining': False}
DRAINING = dict(UP, draining=True)
STABLE = {'stable': dict(UP, tunnel_addresses={'4': '198.51.100.9'})}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def damping(clock):
    return l7_damping.FlapDamping(clock=clock)     # the defaults


def look(damping, clock, members, after=1.0):
    clock.now += after
    return set(damping.admit(G, members))


def crash(damping, clock, times):
    """`times` cycles of the SE joining ready and dying, a second each."""
    for _ in range(times):
        look(damping, clock, dict(STABLE, flappy=UP))
        look(damping, clock, STABLE)


def test_a_restart_costs_nothing(damping, clock):
    crash(damping, clock, 1)
    assert look(damping, clock, dict(STABLE, flappy=UP)) == {
        'stable', 'flappy'}
    assert damping.suppressed(G) == []


def test_a_crash_loop_is_kept_out_until_it_stays_up(damping, clock):
    crash(damping, clock, 3)
    assert damping.suppressed(G) == ['flappy']
    assert look(damping, clock, dict(STABLE, flappy=UP)) == {'stable'}
    # Penalty 2.93 (three deaths 2 s apart): below 1.5 after 58 s.
    assert look(damping, clock, dict(STABLE, flappy=UP), after=50.0) == {
        'stable'}
    assert look(damping, clock, dict(STABLE, flappy=UP), after=10.0) == {
        'stable', 'flappy'}
    assert damping.suppressed(G) == []


def test_deaths_while_kept_out_keep_it_out_longer(damping, clock):
    crash(damping, clock, 6)
    # Penalty 5.67: below 1.5 after 115 s.
    assert look(damping, clock, dict(STABLE, flappy=UP), after=100.0) == {
        'stable'}
    assert look(damping, clock, dict(STABLE, flappy=UP), after=25.0) == {
        'stable', 'flappy'}


def test_the_penalty_is_capped(damping, clock):
    crash(damping, clock, 50)
    # From MAX_PENALTY (8) to 1.5: log2(8 / 1.5) = 2.4 half-lives, 145 s.
    assert look(damping, clock, dict(STABLE, flappy=UP), after=140.0) == {
        'stable'}
    assert look(damping, clock, dict(STABLE, flappy=UP), after=10.0) == {
        'stable', 'flappy'}


def test_a_drained_stop_is_no_flap(damping, clock):
    for _ in range(5):
        look(damping, clock, dict(STABLE, flappy=UP))
        look(damping, clock, dict(STABLE, flappy=DRAINING))
        look(damping, clock, STABLE)
    assert look(damping, clock, dict(STABLE, flappy=UP)) == {
        'stable', 'flappy'}


def test_flaps_far_apart_never_add_up(damping, clock):
    for _ in range(10):     # one death every 45 s: penalty at most 2.1
        crash(damping, clock, 1)
        clock.now += 43.0
    assert damping.suppressed(G) == []
    assert look(damping, clock, dict(STABLE, flappy=UP)) == {
        'stable', 'flappy'}


def test_the_only_serving_l7_se_is_let_in_even_flapping(damping, clock):
    for _ in range(3):
        look(damping, clock, {'flappy': UP})
        look(damping, clock, {})
    assert damping.suppressed(G) == ['flappy']
    assert look(damping, clock, {'flappy': UP}) == {'flappy'}
    # A draining one does not serve new connections: still let in.
    assert look(damping, clock, {'flappy': UP, 'old': DRAINING}) == {
        'flappy', 'old'}
    # Another serving one: kept out again.
    assert look(damping, clock, dict(STABLE, flappy=UP)) == {'stable'}


def test_groups_are_judged_apart(damping, clock):
    crash(damping, clock, 3)
    clock.now += 1.0
    assert set(damping.admit('other-l7', dict(STABLE, flappy=UP))) == {
        'stable', 'flappy'}


def test_no_damping_when_off(clock):
    off = l7_damping.FlapDamping(half_life=0, clock=clock)
    for _ in range(10):
        assert look(off, clock, dict(STABLE, flappy=UP)) == {
            'stable', 'flappy'}
        look(off, clock, STABLE)


def test_thresholds_are_checked():
    with pytest.raises(ValueError, match='reuse_below'):
        l7_damping.FlapDamping(suppress_at=2.0, reuse_below=2.0)
    with pytest.raises(ValueError, match='reuse_below'):
        l7_damping.FlapDamping(reuse_below=0)


def test_records_are_forgotten_once_decayed(damping, clock):
    crash(damping, clock, 2)
    assert damping._records
    look(damping, clock, STABLE, after=1200.0)
    assert not damping._records


def test_a_new_term_starts_afresh(damping, clock):
    """What the leader saw in a term it lost is not held against an SE
    in the next one (it may have drained and left meanwhile)."""
    crash(damping, clock, 3)
    look(damping, clock, dict(STABLE, flappy=UP))
    damping.new_term()
    assert look(damping, clock, STABLE) == {'stable'}     # no flap
    assert look(damping, clock, dict(STABLE, flappy=UP)) == {
        'stable', 'flappy'}
