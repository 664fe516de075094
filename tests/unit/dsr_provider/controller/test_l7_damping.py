"""Flap damping of the L7 SEs in the L4 pools (l7_damping.py)."""

from cryptography.hazmat.primitives.asymmetric import ed25519
import pytest

from dsr_provider.controller import enrolment
from dsr_provider.controller import l7_damping
from tests.unit.dsr_provider import fakes

G = 'edge-l7'
UP = {'tunnel_addresses': {'4': '198.51.100.1'}, 'draining': False}
DRAINING = dict(UP, draining=True)
STABLE = {'stable': dict(UP, tunnel_addresses={'4': '198.51.100.9'})}


@pytest.fixture
def clock():
    return fakes.Clock()


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


@pytest.mark.parametrize('deaths, out_after, back_after', [
    (6, 100.0, 25.0),       # penalty 5.67: below 1.5 after 115 s
    (50, 140.0, 10.0),      # capped at 8: log2(8 / 1.5) half-lives, 145 s
])
def test_more_deaths_keep_it_out_longer_up_to_a_cap(
        damping, clock, deaths, out_after, back_after):
    """Deaths while kept out count too, up to MAX_PENALTY."""
    crash(damping, clock, deaths)
    assert look(damping, clock, dict(STABLE, flappy=UP),
                after=out_after) == {'stable'}
    assert look(damping, clock, dict(STABLE, flappy=UP),
                after=back_after) == {'stable', 'flappy'}


def test_a_drained_stop_is_no_flap(damping, clock):
    for _ in range(5):
        look(damping, clock, dict(STABLE, flappy=UP))
        look(damping, clock, dict(STABLE, flappy=DRAINING))
        look(damping, clock, STABLE)
    assert look(damping, clock, dict(STABLE, flappy=UP)) == {
        'stable', 'flappy'}


def test_flaps_far_apart_never_add_up(damping, clock):
    for _ in range(10):     # one death every 47 s: penalty at most 2.4
        crash(damping, clock, 1)
        clock.now += 45.0
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
    # Another serving one: kept out again -- draining, being in already.
    clock.now += 1.0
    admitted = damping.admit(G, dict(STABLE, flappy=UP))
    assert admitted['flappy']['draining'] is True


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
    for suppress_at, reuse_below in ((2.0, 2.0), (2.5, 0), (9.0, 1.5)):
        with pytest.raises(ValueError, match='reuse threshold'):
            l7_damping.FlapDamping(suppress_at=suppress_at,
                                   reuse_below=reuse_below)


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


def suppress(damping, clock):
    crash(damping, clock, 3)
    assert damping.suppressed(G) == ['flappy']


def test_a_flapping_se_is_let_in_while_no_other_serves_everything(
        damping, clock, caplog):
    """The other L7 SE left a load balancer ERROR (unserved): its pools
    would have no member without the flapping one.  Logged once."""
    suppress(damping, clock)
    partial = {'stable': dict(STABLE['stable'],
                              unserved={'loadbalancers': ['lb9']})}
    with caplog.at_level('WARNING'):
        for _ in range(5):
            assert look(damping, clock, dict(partial, flappy=UP)) == {
                'stable', 'flappy'}
    assert caplog.text.count('let into the L4 pools') == 1


def test_one_let_in_drains_when_kept_out_again(damping, clock):
    """Let in while the other drained, a suppressed SE is not dropped
    when the other serves again: it drains (weight 0), so its
    established connections stay; one not in yet stays out."""
    suppress(damping, clock)
    clock.now += 1.0
    admitted = damping.admit(G, {'stable': DRAINING, 'flappy': UP})
    assert admitted['flappy']['draining'] is False
    clock.now += 1.0
    admitted = damping.admit(G, dict(STABLE, flappy=UP))
    assert set(admitted) == {'stable', 'flappy'}
    assert admitted['flappy']['draining'] is True
    assert admitted['stable']['draining'] is False


def test_an_unreadable_look_counts_no_flap(damping, clock):
    """Who left while the group could not be read, and whether it
    drained first, is unknown."""
    for _ in range(3):
        look(damping, clock, dict(STABLE, flappy=UP))
        damping.forget_look(G)
        look(damping, clock, STABLE)
    assert damping.suppressed(G) == []


