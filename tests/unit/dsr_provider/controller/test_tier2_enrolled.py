"""The coordination backend (tooz) is not authenticated: with
authentication on, the controller believes the L7 group membership only of
SEs enrolled in that group, and of those only what they sealed (signed)
and keep sealing -- a stranger joining cannot get the L4 SEs to steer
tier-2 traffic to its address, nor hold the group's contract down (TLS
settings left out); a writer of the backend cannot alter an enrolled SE's
entry, nor keep a dead SE in the pools with a copy of its entry.  Real
enrolment table (SQLite), real keys and seals."""

import logging
import time

from cryptography.hazmat.primitives.asymmetric import ed25519
import pytest

from dsr_provider.controller import endpoints
from dsr_provider.controller import enrolment
from dsr_provider.controller import guard as guard_mod
from dsr_provider.controller import models
from dsr_provider.controller import tier2
from dsr_wire import auth
from dsr_wire import capability_seal
from dsr_wire import l7
from tests.unit.dsr_provider.controller.test_guard import enrolled
from tests.unit.dsr_provider.controller import test_store_tier2 as t2
from tests.unit.dsr_provider import fakes


def caps(address, contract=None, ready=True):
    doc = {'role': tier2.ROLE, 'ready': ready,
           'tunnel_addresses': {'4': address}}
    if contract is not None:
        doc['l7_contract'] = contract
    return doc


def test_only_enrolled_members_are_believed(store, caplog):
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    enrolment.enrol(store.db, 'edge-l7', 'l7a', key)
    enrolment.enrol(store.db, 'other-l7', 'l7b', key)
    live = {'l7a': caps('198.18.7.1', l7.CONTRACT_VERSION),
            'l7b': caps('198.18.7.2'),           # enrolled elsewhere
            'intruder': caps('203.0.113.66')}    # no contract: the oldest
    members_of = tier2.trusted_only(store.db, lambda group: dict(live))
    with caplog.at_level(logging.WARNING):
        seen = members_of('edge-l7')
        members_of('edge-l7')
    assert set(seen) == {'l7a'}
    assert set(tier2.ready_members(seen)) == {'l7a'}
    # The intruder's missing contract does not hold the group back.
    assert l7.group_contract(seen) == l7.CONTRACT_VERSION
    assert caplog.text.count("entry of member intruder is not believed: "
                             "not enrolled in this group") == 1
    # For the watcher, whom it left out of those enrolled: a stranger's
    # name is not recorded (anybody can join with any number of names).
    assert members_of.left_out_of('edge-l7') == {}


def test_a_sealed_entry_is_believed_only_as_its_se_signed_it(
        store, tmp_path, caplog):
    """Its seal is checked against the SE's enrolled key, for this SE and
    group, signed within the window: an altered field, a seal moved to
    another SE, another group's seal, another key's, an old seal -- each
    is left out, and what is believed is what was signed."""
    signers = enrolled(store, tmp_path, (('l7a', 'edge-l7'),
                                         ('l7b', 'edge-l7'),
                                         ('l7c', 'other-l7')))
    wall = fakes.Clock(5000.0)
    sealers = {se: capability_seal.Sealer(signers[se], se, group,
                                          clock=wall)
               for se, group in (('l7a', 'edge-l7'), ('l7b', 'edge-l7'),
                                 ('l7c', 'other-l7'))}
    live = {}
    members_of = tier2.trusted_only(store.db, lambda group: dict(live),
                                    window=60.0, clock=wall)

    good = sealers['l7a'].seal(caps('198.18.7.1', l7.CONTRACT_VERSION))
    live['l7a'] = good
    seen = members_of('edge-l7')
    assert {k: v for k, v in seen['l7a'].items()
            if k != capability_seal.SEAL_KEY} == caps(
                '198.18.7.1', l7.CONTRACT_VERSION)
    assert isinstance(seen['l7a'][capability_seal.SEAL_KEY],
                      capability_seal.Seal)

    def believed(entry, se='l7a', group='edge-l7'):
        live.clear()
        live[se] = entry
        return se in members_of(group)

    altered = dict(good, tunnel_addresses={'4': '203.0.113.66'})
    assert not believed(altered)
    assert members_of.left_out_of('edge-l7') == {   # for dsr-status
        'l7a': 'its tooz entry is not believed: its seal does not verify'}
    assert not believed(dict(good, l7_contract=1))         # contract down
    assert not believed(dict(good, ready=False))
    # l7a's seal under l7b's name (both enrolled in the group).
    assert not believed(good, se='l7b')
    # Another group's SE's seal, copied into this group.
    assert not believed(sealers['l7c'].seal(caps('198.18.7.3')), se='l7c')
    # Signed by another key than the enrolled one.
    assert not believed(sealers['l7b'].seal(caps('198.18.7.1')))
    # Signed outside the window.
    wall.now += 61
    assert not believed(good)
    assert believed(sealers['l7a'].seal(caps('198.18.7.1')))
    assert 'its seal: bad signature' in caplog.text
    assert 'outside the 60 s window' in caplog.text


