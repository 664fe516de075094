"""Rings sized by their pool (ring ABI 3), as the real program uses them:
each listener steers by its own extent of the rings map, and a ring that
changes size keeps every established flow on its member.

Flows are resolved with `lookup` (BPF_PROG_TEST_RUN on the loaded program);
one real connection per listener and a live UDP flow check the wire.
"""

import dataclasses
import ipaddress
import struct

import pytest

from amphora_agent.dataplane import dataplane
from amphora_agent.dataplane import maglev
from amphora_agent.dataplane import model
from amphora_agent.dataplane import rings as rings_mod
from amphora_agent.dataplane import structs
from tests.functional.amphora_agent.dataplane.conftest import listener
from tests.functional.amphora_agent.dataplane.test_consistency import flows
from tests.functional.amphora_agent.dataplane.test_consistency import \
    Resolver
from tests.functional.amphora_agent.dataplane.test_dsr_path import member_of
from tests.functional.amphora_agent.dataplane import test_packet_corpus as pc
from tools.lab import netns


@pytest.fixture
def resolver():
    made = []

    def factory(dsr, se='se1'):
        made.append(Resolver(dsr, se))
        return made[-1]
    yield factory
    for r in made:
        r.close()


def entry(dp, key):
    return dp._live_listeners()[model.ListenerKey.parse(key)]


def ring_in_map(dp, entry_):
    """The listener's extent of the rings map (two u32 slots per element)."""
    rings = dp.maps['rings']
    first, end = entry_.ring_off, entry_.ring_off + entry_.ring_size
    pairs = b''.join(rings.lookup(struct.pack('<I', k))
                     for k in range(first >> 1, (end + 1) >> 1))
    return list(struct.unpack(f'<{len(pairs) // 4}I', pairs))[
        first & 1:(first & 1) + entry_.ring_size]


def expected_ring(dp, entry_):
    """What every SE builds for these members at this size."""
    reals, _ = dp._live_reals()
    backends = [maglev.Backend(str(r.address), r.real.weight, r.index)
                for r in reals[entry_.id]]
    return list(maglev.build_ring(backends, entry_.ring_size)), {
        r.index: str(r.address) for r in reals[entry_.id]}