def test_a_suppressed_se_gone_for_good_is_forgotten(damping, clock):
    suppress(damping, clock)
    look(damping, clock, STABLE, after=3600.0)
    assert damping.suppressed(G) == [] and not damping._records


# --------------------------------------------- kept from leader to leader
def leader(store, wall, clock=None):
    """A leader's FlapDamping keeping its penalties in store (its own
    monotonic clock; the controllers share the wall clock)."""
    return l7_damping.FlapDamping(clock=clock or fakes.Clock(50.0),
                                  wall=wall, keep=l7_damping.StoreKeep(store))


def kept_look(damping, clock, wall, members, after=1.0):
    """A look as the watcher makes it: admit, then (the pools stored)
    flush; both clocks move on."""
    wall.now += after
    admitted = look(damping, clock, members, after=after)
    damping.flush()
    return admitted


def test_the_next_leader_goes_on_from_the_kept_penalties(store):
    """A crash loop the old leader saw keeps the SE out under the new
    one, for what is left of its penalty (decayed by the wall-clock time
    since): before, a new leader let it straight back in."""
    wall, old_clock = fakes.Clock(1_000_000.0), fakes.Clock()
    old = leader(store, wall, old_clock)
    for _ in range(3):
        kept_look(old, old_clock, wall, dict(STABLE, flappy=UP))
        kept_look(old, old_clock, wall, STABLE)
    assert old.suppressed(G) == ['flappy']
    ((group, se_id, penalty, at, suppressed),) = store.flap_penalties()
    assert (group, se_id, suppressed) == (G, 'flappy', True)
    assert at == wall.now and 2.5 < penalty < 3.0
    # The old leader dies; a new one leads 20 s later (another process:
    # another monotonic clock).
    new_clock = fakes.Clock(7.0)
    new = leader(store, wall, new_clock)
    wall.now += 20.0
    assert kept_look(new, new_clock, wall, dict(STABLE, flappy=UP)) == {
        'stable'}
    assert new.suppressed(G) == ['flappy']
    # Below 1.5 about 58 s after its last death: 21 s have passed.
    assert kept_look(new, new_clock, wall, dict(STABLE, flappy=UP),
                     after=30.0) == {'stable'}
    assert kept_look(new, new_clock, wall, dict(STABLE, flappy=UP),
                     after=10.0) == {'stable', 'flappy'}
    ((_, _, _, _, suppressed),) = store.flap_penalties()
    assert suppressed is False


def test_leading_again_reads_what_another_leader_kept(store):
    """A controller that stops leading forgets; when it leads again it
    reads what the leader in between kept."""
    wall, clock = fakes.Clock(1_000_000.0), fakes.Clock()
    damping = leader(store, wall, clock)
    assert kept_look(damping, clock, wall, dict(STABLE, flappy=UP)) == {
        'stable', 'flappy'}
    damping.new_term()
    # Another leader kept flappy out meanwhile.
    store.set_flap_penalties([(G, 'flappy', 3.0, wall.now, True)])
    assert kept_look(damping, clock, wall, dict(STABLE, flappy=UP)) == {
        'stable'}


def test_a_kept_time_ahead_of_this_clock_decays_from_now(store):
    """Kept by a leader whose clock was ahead: no decay is invented (a
    negative age would raise the penalty)."""
    wall, clock = fakes.Clock(1_000_000.0), fakes.Clock()
    store.set_flap_penalties([(G, 'flappy', 3.0, wall.now + 30.0, True)])
    damping = leader(store, wall, clock)
    kept_look(damping, clock, wall, dict(STABLE, flappy=UP), after=0.0)
    (rec,) = damping._records.values()
    assert rec.penalty == 3.0


def test_a_kept_out_se_in_the_pools_drains_under_the_new_leader(store):
    """Let in by the old leader while no other SE served, then kept out
    again: under a new leader it drains in the pools (its established
    connections stay), as under one leader, instead of leaving them."""
    wall = fakes.Clock(1_000_000.0)
    store.set_flap_penalties([(G, 'flappy', 3.0, wall.now, True)])
    store.set_l7_members(G, dict(STABLE, flappy=UP))
    clock = fakes.Clock()
    new = leader(store, wall, clock)
    admitted = new.admit(G, dict(STABLE, flappy=UP))
    assert admitted['flappy']['draining'] is True
    assert admitted['stable']['draining'] is False