def test_an_unsealed_entry_counts_only_for_an_se_that_does_not_seal(
        store, tmp_path):
    """An L7 agent of an earlier release publishes unsealed capabilities
    and is believed as before; once its signed report_state says it seals,
    an unsealed entry under its name is somebody else's."""
    signers = enrolled(store, tmp_path, (('l7a', 'edge-l7'),
                                         ('l7old', 'edge-l7')))
    ep = endpoints.AgentEndpoint(store, guard=guard_mod.AgentGuard(store.db))
    store.create_loadbalancer(t2.graph())

    def report(se, state):
        args = {'se_id': se, 'se_group': 'edge-l7', 'state': state}
        ep.report_state(signers[se].context('report_state', args), **args)
    report('l7a', {'applied_generation': 0, 'capability_seal': 'a' * 32,
                   'tunnel_addresses': {'4': '198.18.7.1'}})
    report('l7old', {'applied_generation': 0,
                     'tunnel_addresses': {'4': '198.18.7.9'}})
    live = {'l7a': caps('198.18.7.1', 1), 'l7old': caps('198.18.7.9', 1)}
    members_of = tier2.trusted_only(store.db, lambda group: dict(live),
                                    store.l7_reports)
    assert set(members_of('edge-l7')) == {'l7old'}
    # Its stripped entry does not hold the group's contract down either.
    live = {'l7a': caps('198.18.7.1', 1)}
    assert l7.group_contract(members_of('edge-l7')) == l7.CONTRACT_VERSION


def _sealing_se_stated(store, tmp_path):
    """A Sealer of L7 SE l7a, enrolled in edge-l7 (t2.graph()'s L7 group,
    created), whose signed report_state says it seals."""
    signers = enrolled(store, tmp_path, (('l7a', 'edge-l7'),))
    store.create_loadbalancer(t2.graph())
    sealer = capability_seal.Sealer(signers['l7a'], 'l7a', 'edge-l7')
    state_names(store, sealer)
    return sealer


def state_names(store, sealer, address='198.18.7.1'):
    """sealer's SE reports its state (signed, through the real guard),
    naming sealer's run as the one that seals, and its tunnel address."""
    ep = endpoints.AgentEndpoint(store, guard=guard_mod.AgentGuard(store.db))
    args = {'se_id': sealer.se_id, 'se_group': sealer.group,
            'state': {'applied_generation': 0,
                      'capability_seal': sealer.boot,
                      'tunnel_addresses': {'4': address}}}
    ep.report_state(sealer.signer.context('report_state', args), **args)


def state_signed_at(store, sealer, signed, address='198.18.7.1'):
    """state_names, signed at `signed` (the SE's clock, where it is not
    ours: its signer signs with the real one), stored as the endpoint
    stores it."""
    store.record_agent(sealer.se_id, sealer.group,
                       sent=('report_state', signed), applied_generation=0,
                       seal_boot=sealer.boot,
                       tunnel_addresses={'4': address})


def test_a_copy_of_a_dead_ses_entry_leaves_the_pools(store, tmp_path,
                                                     caplog):
    """The watcher believes a sealed entry while its seal moves on (the
    agent seals again every second); a copy of an SE's last entry, written
    back after it died, is out after SEAL_STALE_AFTER -- and a restarted
    agent (a new boot) is back at once, an older boot's copy is not."""
    clock = fakes.Clock()
    sealer = capability_seal.Sealer(     # its clock 30 s fast
        _sealing_se_stated(store, tmp_path).signer, 'l7a', 'edge-l7',
        clock=lambda: time.time() + 30.0)
    state_signed_at(store, sealer, time.time() + 30.0)
    live = {'l7a': sealer.seal(caps('198.18.7.1'))}
    watcher = tier2.MembershipWatcher(
        store, tier2.trusted_only(store.db, lambda group: dict(live),
                                  store.l7_reports),
        clock=clock, signed_only=True)

    def pool():
        watcher.run_once()
        return set(store.l7_members(t2.L7G))
    assert pool() == {'l7a'}
    for _ in range(10):                 # a live agent: sealed again
        clock.now += 1.0
        live['l7a'] = sealer.seal(caps('198.18.7.1'))
        assert pool() == {'l7a'}
    copy = live['l7a']                  # then it dies; its entry copied
    clock.now += tier2.SEAL_STALE_AFTER
    assert pool() == {'l7a'}
    with caplog.at_level(logging.WARNING):
        clock.now += 0.5
        assert pool() == set()
        clock.now += 10
        assert pool() == set()
    assert caplog.text.count('have not been signed again') == 1
    with store.db.session() as s:       # what dsr-status shows of it
        (why,) = s.query(models.L7SELeftOut).filter_by(se_id='l7a')
        assert why.reason.startswith('its sealed capabilities did not '
                                     'move on lately'), why.reason
    # An older seal of the same boot does not bring it back.
    live['l7a'] = sealer.seal(caps('198.18.7.1'))
    older = live['l7a']
    live['l7a'] = sealer.seal(caps('198.18.7.1'))
    assert pool() == {'l7a'}
    clock.now += tier2.SEAL_STALE_AFTER + 1
    live['l7a'] = older
    assert pool() == set()
    # The agent restarted: a new run, in the pools once its signed state
    # names it (it reports before it is ready) -- whatever its clock says:
    # set right meanwhile, it signs 30 s before its last run's copy.
    restarted = capability_seal.Sealer(sealer.signer, 'l7a', 'edge-l7')
    live['l7a'] = restarted.seal(caps('198.18.7.1'))
    assert live['l7a']['dsr_seal']['ts'] < copy['dsr_seal']['ts'] - 20
    assert pool() == set()
    state_names(store, restarted)
    assert pool() == {'l7a'}
    # The previous run's copy, written back, is not its entry any more.
    live['l7a'] = copy
    assert pool() == set()