def test_two_listeners_with_different_pool_sizes_steer_by_their_own_ring(
        make_dsr, resolver):
    dsr = make_dsr(n_members=5)
    topo = dsr.topo
    addrs = dsr.member_addrs(4)
    # Both on port 80 (the members' HTTP port): one per VIP family.
    small = str(model.ListenerKey(ipaddress.ip_address(netns.VIP4), 80,
                                  'tcp'))
    large = str(model.ListenerKey(ipaddress.ip_address(netns.VIP6), 80,
                                  'tcp'))
    dsr.apply(listener(netns.VIP4, members=addrs[:2]),
              listener(netns.VIP6, members=addrs))
    ask = resolver(dsr)
    a, b = entry(ask.dp, small), entry(ask.dp, large)
    assert (a.ring_size, b.ring_size) == (4001, 8009)
    assert a.ring_off + a.ring_size <= b.ring_off \
        or b.ring_off + b.ring_size <= a.ring_off, 'the extents overlap'

    v4 = flows(600, 20000)
    v6 = [(ipaddress.ip_address(f'2001:db8:c::{i % 200 + 10:x}'),
           20000 + i // 200) for i in range(600)]
    for key, ent, members, sample in ((small, a, addrs[:2], v4),
                                      (large, b, addrs, v6)):
        ring, member_at = expected_ring(ask.dp, ent)
        assert ring_in_map(ask.dp, ent) == ring
        got = ask(key, sample)
        for (source, port), member in got.items():
            h = pc.flow_hash(source, port, 6, ent.hash_alg)
            assert member == member_at[ring[h % ent.ring_size]]
        spread = {m: list(got.values()).count(str(m)) for m in members}
        share = len(sample) / len(members)
        assert all(0.6 * share < n < 1.4 * share for n in spread.values()), \
            spread

    # Real connections land where each listener's ring says.
    by_addr = dsr.member_by_addr()
    for vip, key, client in ((netns.VIP4, small, topo.client.ipv4),
                             (netns.VIP6, large, topo.client.ipv6)):
        topo.route_vip(vip, via='se1')
        client = ipaddress.ip_address(client)
        for sport in (43001, 43002, 43003):
            served = member_of(topo.http_get(vip, source_port=sport))
            expected = ask(key, [(client, sport)])[(client, sport)]
            assert by_addr[expected] == served


def test_a_resize_keeps_established_flows_and_reuses_the_old_extent(
        make_dsr, resolver):
    dsr = make_dsr(n_members=5)
    topo = dsr.topo
    addrs = dsr.member_addrs(4)
    four, fifth = addrs[:4], addrs[4]
    tcp, udp = f'{netns.VIP4}:80/tcp', f'{netns.VIP4}:5353/udp'

    def configure(members, *more):
        dsr.apply(listener(netns.VIP4, port=80, members=members),
                  listener(netns.VIP4, port=5353, protocol='udp',
                           members=members), *more)

    configure(four)
    ask = resolver(dsr)
    before, udp_before = entry(ask.dp, tcp), entry(ask.dp, udp)
    assert before.ring_size == udp_before.ring_size == 4001
    established = flows(1000, 10000)
    on = ask(tcp, established)          # now in the connection table

    for m in topo.members:
        topo.start_udp_echo(m.name)
    prober = topo.start_udp_probe(netns.VIP4, 5353, duration=15.0,
                                  source_port=45000)

    configure(four + [fifth])           # 5 members: the next tier
    assert prober.poll() is None, 'the probe ended before the resize'
    after = entry(ask.dp, tcp)
    assert after.ring_size == 8009
    assert after.ring_off != before.ring_off
    ring, _ = expected_ring(ask.dp, after)
    assert ring_in_map(ask.dp, after) == ring
    assert ask(tcp, established) == on, 'an established flow moved'
    fresh = ask(tcp, flows(1000, 30000))
    assert sum(1 for m in fresh.values() if m == str(fifth)) > 120

    # The two freed 4001-slot extents (adjacent: one free run) are the
    # best fit for a new small ring.
    configure(four + [fifth],
              listener(netns.VIP4, port=443, members=four[:1]))
    newcomer = entry(ask.dp, f'{netns.VIP4}:443/tcp')
    assert newcomer.ring_size == 4001
    assert newcomer.ring_off == min(before.ring_off, udp_before.ring_off)

    summary = netns.probe_result(prober)
    assert summary['lost'] == 0, summary
    assert summary['switches'] == 0, summary


class SmallRingsHarness(pc.SeHarness):
    """An SE whose rings map holds three rings (ring_size 1021 caps every
    ring at 1021 slots)."""

    limits = dataclasses.replace(pc.LIMITS, ring_slots=3 * 1021)

    @staticmethod
    def base_state(icmp_echo=True):
        state = pc.SeHarness.base_state(icmp_echo)
        keep = {f'{pc.VIP4}:80/tcp', f'{pc.VIP4}:7070/tcp'}
        state.listeners = {k: v for k, v in state.listeners.items()
                           if str(k) in keep}
        return state


@pytest.fixture
def small_rings():
    harness = SmallRingsHarness()
    try:
        harness.setup()
        yield harness
    finally:
        harness.teardown()


def test_a_ring_that_does_not_fit_changes_nothing_and_names_its_listener(
        small_rings):
    se = small_rings
    before = se.dp.read_state()
    assert len(before.listeners) == 2

    def with_listeners(*ports):
        state = se.state.copy()
        for port in ports:
            key = model.ListenerKey(ipaddress.ip_address(pc.VIP4), port,
                                    'tcp')
            state.listeners[key] = model.ListenerSpec(key, members={
                a: model.Member(a) for a in map(ipaddress.ip_address,
                                                pc.M4)})
        return state

    with pytest.raises(model.InvalidConfig) as exc:
        se.apply(with_listeners(1001, 1002))
    assert str(exc.value).startswith(
        f'listener {pc.VIP4}:1002/tcp: its ring of 1021 slots (a pool of '
        f'{len(pc.M4)} members) does not fit in ring_slots 3064: no room')
    assert se.dp.read_state() == before
    assert {str(k) for k in se.dp._live_listeners()} == {
        str(k) for k in before.listeners}

    se.apply(with_listeners(1001))      # the third ring fits
    third = se.listener(f'{pc.VIP4}:1001/tcp')
    assert third.ring_size == 1021
    offsets = sorted(v.ring_off for v in se.dp._live_listeners().values())
    assert offsets == [0, 1021, 2042]


MOVE_MEMBERS = [ipaddress.ip_address(f'198.19.50.{i}') for i in range(1, 6)]


class MovingRingsHarness(pc.SeHarness):
    """Rings of 4001 slots (pools of up to 4) and 8009 (5 to 8), in a
    rings map of five small rings and 4009 slots more."""

    limits = dataclasses.replace(pc.LIMITS, ring_size=8009,
                                 ring_slots=5 * 4001 + 4009)

    @staticmethod
    def base_state(icmp_echo=True):
        return SmallRingsHarness.base_state(icmp_echo)


@pytest.fixture
def moving_rings():
    """The harness with its map fragmented: three more rings of 4001
    slots, the middle one removed -- 8010 slots free, in runs of 4001 and
    4009."""
    harness = MovingRingsHarness()
    try:
        harness.setup()
        four = MOVE_MEMBERS[:4]
        harness.apply(_with(harness, {1001: four, 1002: four, 1003: four}))
        harness.apply(_with(harness, {1002: None}))
        yield harness
    finally:
        harness.teardown()


def _with(se, members_by_port):
    state = se.state.copy()
    for port, members in members_by_port.items():
        key = model.ListenerKey(ipaddress.ip_address(pc.VIP4), port, 'tcp')
        if members is None:
            state.listeners.pop(key)
            continue
        state.listeners[key] = model.ListenerSpec(key, members={
            a: model.Member(a) for a in members})
    return state


def _rings(se):
    return {str(k): ring_in_map(se.dp, v)
            for k, v in se.dp._live_listeners().items()}


def _steered_to(se, port, sport):
    res = se.run(pc.syn4(dport=port, sport=sport))
    assert res.retval == pc.REDIRECT, res
    return ipaddress.ip_address(pc.IP(res.data_out[14:34]).dst)


def test_rings_of_unchanged_listeners_move_to_make_room_for_a_larger_one(
        moving_rings):
    """Rings removed leave free runs too short for a pool that grows past
    4 members although enough slots are free: the apply moves a ring of a
    listener it leaves alone (copied, then its entry switched) instead of
    refusing the listener, and every flow keeps its member."""
    se = moving_rings
    live = se.dp._live_listeners()
    space = rings_mod.RingSpace(
        se.dp.limits.total_ring_slots,
        [(v.ring_off, v.ring_size) for v in live.values()])
    assert space.free_slots() >= 8009
    assert max(n for _, n in space.gaps()) < 8009, space.gaps()
    before = _rings(se)
    flows_ = [(port, 41000 + i) for port in (80, 1001, 1003)
              for i in range(40)]
    served = {f: _steered_to(se, *f) for f in flows_}

    changes = se.apply(_with(se, {1004: MOVE_MEMBERS}))

    assert changes['rings_moved'] >= 1, changes
    assert changes['listeners_added'] == 1, changes
    after = _rings(se)
    new_key = f'{pc.VIP4}:1004/tcp'
    assert {k: after[k] for k in before} == before, 'a ring changed'
    entries = sorted((v.ring_off, v.ring_size)
                     for v in se.dp._live_listeners().values())
    for (a, n), (b, _) in zip(entries, entries[1:]):
        assert a + n <= b, f'extents overlap: {entries}'
    moved = [k for k, v in se.dp._live_listeners().items()
             if str(k) in before and v.ring_off != live[k].ring_off]
    assert len(moved) == changes['rings_moved'], moved
    # What the program does: the same member for every flow, and the new
    # listener by its own ring.
    assert {f: _steered_to(se, *f) for f in flows_} == served
    new = se.listener(new_key)
    assert new.ring_size == 8009
    ring, _ = expected_ring(se.dp, new)
    assert ring_in_map(se.dp, new) == ring
    for sport in range(42000, 42040):
        member = _steered_to(se, 1004, sport)
        expected, _ = se.ring_member(
            new_key, ipaddress.ip_address(pc.CLIENT4), sport, 6)
        assert member == expected


def test_a_ring_the_same_apply_removes_does_not_move_and_is_not_reused(
        moving_rings):
    """The same layout, but the listener whose ring had to move is removed
    by the same apply: its ring is in use until the apply is done, nothing
    else makes room, and the apply is refused, naming the listener, with
    nothing moved or written.  The removal alone, then the addition, fit
    without a move."""
    se = moving_rings
    before = se.dp.read_state()
    rings_before = _rings(se)
    with pytest.raises(model.InvalidConfig) as exc:
        se.apply(_with(se, {1003: None, 1004: MOVE_MEMBERS}))
    assert str(exc.value).startswith(
        f'listener {pc.VIP4}:1004/tcp: its ring of 8009 slots'), exc.value
    assert 'moving the rings of unchanged listeners does not make one' \
        in str(exc.value)
    assert se.dp.read_state() == before
    assert _rings(se) == rings_before
    se.apply(_with(se, {1003: None}))
    changes = se.apply(_with(se, {1004: MOVE_MEMBERS}))
    assert (changes['listeners_added'], changes['rings_moved']) == (1, 0)


def test_a_ring_rewritten_by_the_same_apply_may_move_first(moving_rings):
    """The listener whose ring moves also changes its members (a new
    state object for every listener, as after a full resync): its ring
    moves, then is rewritten where it went."""
    se = moving_rings
    four = MOVE_MEMBERS[:4]
    state = _with(se, {1004: MOVE_MEMBERS}).copy()
    key = model.ListenerKey(ipaddress.ip_address(pc.VIP4), 1003, 'tcp')
    state.listeners[key] = model.ListenerSpec(key, members={
        a: model.Member(a, weight=3 if a == four[0] else 1) for a in four})
    changes = se.apply(state)
    assert changes['rings_moved'] >= 1, changes
    entries = sorted((v.ring_off, v.ring_size)
                     for v in se.dp._live_listeners().values())
    for (a, n), (b, _) in zip(entries, entries[1:]):
        assert a + n <= b, f'extents overlap: {entries}'
    for port in (80, 1001, 1003, 1004):
        ent = se.listener(f'{pc.VIP4}:{port}/tcp')
        ring, _ = expected_ring(se.dp, ent)
        assert ring_in_map(se.dp, ent) == ring, port
    weights = {se.real_of(f'{pc.VIP4}:1003/tcp', a)[1].weight for a in four}
    assert weights == {1, 3}


def test_without_a_grace_period_no_ring_moves(moving_rings, monkeypatch):
    """A kernel that cannot wait out the readers of a moved ring's old
    place (membarrier refused): the ring that does not fit is refused as
    before, nothing moved."""
    from amphora_agent.dataplane import grace
    se = moving_rings
    before = se.dp.read_state()
    monkeypatch.setattr(grace, 'available', lambda: False)
    with pytest.raises(model.InvalidConfig) as exc:
        se.apply(_with(se, {1004: MOVE_MEMBERS}))
    assert 'the largest free run has 4009' in str(exc.value)
    assert 'moving' not in str(exc.value)
    assert se.dp.read_state() == before


def test_each_ring_is_copied_then_switched_then_waited_out(
        moving_rings, monkeypatch):
    """The order that keeps every packet on a whole ring: a moved ring's
    copy is in place before its listener entry switches to it, each switch
    is waited out (a grace period) before the next map write, and the new
    ring is written only after the last wait.  The removal before leaves
    extents a later apply may reuse: waited out before the first ring
    written into a new extent."""
    from amphora_agent.dataplane import grace
    se = moving_rings
    events = []
    dp = se.dp
    real_copy, real_write = dp._copy_ring_memory, dp._write_ring_memory
    listeners = dp.maps[dataplane.LISTENER_MAP]
    real_update = listeners.update
    copying = []

    def copy(src, dst, n):
        events.append(('copy', src // 4, dst // 4))
        copying.append(True)
        try:
            return real_copy(src, dst, n)
        finally:
            copying.pop()

    def write(off, data):
        if not copying:             # a ring built, not a copy's write
            events.append(('write', off // 4))
        return real_write(off, data)
    monkeypatch.setattr(dp, '_copy_ring_memory', copy)
    monkeypatch.setattr(dp, '_write_ring_memory', write)
    monkeypatch.setattr(listeners, 'update', lambda k, v: (
        events.append(('switch', structs.Listener.from_bytes(v).ring_off)),
        real_update(k, v))[1])
    real_wait = grace.wait
    monkeypatch.setattr(grace, 'wait', lambda: (
        events.append(('wait',)), real_wait())[1])

    se.apply(_with(se, {1004: MOVE_MEMBERS}))

    copies = [i for i, e in enumerate(events) if e[0] == 'copy']
    assert copies, events
    # The freed extents of the removal, waited out before anything.
    assert events[0] == ('wait',), events
    for i in copies:
        _, _, new = events[i]
        assert events[i + 1] == ('switch', new), events
        assert events[i + 2] == ('wait',), events
    writes = [i for i, e in enumerate(events) if e[0] == 'write']
    assert writes and min(writes) > copies[-1] + 2, events