def test_a_decayed_penalty_is_forgotten_by_the_store_too(store):
    wall, clock = fakes.Clock(1_000_000.0), fakes.Clock()
    damping = leader(store, wall, clock)
    kept_look(damping, clock, wall, dict(STABLE, flappy=UP))
    kept_look(damping, clock, wall, STABLE)
    assert [r[1] for r in store.flap_penalties()] == ['flappy']
    # 1 halves to below 0.01 in 7 half-lives.
    kept_look(damping, clock, wall, STABLE, after=480.0)
    assert store.flap_penalties() == []


class Keep:
    """A keep whose reads or writes fail on demand."""

    def __init__(self, rows=()):
        self.rows, self.saved = list(rows), []
        self.load_fails = self.save_fails = False

    def load(self):
        if self.load_fails:
            raise RuntimeError('database away')
        return self.rows

    def save(self, rows):
        if self.save_fails:
            raise RuntimeError('database away')
        self.saved.append(rows)

    def in_pools(self, l7_group):
        return set()


def test_nothing_is_counted_until_the_kept_penalties_are_read(clock):
    """An unreadable store fails the look (the watcher keeps the pools as
    they are): a flap counted meanwhile must not replace the penalty the
    last leader kept, nor let the SE in."""
    keep = Keep([(G, 'flappy', 3.0, 1000.0, True)])
    damping = l7_damping.FlapDamping(clock=clock, wall=clock, keep=keep)
    keep.load_fails = True
    for members in (dict(STABLE, flappy=UP), STABLE):
        with pytest.raises(RuntimeError):
            look(damping, clock, members)
    keep.load_fails = False
    assert look(damping, clock, dict(STABLE, flappy=UP)) == {'stable'}
    assert damping.suppressed(G) == ['flappy']


def test_a_failed_write_is_tried_again_at_the_next_flush(clock, caplog):
    keep = Keep()
    damping = l7_damping.FlapDamping(clock=clock, wall=clock, keep=keep)
    keep.save_fails = True
    look(damping, clock, dict(STABLE, flappy=UP))
    look(damping, clock, STABLE)
    damping.flush()
    assert 'could not be kept (database away)' in caplog.text
    keep.save_fails = False
    damping.flush()
    ((row,),) = keep.saved
    assert row[:2] == (G, 'flappy') and row[4] is False
    damping.flush()
    assert len(keep.saved) == 1         # nothing new: no write


def test_the_end_of_a_suppression_is_kept_for_an_absent_se_too(store):
    """Kept out, then gone (not in the membership): its penalty decays
    all the same, and the end of its suppression is kept, so that a next
    leader does not keep it out for a penalty it no longer has."""
    wall, clock = fakes.Clock(1_000_000.0), fakes.Clock()
    damping = leader(store, wall, clock)
    for _ in range(3):
        kept_look(damping, clock, wall, dict(STABLE, flappy=UP))
        kept_look(damping, clock, wall, STABLE)
    ((*_, suppressed),) = store.flap_penalties()
    assert suppressed is True
    kept_look(damping, clock, wall, STABLE, after=60.0)
    ((*_, penalty, _at, suppressed),) = store.flap_penalties()
    assert suppressed is False and penalty < 1.5


def test_a_revoked_se_leaves_no_kept_penalty(store):
    enrolment.enrol(store.db, G, 'flappy',
                    ed25519.Ed25519PrivateKey.generate().public_key())
    store.set_flap_penalties([(G, 'flappy', 3.0, 100.0, True),
                              (G, 'stable', 0.5, 100.0, False)])
    assert enrolment.revoke(store.db, 'flappy')
    assert store.flap_penalties() == [(G, 'stable', 0.5, 100.0, False)]
    # A running leader saw it leave (a flap) and kept a penalty again:
    # a new enrolment under the name starts without it; a re-key does
    # not touch the penalties of an enrolled SE.
    store.set_flap_penalties([(G, 'flappy', 1.0, 120.0, False)])
    enrolment.enrol(store.db, G, 'flappy',
                    ed25519.Ed25519PrivateKey.generate().public_key())
    assert store.flap_penalties() == [(G, 'stable', 0.5, 100.0, False)]
    store.set_flap_penalties([(G, 'flappy', 1.0, 130.0, False)])
    enrolment.enrol(store.db, G, 'flappy',
                    ed25519.Ed25519PrivateKey.generate().public_key())
    assert (G, 'flappy', 1.0, 130.0, False) in store.flap_penalties()