def _watcher_of_a_backend_that_fails(store, tmp_path, clock):
    """(down, watcher): a leader's watcher with authentication on, of
    edge-l7 where l7a (stated) published one seal; the backend is
    unreadable while down is not empty."""
    sealer = _sealing_se_stated(store, tmp_path)
    live = {'l7a': sealer.seal(caps('198.18.7.1'))}
    down = []

    def read(group):
        if down:
            raise ConnectionError('backend down')
        return dict(live)
    return down, tier2.MembershipWatcher(
        store, tier2.trusted_only(store.db, read, store.l7_reports),
        clock=clock, signed_only=True)


def test_the_seal_clock_starts_again_after_the_backend_was_unreadable(
        store, tmp_path):
    """While the watcher cannot read the group, the agents cannot seal
    either: when it reads again, their seals are not held against them
    until they have had SEAL_STALE_AFTER to seal again."""
    clock = fakes.Clock()
    down, watcher = _watcher_of_a_backend_that_fails(store, tmp_path, clock)
    watcher.run_once()
    assert set(store.l7_members(t2.L7G)) == {'l7a'}
    down.append(True)
    clock.now += 30
    watcher.run_once()                  # unreadable: the pools are kept
    assert set(store.l7_members(t2.L7G)) == {'l7a'}
    down.clear()
    watcher.run_once()                  # read again, not sealed again yet
    assert set(store.l7_members(t2.L7G)) == {'l7a'}
    clock.now += tier2.SEAL_STALE_AFTER + 1
    watcher.run_once()                  # and never sealed again
    assert set(store.l7_members(t2.L7G)) == set()


def test_an_enrolled_ses_tooz_entry_steers_only_to_its_signed_addresses(
        store, caplog, tmp_path):
    """Anybody who reaches the backend can also write an enrolled SE's
    entry.  With authentication on, the L4 pools take an L7 SE's tunnel
    addresses from its signed report_state (the endpoint through the real
    guard), and an SE that has not reported is not a member yet; an L7
    agent from before reported addresses (its report has none) is
    believed from tooz, as before."""
    signers = enrolled(store, tmp_path,
                       (('l7a', 'edge-l7'), ('l7old', 'edge-l7')))
    ep = endpoints.AgentEndpoint(store, guard=guard_mod.AgentGuard(store.db))
    sealer = capability_seal.Sealer(signers['l7a'], 'l7a', 'edge-l7')
    # Sealed by l7a itself, with an address it does not report (an
    # address changed and not reported yet).
    live = {'l7a': sealer.seal(caps('203.0.113.66')),
            'l7old': caps('198.18.7.9')}
    watcher = tier2.MembershipWatcher(
        store, tier2.trusted_only(store.db, lambda group: dict(live),
                                  store.l7_reports),
        signed_only=True)
    store.create_loadbalancer(t2.graph())           # names L7 group edge-l7

    def pool():
        return store.l7_members(t2.L7G)
    assert t2.L7G == 'edge-l7'
    watcher.run_once()
    assert pool() == {}                             # nobody reported yet

    # Another kind of report stored first is not its state.
    stats = {'se_id': 'l7a', 'se_group': 'edge-l7',
             'stats': {'listeners': {}}}
    ep.report_stats(signers['l7a'].context('report_stats', stats), **stats)
    watcher.run_once()
    assert pool() == {}

    def report(se, state):
        args = {'se_id': se, 'se_group': 'edge-l7', 'state': state}
        ep.report_state(signers[se].context('report_state', args), **args)
    report('l7a', {'applied_generation': 0,
                   'capability_seal': sealer.boot,
                   'tunnel_addresses': {'4': '198.18.7.1'}})
    report('l7old', {'applied_generation': 0})
    with caplog.at_level(logging.WARNING):
        watcher.run_once()
        watcher.run_once()
    # l7a's entry names another address than its signed state: out until
    # they agree.
    assert pool() == {'l7old': {'tunnel_addresses': {'4': '198.18.7.9'},
                                'draining': False}}
    assert caplog.text.count("L7 SE l7a: the coordination backend gives "
                             "tunnel addresses {'4': '203.0.113.66'}") == 1
    live['l7a'] = sealer.seal(caps('198.18.7.1'))
    watcher.run_once()
    assert pool()['l7a'] == {'tunnel_addresses': {'4': '198.18.7.1'},
                             'draining': False}
    live['l7a'] = caps('203.0.113.66')
    # Without authentication (tests of older controllers) tooz is believed.
    open_watcher = tier2.MembershipWatcher(store, lambda group: dict(live))
    open_watcher.run_once()
    assert pool()['l7a']['tunnel_addresses'] == {'4': '203.0.113.66'}


