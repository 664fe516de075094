"""The rings map's extent allocator (rings.py)."""

import random

import pytest

from amphora_agent.dataplane import rings


def test_gaps_are_what_the_live_extents_leave():
    space = rings.RingSpace(100, [(50, 5), (10, 10)])
    assert space.gaps() == [(0, 10), (20, 30), (55, 45)]
    assert space.free_slots() == 85


def test_best_fit_takes_the_smallest_gap_that_holds_the_ring():
    space = rings.RingSpace(100, [(10, 10), (50, 5)])
    # Gaps 10, 30, 45: a ring of 8 goes to the gap of 10, one of 25 to 30.
    assert space.allocate(8) == 0
    assert space.allocate(25) == 20
    assert space.gaps() == [(8, 2), (45, 5), (55, 45)]
    # Equal gaps: the lowest offset.
    space = rings.RingSpace(30, [(5, 5), (15, 5)])
    assert space.allocate(5) == 0


def test_released_extents_merge_and_are_reused():
    space = rings.RingSpace(100)
    a, b, c = space.allocate(30), space.allocate(30), space.allocate(30)
    assert (a, b, c) == (0, 30, 60)
    space.release(a, 30)
    space.release(c, 30)
    assert space.gaps() == [(0, 30), (60, 40)]
    space.release(b, 30)
    assert space.gaps() == [(0, 100)]
    assert space.allocate(100) == 0


def test_fragmentation_is_reported_with_the_free_and_largest_run():
    space = rings.RingSpace(100, [(20, 10), (60, 10)])
    with pytest.raises(rings.RingSpaceError) as exc:
        space.allocate(41)
    assert str(exc.value) == (
        'no room for a ring of 41 slots: 80 of 100 ring slots are free, '
        'the largest free run has 30')
    assert space.gaps() == [(0, 20), (30, 30), (70, 30)]   # nothing taken


@pytest.mark.parametrize('used', [[(0, 10), (5, 10)], [(95, 10)]])
def test_overlapping_or_outside_extents_are_refused(used):
    with pytest.raises(rings.RingSpaceError):
        rings.RingSpace(100, used)


@pytest.mark.parametrize('extent', [(25, 10), (40, 5), (95, 10)])
def test_releasing_a_free_extent_is_refused(extent):
    space = rings.RingSpace(100, [(0, 30), (50, 10)])
    with pytest.raises(rings.RingSpaceError):
        space.release(*extent)


def test_random_churn_never_overlaps_and_frees_everything():
    rnd = random.Random(15)
    sizes = (2621, 5261, 10487, 20963)
    space = rings.RingSpace(40 * 10487)
    live = {}
    for step in range(3000):
        if live and (rnd.random() < 0.45 or len(live) > 60):
            offset = rnd.choice(sorted(live))
            space.release(offset, live.pop(offset))
            continue
        size = rnd.choice(sizes)
        try:
            offset = space.allocate(size)
        except rings.RingSpaceError:
            assert max((g for _, g in space.gaps()), default=0) < size
            continue
        live[offset] = size
        spans = sorted(live.items())
        assert all(o + s <= n for (o, s), (n, _) in zip(spans, spans[1:]))
        assert space.free_slots() == space.total - sum(live.values())
    # A space rebuilt from the live extents (a restarted agent) agrees.
    assert rings.RingSpace(space.total, live.items()).gaps() == space.gaps()
    for offset, size in list(live.items()):
        space.release(offset, size)
    assert space.gaps() == [(0, space.total)]


def _in_use(space):
    """The slots no gap covers, as a set."""
    free = {o + i for o, n in space.gaps() for i in range(n)}
    return set(range(space.total)) - free


def test_make_room_moves_the_fewest_slots_out_of_one_window():
    # a b . c . . d: 10 slots each; 30 free, no two gaps adjacent.
    space = rings.RingSpace(70, [(0, 10), (10, 10), (30, 10), (60, 10)])
    movable = {'a': (0, 10), 'b': (10, 10), 'c': (30, 10), 'd': (60, 10)}
    with pytest.raises(rings.RingSpaceError):
        space.copy().allocate(30)
    moves = space.make_room(30, movable)
    # Window 20-50 holds c alone (10 slots to move; any other window of
    # 30 holds two rings), and c goes to the gap outside it.
    assert moves == [('c', 30, 50)]
    assert space.gaps() == [(20, 30)]
    assert space.allocate(30) == 20


def test_make_room_never_moves_what_is_not_movable():
    space = rings.RingSpace(70, [(0, 10), (10, 10), (30, 10), (60, 10)])
    # c and d pinned (their listeners are being changed): moving d into
    # 20-30 would be cheapest; the window must be a and b's, which go to
    # the gap 40-60.
    moves = space.make_room(30, {'a': (0, 10), 'b': (10, 10)})
    assert sorted(moves) == [('a', 0, 40), ('b', 10, 50)]
    assert space.allocate(30) == 0
    assert _in_use(space) == set(range(70))


def test_make_room_changes_nothing_when_no_window_works():
    space = rings.RingSpace(50, [(0, 10), (20, 10), (40, 10)])
    before = space.gaps()
    with pytest.raises(rings.RingSpaceError) as exc:
        # 20 free: a window of 20 needs a ring moved to a gap outside it,
        # and the gap left is 10 slots of the 20 it needs.
        space.make_room(25, {'a': (0, 10), 'b': (20, 10), 'c': (40, 10)})
    assert 'moving the rings of unchanged listeners' in str(exc.value)
    assert space.gaps() == before


def test_make_room_keeps_every_ring_whole_and_apart_under_churn():
    rng = random.Random(7)
    total = 2000
    space, live = rings.RingSpace(total), {}
    for step in range(3000):
        if live and rng.random() < 0.45:
            key = rng.choice(sorted(live))
            space.release(*live.pop(key))
            continue
        size = rng.choice((13, 29, 61, 127))
        try:
            offset = space.allocate(size)
        except rings.RingSpaceError:
            if space.free_slots() < size:
                continue
            movable = dict(rng.sample(sorted(live.items()),
                                      k=len(live) * 3 // 4))
            try:
                moves = space.make_room(size, movable)
            except rings.RingSpaceError:
                continue
            for key, old, new in moves:
                assert live[key][0] == old and key in movable
                live[key] = (new, live[key][1])
            offset = space.allocate(size)
        live[step] = (offset, size)
        taken = sorted(live.values())
        for (a, n), (b, _) in zip(taken, taken[1:]):
            assert a + n <= b, 'two rings overlap'
        assert space.free_slots() == total - sum(n for _, n in taken)
        # The gaps are exactly what the rings leave (merged runs).
        assert space.gaps() == rings.RingSpace(total, taken).gaps()