def test_a_malformed_entry_is_left_out_alone(store, tmp_path, caplog):
    """What canonical JSON cannot sign (a NaN written into a field), a
    time that is not a float, an unreadable seal: that member is left out,
    the group is read -- not taken for an unreadable group, whose pools
    would be kept as they were."""
    signers = enrolled(store, tmp_path, (('l7a', 'edge-l7'),
                                         ('l7b', 'edge-l7')))
    good = capability_seal.Sealer(signers['l7b'], 'l7b', 'edge-l7').seal(
        caps('198.18.7.2'))
    sealed = capability_seal.Sealer(signers['l7a'], 'l7a', 'edge-l7').seal(
        caps('198.18.7.1'))
    live = {'l7b': good}
    members_of = tier2.trusted_only(store.db, lambda group: dict(live))
    for bad in (dict(sealed, x=float('nan')),
                dict(sealed, dsr_seal=dict(sealed['dsr_seal'], ts=10**400)),
                dict(sealed, dsr_seal=dict(sealed['dsr_seal'], ts='now')),
                dict(sealed, dsr_seal=dict(sealed['dsr_seal'], boot=None)),
                dict(sealed, dsr_seal=[1, 2])):
        live['l7a'] = bad
        assert set(members_of('edge-l7')) == {'l7b'}, bad
    live['l7a'] = sealed
    assert set(members_of('edge-l7')) == {'l7a', 'l7b'}


def test_an_older_seal_read_back_gives_the_last_ones_capabilities(
        store, tmp_path):
    """A seal that does not move on (an older one of the same run, read
    back) does not speak for the SE: its draining stays as it last signed
    it, whatever the copy says."""
    clock = fakes.Clock()
    sealer = _sealing_se_stated(store, tmp_path)
    ready = sealer.seal(caps('198.18.7.1'))
    live = {'l7a': ready}
    watcher = tier2.MembershipWatcher(
        store, tier2.trusted_only(store.db, lambda group: dict(live),
                                  store.l7_reports),
        clock=clock, signed_only=True)
    watcher.run_once()
    assert store.l7_members(t2.L7G)['l7a']['draining'] is False
    live['l7a'] = sealer.seal(dict(caps('198.18.7.1', ready=False),
                                   draining=True))
    watcher.run_once()
    assert store.l7_members(t2.L7G)['l7a']['draining'] is True
    for _ in range(3):
        live['l7a'] = ready             # its ready seal, written back
        clock.now += 1.0
        watcher.run_once()
        assert store.l7_members(t2.L7G)['l7a']['draining'] is True


def test_a_backend_made_unreadable_now_and_then_does_not_keep_a_copy(
        store, tmp_path):
    """The clocks start again after an unreadable look once per seal:
    alternating an unreadable group and a copy of a dead SE's entry does
    not keep it in the pools."""
    clock = fakes.Clock()
    down, watcher = _watcher_of_a_backend_that_fails(store, tmp_path, clock)
    watcher.run_once()
    started = clock.now
    while clock.now - started < 3 * tier2.SEAL_STALE_AFTER:
        down[:] = [True]
        watcher.run_once()
        down.clear()
        clock.now += 0.5
        watcher.run_once()
        if not store.l7_members(t2.L7G):
            break
    assert store.l7_members(t2.L7G) == {}
    assert clock.now - started <= 2 * tier2.SEAL_STALE_AFTER + 1


def test_an_unreadable_group_keeps_the_l7_ses_still_heard_from(
        store, tmp_path):
    """While the backend cannot be read, the pools keep their L7 SEs (an
    outage must not empty them), but not one whose reports stopped for
    agent_ttl: it would stay for as long as the backend is unreadable."""
    signers = enrolled(store, tmp_path, (('l7a', 'edge-l7'),
                                         ('l7b', 'edge-l7')))
    store.create_loadbalancer(t2.graph())
    live = {}
    for se, address in (('l7a', '198.18.7.1'), ('l7b', '198.18.7.2')):
        sealer = capability_seal.Sealer(signers[se], se, 'edge-l7')
        state_names(store, sealer, address)
        live[se] = sealer.seal(caps(address))
    down = []

    def read(group):
        if down:
            raise ConnectionError('backend down')
        return dict(live)
    watcher = tier2.MembershipWatcher(
        store, tier2.trusted_only(store.db, read, store.l7_reports),
        signed_only=True)
    watcher.run_once()
    assert set(store.l7_members(t2.L7G)) == {'l7a', 'l7b'}
    down.append(True)
    watcher.run_once()
    assert set(store.l7_members(t2.L7G)) == {'l7a', 'l7b'}
    store.agent_ttl = 30.0
    with store.db.session() as s:                    # l7b went quiet
        s.get(models.AgentState, 'l7b').updated_at -= 31.0
    assert watcher.run_once() == [t2.L4]
    assert set(store.l7_members(t2.L7G)) == {'l7a'}


def test_an_unsealed_entry_of_an_se_not_heard_from_does_not_count(
        store, tmp_path):
    """An unsealed entry counts only for an SE whose signed report_state
    is stored and names no run that seals: one never heard from (enrolled,
    not started) does not hold the group's contract down."""
    enrolled(store, tmp_path, (('l7new', 'edge-l7'),))
    live = {'l7new': caps('198.18.7.5', 1)}
    members_of = tier2.trusted_only(store.db, lambda group: dict(live),
                                    store.l7_reports)
    assert members_of('edge-l7') == {}
    assert l7.group_contract(members_of('edge-l7')) == l7.CONTRACT_VERSION


def test_a_seal_of_another_group_is_not_believed_after_the_se_moved(
        store, tmp_path):
    """An SE enrolled again in another group, with the same key: a copy
    of a seal it made for its first group is not believed in the second
    (the signature check is remembered per group)."""
    signers = enrolled(store, tmp_path, (('l7a', 'edge-l7'),))
    sealed = capability_seal.Sealer(signers['l7a'], 'l7a', 'edge-l7').seal(
        caps('198.18.7.1'))
    members_of = tier2.trusted_only(store.db, lambda group: {'l7a': sealed})
    assert set(members_of('edge-l7')) == {'l7a'}
    enrolment.enrol(store.db, 'other-l7', 'l7a',
                    auth.load_private_key(str(tmp_path / 'l7a.key'))
                    .public_key())
    assert members_of('other-l7') == {}


def test_seals_shown_ever_later_are_not_a_move_on(store, tmp_path):
    """Whoever keeps an L7 SE's own writes from the backend could show the
    controller its recorded seals one by one, later and later, after it
    died: a seal more than SEAL_STALE_AFTER behind the least lag of its
    run does not move on.  An SE whose clock is far off (40 s behind),
    sealing on time, is not behind anything."""
    clock, wall = fakes.Clock(), fakes.Clock(time.time())   # the store's clock
    signers = enrolled(store, tmp_path, (('l7a', 'edge-l7'),))
    store.create_loadbalancer(t2.graph())
    sealer = capability_seal.Sealer(     # its clock 40 s behind ours
        signers['l7a'], 'l7a', 'edge-l7', clock=lambda: wall.now - 40.0)
    state_signed_at(store, sealer, wall.now - 40.0)
    seals = []
    live = {}
    watcher = tier2.MembershipWatcher(
        store, tier2.trusted_only(store.db, lambda group: dict(live),
                                  store.l7_reports, clock=wall),
        clock=clock, signed_only=True, wall=wall)

    def tick(seconds=1.0):
        clock.now += seconds
        wall.now += seconds
    for _ in range(10):                     # a seal a second, seen
        live['l7a'] = sealer.seal(caps('198.18.7.1'))
        watcher.run_once()
        assert set(store.l7_members(t2.L7G)) == {'l7a'}
        tick()
    # Its writes kept from the backend: its seals, recorded, are shown
    # half as fast as it makes them.
    for n in range(40):
        seals.append(sealer.seal(caps('198.18.7.1')))
        live['l7a'] = seals[n // 2]
        watcher.run_once()
        if not store.l7_members(t2.L7G):
            break
        tick()
    assert store.l7_members(t2.L7G) == {}
    # Behind by 5 s after 10 s, then stale 5 s later.
    assert n <= 2 * tier2.SEAL_STALE_AFTER + tier2.SEAL_STALE_AFTER + 2, n


def test_a_stalled_read_starts_the_seal_clocks_again_once(
        store, tmp_path, monkeypatch):
    """A look that took longer than STALLED_READ (the backend stalled: the
    agents' seals waited in it too) gives the SEs time to seal again --
    once a seal, as after an unreadable look."""
    clock = fakes.Clock()
    down, watcher = _watcher_of_a_backend_that_fails(store, tmp_path, clock)
    read = watcher.members_of

    def slow(group):
        clock.now += tier2.STALLED_READ + tier2.SEAL_STALE_AFTER
        return read(group)
    watcher.run_once()
    watcher.members_of = slow
    watcher.run_once()                      # stalled: not held against it
    assert set(store.l7_members(t2.L7G)) == {'l7a'}
    watcher.run_once()                      # the same seal: no second time
    assert store.l7_members(t2.L7G) == {}


# -------------------------------------------- a run's first seal, seeded
BOOT, OTHER_BOOT = 'b' * 32, 'c' * 32


def sealed_caps(seq, ts, boot=BOOT):
    return dict(caps('198.18.7.1'), **{
        capability_seal.SEAL_KEY: capability_seal.Seal(boot, seq, ts)})


def stated(state_lag, boot=BOOT, stored=None):
    """Store.l7_reports of l7a: its signed report_state names run `boot`
    and was stored state_lag s after it was signed, at `stored` (our wall
    clock; None: long ago)."""
    return {'l7a': {'seal_boot': boot, 'state_lag': state_lag,
                    'state_stored': -1.0 if stored is None else stored,
                    'stated': True}}


def test_a_new_leader_takes_a_runs_least_lag_from_its_signed_report(
        caplog):
    """A newly elected leader has seen no seal of the SE's run: its first
    seal's lag would be the least -- one shown 50 s late (whoever keeps
    the agent's writes from the backend, replaying its recording) kept
    the SE in the pools for up to auth_window.  The lag of the SE's
    signed report_state naming the run (its clock offset too) is the
    least so far: a seal more than SEAL_STALE_AFTER behind it is not
    fresh, until one that is not behind arrives."""
    clock, wall = fakes.Clock(), fakes.Clock(10_000.0)
    seals = tier2.SealClock(clock=clock, wall=wall)
    late = {'l7a': sealed_caps(7, wall.now - 50.0)}
    with caplog.at_level(logging.WARNING):
        assert seals.fresh('g', late, stated(0.3)) == {}
        clock.now += 1
        wall.now += 1
        assert seals.fresh('g', {'l7a': sealed_caps(8, wall.now - 50.0)},
                           stated(0.3)) == {}
    assert caplog.text.count('its seal is shown 50 s later than its '
                             'signed report_state') == 1
    # Seals on time (the agent's own writes land again) are fresh; its
    # run's least lag is then its seals' own (1 s), not the report's: a
    # report stored by a controller whose clock is behind the leader's
    # must not keep the SE out for the whole run.
    assert set(seals.fresh('g', {'l7a': sealed_caps(9, wall.now - 1.0)},
                           stated(0.3))) == {'l7a'}

    def after(seconds, seq, lag):
        clock.now += seconds
        wall.now += seconds
        return set(seals.fresh('g', {'l7a': sealed_caps(
            seq, wall.now - lag)}, stated(0.3)))
    bar = 1.0 + tier2.SEAL_STALE_AFTER
    assert after(4.5, 10, bar - 0.2) == {'l7a'}     # moves on
    assert after(4.5, 10, bar - 0.2) == {'l7a'}     # 9 s after seq 9
    assert after(0.5, 11, bar + 0.2) == {'l7a'}     # does not ...
    assert after(0.6, 11, bar + 0.2) == set()       # ... move on


def test_a_controller_behind_the_leader_keeps_nobody_out_for_long():
    """The report's lag is measured on the clock of the controller that
    stored it: one 4.5 s behind the leader gives a lag too low by 4.5 s.
    It holds the run's first seal only; then the run is held to its
    seals' own lag (held to the report's, seals 0.6 s slower than the
    first would never move on again).  8 s behind: the first seal waits
    for a report stored by another controller."""
    clock, wall = fakes.Clock(), fakes.Clock(10_000.0)
    seals = tier2.SealClock(clock=clock, wall=wall)
    assert set(seals.fresh('g', {'l7a': sealed_caps(1, wall.now - 1.0)},
                           stated(-3.5))) == {'l7a'}
    for seq in range(2, 4 + 2 * int(tier2.SEAL_STALE_AFTER)):
        clock.now += 1
        wall.now += 1
        assert set(seals.fresh('g', {'l7a': sealed_caps(
            seq, wall.now - 1.6)}, stated(-3.5))) == {'l7a'}, seq
    seals = tier2.SealClock(clock=clock, wall=wall)
    assert seals.fresh('g', {'l7a': sealed_caps(1, wall.now - 1.0)},
                       stated(-7.0)) == {}
    clock.now += 1
    wall.now += 1
    assert set(seals.fresh('g', {'l7a': sealed_caps(2, wall.now - 1.0)},
                           stated(0.5))) == {'l7a'}


def test_a_seeded_run_is_fresh_whatever_the_ses_clock_offset():
    """An SE whose clock is 40 s behind ours: its report_state was stored
    40 s after it was signed, as its seals are read 40-41 s after: fresh.
    A report that took long on its way (a larger lag than the seals') is
    no bar either: the least of the two counts."""
    wall = fakes.Clock(10_000.0)
    for state_lag in (40.05, 40.9, 55.0):
        seals = tier2.SealClock(clock=fakes.Clock(), wall=wall)
        assert set(seals.fresh('g', {'l7a': sealed_caps(
            1, wall.now - 41.2)}, stated(state_lag))) == {'l7a'}, state_lag


def test_without_a_report_lag_of_its_run_a_first_seal_sets_it():
    """No report_state lag naming the run -- an L7 SE's reports stored by
    a controller of an earlier release, an SE not stated yet, or a state
    naming another run (trusted_only leaves that run's seals out
    anyway): the first seal's lag is its run's least, as before."""
    wall = fakes.Clock(10_000.0)
    for reports in (None, {}, stated(None), stated(0.3, OTHER_BOOT),
                    {'l7a': {'seal_boot': None, 'state_lag': 0.3,
                             'stated': True}}):
        seals = tier2.SealClock(clock=fakes.Clock(), wall=wall)
        assert set(seals.fresh('g', {'l7a': sealed_caps(
            1, wall.now - 50.0)}, reports)) == {'l7a'}, reports


def test_a_later_run_shown_late_does_not_move_on():
    """The same holds for a run a leader had not seen: an agent restarted
    (its signed state names the new run), whose first seals are shown
    late, is not fresh on them; the previous run's last seal ages out."""
    clock, wall = fakes.Clock(), fakes.Clock(10_000.0)
    seals = tier2.SealClock(clock=clock, wall=wall)
    assert set(seals.fresh('g', {'l7a': sealed_caps(
        5, wall.now - 0.5, OTHER_BOOT)}, stated(0.3, OTHER_BOOT))) == \
        {'l7a'}
    for seq in range(1, int(tier2.SEAL_STALE_AFTER) + 3):
        clock.now += 1
        wall.now += 1
        seen = seals.fresh('g', {'l7a': sealed_caps(seq, wall.now - 30.0)},
                           stated(0.3))
    assert seen == {}
    assert set(seals.fresh('g', {'l7a': sealed_caps(seq + 1,
                                                    wall.now - 0.5)},
                           stated(0.3))) == {'l7a'}


def test_a_new_leader_is_not_shown_a_dead_ses_recorded_seals_late(
        store, tmp_path):
    """Through the store and the watcher: an L7 SE reports its state
    (signed, through the real guard: its lag is recorded) and seals; it
    dies, and whoever keeps its writes from the backend shows a leader
    elected 20 s later its recorded seals -- within auth_window, yet 20 s
    behind its signed report: not in the pools."""
    wall = fakes.Clock(time.time())               # the store's clock
    sealer = _sealing_se_stated(store, tmp_path)
    assert 0 <= store.l7_reports(t2.L7G)['l7a']['state_lag'] < 5
    recording = [sealer.seal(caps('198.18.7.1')) for _ in range(30)]
    live = {}

    def leader():
        return tier2.MembershipWatcher(
            store, tier2.trusted_only(store.db, lambda group: dict(live),
                                      store.l7_reports, clock=wall),
            clock=fakes.Clock(), signed_only=True, wall=wall)
    live['l7a'] = recording[0]
    leader().run_once()
    assert set(store.l7_members(t2.L7G)) == {'l7a'}
    wall.now += 20
    new = leader()
    for seal in recording[1:]:
        live['l7a'] = seal
        new.run_once()
        assert store.l7_members(t2.L7G) == {}


def test_the_lag_of_a_signed_report_state_is_stored_with_it(
        store, tmp_path):
    """Store.record_agent keeps how late each signed report was stored
    (its controller's clock minus its signing time), with the time it
    describes; l7_reports gives the report_state's -- not another
    report's, nor one dropped as overtaken, nor when a controller of an
    earlier release stored the last report_state (its time alone)."""
    sealer = _sealing_se_stated(store, tmp_path)    # the real guard
    lag = store.l7_reports(t2.L7G)['l7a']['state_lag']
    assert 0 <= lag < 5
    now = time.time()
    state_signed_at(store, sealer, now + 1.5)        # its clock ahead
    assert store.l7_reports(t2.L7G)['l7a']['state_lag'] == \
        pytest.approx(-1.5, abs=1.0)
    # When it was stored, on the storing controller's clock.
    assert store.l7_reports(t2.L7G)['l7a']['state_stored'] == \
        pytest.approx(time.time(), abs=1.0)
    store.record_agent('l7a', t2.L7G, sent=('report_stats', now - 3.0),
                       stats={'listeners': {}})
    state_signed_at(store, sealer, now - 3.0)        # overtaken: dropped
    assert store.l7_reports(t2.L7G)['l7a']['state_lag'] == \
        pytest.approx(-1.5, abs=1.0)
    with store.db.session() as s:
        times = s.get(models.AgentState, 'l7a').report_times
        assert times['lags']['report_stats'][0] == now - 3.0
        # An earlier release's controller stores the time alone.
        s.get(models.AgentState, 'l7a').report_times = dict(
            times, report_state=now + 1.6)
    assert store.l7_reports(t2.L7G)['l7a']['state_lag'] is None
    assert store.l7_reports(t2.L7G)['l7a']['state_stored'] is None
    store.record_agent('l7b', t2.L7G, applied_generation=0)   # unsigned
    assert store.l7_reports(t2.L7G)['l7b']['state_lag'] is None
    assert store.l7_reports(t2.L7G)['l7b']['state_stored'] is None


def test_a_look_reads_the_l7_ses_reports_once(store, tmp_path):
    """trusted_only reads the SEs' reports for the seals' runs; the
    watcher's look uses that read instead of a second query (four looks
    a second per L7 group)."""
    sealer = _sealing_se_stated(store, tmp_path)
    live = {'l7a': sealer.seal(caps('198.18.7.1'))}
    reads, real = [], store.l7_reports

    def counted(*args):
        reads.append(args)
        return real(*args)
    store.l7_reports = counted      # the watcher's and trusted_only's
    watcher = tier2.MembershipWatcher(
        store, tier2.trusted_only(store.db, lambda group: dict(live),
                                  store.l7_reports), signed_only=True)
    watcher.run_once()
    assert len(reads) == 1, reads
    assert set(store.l7_members(t2.L7G)) == {'l7a'}
    watcher.run_once()
    assert len(reads) == 2, reads


def test_a_late_first_seal_is_logged_each_time_it_comes_back(caplog):
    """Left out at its first seal and gone, an SE shown late again is
    logged again (what is logged about an SE goes when the SE does); a
    later run's first seal shown late is logged too."""
    clock, wall = fakes.Clock(), fakes.Clock(10_000.0)
    seals = tier2.SealClock(clock=clock, wall=wall)
    late = 'its seal is shown 50 s later'
    with caplog.at_level(logging.WARNING):
        assert seals.fresh('g', {'l7a': sealed_caps(
            1, wall.now - 50.0)}, stated(0.3)) == {}
        assert seals.fresh('g', {}, stated(0.3)) == {}
        clock.now += 100
        wall.now += 100
        assert seals.fresh('g', {'l7a': sealed_caps(
            2, wall.now - 50.0)}, stated(0.3)) == {}
        assert caplog.text.count(late) == 2
        assert set(seals.fresh('g', {'l7a': sealed_caps(
            3, wall.now - 0.5)}, stated(0.3))) == {'l7a'}
        assert 'signed again' not in caplog.text
        clock.now += 1
        wall.now += 1
        assert set(seals.fresh('g', {'l7a': sealed_caps(
            1, wall.now - 50.0, OTHER_BOOT)}, stated(0.3, OTHER_BOOT))) == \
            {'l7a'}         # the previous run's seal, until it ages out
    assert caplog.text.count(late) == 3


# ------------------------------------------------- an SE's clock goes back
def _run_at_lag(seals, clock, wall, lag, seqs, reports=None):
    """Seals seqs of l7a, a second apart, each read `lag` s after it was
    signed; the ids fresh after each."""
    seen = []
    for seq in seqs:
        clock.now += 1
        wall.now += 1
        seen.append(set(seals.fresh('g', {'l7a': sealed_caps(
            seq, wall.now - lag)}, reports if reports is not None
            else stated(0.4))))
    return seen


def test_an_ses_clock_that_went_back_is_followed_once_its_report_says_so(
        caplog):
    """An L7 SE whose clock goes back 10 s (NTP corrects a clock that ran
    ahead) signs its seals 10 s "late": they do not move on (a recording
    shown late looks the same through the backend).  Its next signed
    report_state, over RPC, is as late: the run is held to its new lag,
    and the SE stays in the pools.  Before, it stayed out until its agent
    restarted."""
    clock, wall = fakes.Clock(), fakes.Clock(10_000.0)
    seals = tier2.SealClock(clock=clock, wall=wall)
    assert _run_at_lag(seals, clock, wall, 0.5, range(1, 4)) == [{'l7a'}] * 3
    # Stepped back: its seals still count until the last one that moved on
    # is stale_after old -- they do not move on.
    late = _run_at_lag(seals, clock, wall, 10.5, range(4, 11))
    assert late[:4] == [{'l7a'}] * 4 and late[-1] == set(), late
    # Its report, signed after the step, stored now: followed.
    with caplog.at_level(logging.WARNING):
        assert _run_at_lag(seals, clock, wall, 10.5, range(11, 14),
                           stated(10.4, stored=wall.now + 1)) == \
            [{'l7a'}] * 3
    assert caplog.text.count('its clock went back') == 1
    # Held to its new lag -- the report's 10.4 s, the lesser: a seal shown
    # more than 5 s later than that does not move on.
    assert _run_at_lag(seals, clock, wall, 15.45, range(14, 22),
                       stated(10.4, stored=wall.now - 3))[-1] == set()


@pytest.mark.parametrize('state_lag, seal_lag', [
    (0.4, 10.5),        # a report on time: the seals are a recording
    (2.5, 6.0),         # a report late by less than half of stale_after
    (4.0, 10.5),        # seals later than the report by more than 5 s
])
def test_a_report_not_as_late_as_the_seals_is_no_excuse(state_lag,
                                                        seal_lag):
    """Seals shown later than the run's least lag allows are a clock that
    went back only when the SE's signed report_state, stored since, is
    late too -- by more than half of stale_after -- and the seals are
    within stale_after of it."""
    clock, wall = fakes.Clock(), fakes.Clock(10_000.0)
    seals = tier2.SealClock(clock=clock, wall=wall)
    _run_at_lag(seals, clock, wall, 0.5, range(1, 4))
    seen = _run_at_lag(seals, clock, wall, seal_lag, range(4, 12), stated(
        state_lag, stored=wall.now + 1))
    # Out stale_after after its last seal that moved on (seq 3), as a
    # recording: none of the late ones moved on.
    assert seen[4] == {'l7a'} and seen[5] == set(), seen


def test_a_report_stored_before_the_runs_least_lag_fell_is_no_excuse():
    """An SE whose clock went forward 10 s: its seals' least lag falls by
    10 s.  Its report_state stored before that (at the old lag) does not
    excuse seals shown 10 s late since -- whoever keeps its writes from
    the backend could replay them so; a report stored after it does, when
    it is as late.  Nor does a report of another run, or without a stored
    time (a controller of an earlier release)."""
    for report, followed in (
            (stated(0.4, stored=10_002.0), False),     # before the fall
            (stated(0.4, OTHER_BOOT, stored=20_000.0), False),
            ({'l7a': {'seal_boot': BOOT, 'state_lag': 0.4,
                      'state_stored': None, 'stated': True}}, False),
            (stated(0.4, stored=20_000.0), True)):
        clock, wall = fakes.Clock(), fakes.Clock(10_000.0)
        seals = tier2.SealClock(clock=clock, wall=wall)
        _run_at_lag(seals, clock, wall, 0.5, range(1, 3), report)
        _run_at_lag(seals, clock, wall, -9.5, range(3, 5), report)
        seen = _run_at_lag(seals, clock, wall, 0.5, range(5, 5 + 8), report)
        assert (seen[-1] == {'l7a'}) is followed, report
