"""The bulk read of the per-CPU counters (dataplane/percpu.py) gives the
same sums as one lookup per slot, on the real SE maps with counters set
on every CPU, across batch chunk boundaries, and past 64 bits.

These load the real SE object (maps only, nothing attached): they need
root and a BPF-capable kernel.
"""

import collections
import ipaddress
import os
import random
import secrets
import shutil

import pytest

from amphora_agent.dataplane import dataplane as dp_mod
from amphora_agent.dataplane import libbpf
from amphora_agent.dataplane import model
from amphora_agent.dataplane import percpu
from amphora_agent.dataplane import pins
from amphora_agent.dataplane import structs
from tests.unit.amphora_agent.dataplane import se_object

pytestmark = se_object.NEEDS_SE_OBJECT

LIMITS = dp_mod.Limits(max_listeners=6, ring_size=5261, max_reals=40,
                       max_nexthops=4, max_cidrs=6, ring_slots=6 * 5261)


@pytest.fixture
def dp():
    root = f'/sys/fs/bpf/octavia-dsr-test-{secrets.token_hex(4)}'
    made = None
    try:
        made = dp_mod.Dataplane.open(root, limits=LIMITS)
        yield made
    finally:
        if made is not None:
            made.destroy()
        shutil.rmtree(root, ignore_errors=True)


def _state():
    listeners = {}
    for n, port in enumerate((80, 443, 53)):
        key = model.ListenerKey(ipaddress.ip_address('192.0.2.1'), port)
        members = [ipaddress.ip_address(f'198.19.{n}.{i}')
                   for i in range(1, 6)]
        listeners[key] = model.ListenerSpec(key, members={
            a: model.Member(a, 1) for a in members})
    return model.DesiredState(
        listeners=listeners, tunnel_source4=ipaddress.ip_address(
            '198.18.0.1'))


def _set_counters(percpu_map, cls, indices, rng, big=False):
    """Random counters on every CPU of each slot (near 2**64 with big, so
    that the sums over CPUs exceed 64 bits)."""
    top = 2**64 - 1 if big else 2**40
    for index in indices:
        values = []
        for _ in range(libbpf_cpus(percpu_map)):
            item = cls(**{name: rng.randrange(top) for name, _ in
                          cls._fields_ if name != 'pad'})
            values.append(bytes(item))
        percpu_map.update(index.to_bytes(4, 'little'),
                          percpu_map.join_percpu(values))


def libbpf_cpus(percpu_map):
    return percpu_map.value_buffer_size // percpu_map.percpu_stride


def _rows(totals, indices):
    return {index: totals.row(index) for index in indices}


def _in_use(dp):
    reals, _ = dp._live_reals()
    return sorted(live.index for lst in reals.values() for live in lst)


@pytest.mark.parametrize('chunk', [percpu.CHUNK, 4, 1])
@pytest.mark.parametrize('big', [False, True])
def test_bulk_read_equals_per_slot_read(dp, monkeypatch, chunk, big):
    monkeypatch.setattr(percpu, 'CHUNK', chunk)
    dp.apply(_state())
    rng = random.Random(f'{chunk}-{big}')
    members = _in_use(dp)
    assert len(members) == 15
    listener_ids = sorted(v.id for v in dp._live_listeners().values())
    _set_counters(dp.maps['real_stats'], structs.RealStats, members, rng,
                  big)
    _set_counters(dp.maps['listener_stats'], structs.ListenerStats,
                  listener_ids, rng, big)
    # A slot not asked for, inside the range read, must not leak in.
    skipped = members.pop(len(members) // 2)
    for name, cls, indices in (
            ('real_stats', structs.RealStats, members),
            ('listener_stats', structs.ListenerStats, listener_ids)):
        bulk = percpu.totals(dp.maps[name], cls, indices)
        reference = percpu.per_slot_totals(dp.maps[name], cls, indices)
        assert _rows(bulk, indices) == _rows(reference, indices)
        assert any(v for row in _rows(bulk, indices).values()
                   for v in row.values())
    if big:
        assert max(bulk.row(listener_ids[0]).values()) >= 2**64
    assert skipped not in members


def test_stats_report_sums_every_cpu(dp):
    dp.apply(_state())
    rng = random.Random(7)
    members = _in_use(dp)
    _set_counters(dp.maps['real_stats'], structs.RealStats, members, rng)
    reference = percpu.per_slot_totals(dp.maps['real_stats'],
                                       structs.RealStats, members)
    reals, _ = dp._live_reals()
    by_address = {str(live.address): reference.row(live.index)
                  for lst in reals.values() for live in lst}
    report = dp.stats(conn_table_entries=False)
    assert len(report['members']) == len(members)
    for row in report['members']:
        assert {k: row[k] for k in ('packets', 'bytes', 'new_flows')} == \
            by_address[row['address']]


def test_no_slots_in_use(dp):
    totals = percpu.totals(dp.maps['real_stats'], structs.RealStats, [])
    assert totals.fields == ['packets', 'bytes', 'new_flows']


def test_the_applying_dataplane_reports_what_a_fresh_reader_reads(dp):
    """The agent's Dataplane answers stats() and conn_census() from what
    it wrote, without parsing the member slots; a reader opened on the same
    pins (dsrctl, the metrics endpoint) reads the maps.  Same answers,
    after a removal moved a slot's generation and an addition reused it."""
    state = _state()
    dp.apply(state)
    later = _state()
    spec = next(iter(later.listeners.values()))
    del spec.members[next(iter(spec.members))]
    extra = ipaddress.ip_address('2001:db8:5::7')
    spec.members[extra] = model.Member(extra, 2)
    later.tunnel_source6 = ipaddress.ip_address('2001:db8::1')
    dp.apply(later)
    assert dp._written is not None
    reader = dp_mod.Dataplane.open(dp.pin_dir, create=False)
    try:
        assert reader._written is None
        reals, _ = reader._live_reals()
        slots = [(live.index, live.real.gen) for lst in reals.values()
                 for live in lst]
        _set_counters(dp.maps['real_stats'], structs.RealStats,
                      [index for index, _ in slots], random.Random(3))
        # Flows on every member, plus one on a stale generation.
        # Flows of both families: each in its family's table.
        flows = slots + [(slots[0][0], slots[0][1] + 1)]
        families = collections.Counter()
        for n, (index, gen) in enumerate(flows):
            family = (structs.FAMILY_V4, structs.FAMILY_V6)[n % 2]
            families[family] += 1
            name, key = structs.conn_key(structs.FlowKey(
                sport=1000 + n, dport=80, proto=6, family=family))
            dp.maps[name].update(key, bytes(structs.Conn(real=index,
                                                         gen=gen)))
        mine, theirs = dp.stats(), reader.stats()
        assert mine == theirs
        assert str(extra) in {row['address'] for row in mine['members']}
        assert dp.conn_census() == reader.conn_census()
        assert dp.conn_census()[0] == dp.conn_entries() == dict(families)
        assert sum(dp.conn_census()[1].values()) == len(slots)
        # Nothing parsed and kept by the writer's reports.
        assert dp._real_cache == {}
    finally:
        reader.close()


def test_an_upgrade_in_place_keeps_config_and_moves_ipv4_flows(dp):
    """The release two before this one pinned every map but conn_table_v4
    and listener_entries, kept IPv4 flows in conn_table and its listener
    entries, without check, in 'listeners'.  Opened by this release, the
    dataplane is loaded again beside its maps: its config stays,
    conn_table_v4 is created, IPv4 entries move there (their members kept),
    IPv6 entries stay where they were, and the listener entries are copied
    into listener_entries, sealed."""
    dp.apply(_state())
    entries = dict(dp.maps[dp_mod.LISTENER_MAP].items())
    config = bytes(dp.config())
    assert dp.config().tunnel_src4    # what a fresh dataplane would reset
    flows = {}
    for n, family in enumerate((structs.FAMILY_V4, structs.FAMILY_V6) * 3):
        flow = structs.FlowKey(sport=2000 + n, dport=80, proto=6,
                               family=family)
        flow.src[0] = 0x0a000001 + n
        conn = structs.Conn(real=n + 1, gen=7, hash=n)
        dp.maps['conn_table'].update(bytes(flow), bytes(conn))
        flows[bytes(flow)] = conn
    pin_dir = dp.pin_dir
    dp.close()
    # What an SE of that release has pinned.
    os.unlink(os.path.join(pin_dir, 'conn_table_v4'))
    os.unlink(os.path.join(pin_dir, dp_mod.LISTENER_MAP))
    _pin_old_listeners(pin_dir, entries)
    assert not dp_mod.Dataplane.is_pinned(pin_dir)
    with pytest.raises(dp_mod.DataplaneError):
        dp_mod.Dataplane.open(pin_dir, create=False)

    upgraded = dp_mod.Dataplane.open(pin_dir, limits=LIMITS)
    try:
        assert dp_mod.Dataplane.is_pinned(pin_dir)
        assert bytes(upgraded.config()) == config
        for raw, conn in flows.items():
            flow = structs.FlowKey.from_bytes(raw)
            assert bytes(upgraded.conn_lookup(flow)) == bytes(conn)
        assert upgraded.conn_entries() == {structs.FAMILY_V4: 3,
                                           structs.FAMILY_V6: 3}
        assert dict(upgraded.maps[dp_mod.LISTENER_MAP].items()) == entries
        # Opened again: nothing left to move.
        again = dp_mod.Dataplane.open(pin_dir, limits=LIMITS)
        assert again.conn_entries() == upgraded.conn_entries()
        again.close()
        # A start cut short between the load and the move left an IPv4
        # flow in conn_table: moved at the next start (the old listeners
        # pin stays until this release's program is attached).
        raw = next(r for r in flows
                   if structs.FlowKey.from_bytes(r).family ==
                   structs.FAMILY_V4)
        flow = structs.FlowKey.from_bytes(raw)
        upgraded.maps['conn_table_v4'].delete(structs.conn_key(flow)[1])
        upgraded.maps['conn_table'].update(raw, bytes(flows[raw]))
        again = dp_mod.Dataplane.open(pin_dir, limits=LIMITS)
        assert again.conn_entries() == {structs.FAMILY_V4: 3,
                                        structs.FAMILY_V6: 3}
        assert bytes(again.conn_lookup(flow)) == bytes(flows[raw])
        again.close()
    finally:
        upgraded.destroy()


def _pin_old_listeners(pin_dir, entries, value_size=24):
    return se_object.pin_old_listeners(pin_dir, entries,
                                       LIMITS.max_listeners, value_size)


def _retired(pin_dir):
    path = os.path.join(pin_dir, dp_mod.RETIRED_LISTENER_MAP)
    if not os.path.exists(path):
        return None
    with libbpf.Map.from_pin(path) as old:
        return dict(old.items())


def _unsealed(entries):
    return {k: v[:dp_mod.RETIRED_LISTENER_SIZE] for k, v in entries.items()}


def test_an_upgrade_in_place_seals_the_listener_entries(dp):
    """The previous release kept its listener entries, with no check, in
    a map pinned as 'listeners'.  Opened by this release, the dataplane
    copies them into listener_entries, each with the check the program
    wants; the same state applied then changes no listener.  Until this
    release's program is attached (attach(): functional test), the old
    program still reads 'listeners': every write goes to both maps, so
    a read-only open, or an agent started again before the swap, sees
    the same entries."""
    dp.apply(_state())
    entries = dict(dp.maps[dp_mod.LISTENER_MAP].items())
    assert len(entries) == 3
    pin_dir = dp.pin_dir
    dp.close()
    os.unlink(os.path.join(pin_dir, dp_mod.LISTENER_MAP))
    _pin_old_listeners(pin_dir, entries)
    assert not dp_mod.Dataplane.is_pinned(pin_dir)

    upgraded = dp_mod.Dataplane.open(pin_dir, limits=LIMITS)
    try:
        assert dict(upgraded.maps[dp_mod.LISTENER_MAP].items()) == entries
        for key, value in entries.items():
            listener = structs.Listener.from_bytes(value)
            assert listener.check == structs.listener_check(
                structs.VipKey.from_bytes(key), listener) != 0
        changes = upgraded.apply(_state())
        assert (changes['listeners_added'], changes['listeners_updated'],
                changes['listeners_removed']) == (0, 0, 0)
        # Writes reach both maps: a listener removed, one changed.
        state = _state()
        first, second = sorted(state.listeners)[:2]
        del state.listeners[first]
        state.listeners[second].conn_limit = 5
        changes = upgraded.apply(state)
        assert (changes['listeners_updated'],
                changes['listeners_removed']) == (1, 1)
        now = dict(upgraded.maps[dp_mod.LISTENER_MAP].items())
        assert len(now) == 2 and now != entries
        assert _retired(pin_dir) == _unsealed(now)
        # A read-only open writes through to both as well.
        with dp_mod.Dataplane.open(pin_dir, create=False) as reader:
            assert reader.apply(_state())['listeners_added'] == 1
        now = dict(upgraded.maps[dp_mod.LISTENER_MAP].items())
        assert len(now) == 3
        assert _retired(pin_dir) == _unsealed(now)
        # An agent started again before the swap: the same entries, and
        # this release's program loaded again (the pinned one might be the
        # earlier release's: a load killed half-way pins maps, not it).
        prog_id = _program_id(pin_dir)
        upgraded.close()
        upgraded = dp_mod.Dataplane.open(pin_dir, limits=LIMITS)
        assert dict(upgraded.maps[dp_mod.LISTENER_MAP].items()) == now
        assert _program_id(pin_dir) != prog_id
        # A copy cut short (a key missing) is completed at the next open,
        # and a key both maps hold is not copied again: the old map's
        # value never overwrites what a running agent wrote since.
        missing, kept = sorted(now)[:2]
        upgraded.maps[dp_mod.LISTENER_MAP].delete(missing)
        stale = structs.Listener.from_bytes(now[kept])
        stale.ring_off += 1
        with libbpf.Map.from_pin(os.path.join(
                pin_dir, dp_mod.RETIRED_LISTENER_MAP)) as old:
            old.update(kept, bytes(stale)[:dp_mod.RETIRED_LISTENER_SIZE])
        upgraded.close()
        upgraded = dp_mod.Dataplane.open(pin_dir, limits=LIMITS)
        assert dict(upgraded.maps[dp_mod.LISTENER_MAP].items()) == now
    finally:
        upgraded.destroy()
    assert _retired(pin_dir) is None
    assert not os.path.exists(pin_dir)


def _program_id(pin_dir):
    with pins.open_program(pin_dir, dp_mod.SE_PROGRAM) as prog:
        return prog.info().id


def test_without_the_old_pin_an_open_keeps_the_pinned_program(dp):
    pin_dir = dp.pin_dir
    prog_id = _program_id(pin_dir)
    dp_mod.Dataplane.open(pin_dir, limits=LIMITS).close()
    assert _program_id(pin_dir) == prog_id


def test_listeners_of_another_layout_are_refused_before_anything_loads(dp):
    dp.apply(_state())
    entries = dict(dp.maps[dp_mod.LISTENER_MAP].items())
    pin_dir = dp.pin_dir
    tag = dp_mod.Dataplane.program_tag(pin_dir)
    dp.close()
    os.unlink(os.path.join(pin_dir, dp_mod.LISTENER_MAP))
    old = _pin_old_listeners(pin_dir, entries, value_size=20)
    before = sorted(os.listdir(pin_dir))
    with pytest.raises(dp_mod.DataplaneError, match='dsrctl reset'):
        dp_mod.Dataplane.open(pin_dir, limits=LIMITS)
    assert sorted(os.listdir(pin_dir)) == before
    assert dp_mod.Dataplane.program_tag(pin_dir) == tag
    # dsrctl reset removes it all, this release's pins and the old one.
    removed = dp_mod.Dataplane.remove_pins(pin_dir)
    assert dp_mod.RETIRED_LISTENER_MAP in removed
    assert not os.path.exists(old) and not os.path.exists(pin_dir)


def test_an_old_listeners_pin_without_its_dataplane_is_not_copied(dp):
    """Not beside an earlier release's whole dataplane: a fresh one is
    loaded, and the stray pin's entries (of rings and members that may be
    gone) are not copied into it."""
    dp.apply(_state())
    entries = dict(dp.maps[dp_mod.LISTENER_MAP].items())
    pin_dir = dp.pin_dir
    dp.destroy()
    os.makedirs(pin_dir)
    old = _pin_old_listeners(pin_dir, entries)
    fresh = dp_mod.Dataplane.open(pin_dir, limits=LIMITS)
    try:
        assert not os.path.exists(old)
        assert dict(fresh.maps[dp_mod.LISTENER_MAP].items()) == {}
    finally:
        fresh.destroy()


def test_the_check_changes_with_every_field():
    """listener_check(): a change to any one field or key word changes it
    (FNV steps are bijections).  That it is the program's own is what
    every functional test shows: an entry whose check the program does
    not compute alike is never used (drop_internal)."""
    key = structs.VipKey(port=80, proto=6, family=4)
    key.addr[0] = 0x0100000a
    base = structs.Listener(id=3, hash_alg=1, encap=1, flags=2,
                            conn_limit=7, idle_ms=9, ring_off=11,
                            ring_size=13)
    # Pinned: FNV-1a of these 11 words (listener.h hashes the same ones).
    assert structs.listener_check(key, base) == _fnv1a_words(
        [0x0100000a, 0, 0, 0, 80 | 6 << 16 | 4 << 24,
         3, 1 | 1 << 8 | 2 << 16, 7, 9, 11, 13])
    seen = {structs.listener_check(key, base)}
    for name, _ in structs.Listener._fields_[:-1]:
        changed = structs.Listener.from_buffer_copy(bytes(base))
        setattr(changed, name, getattr(base, name) + 1)
        seen.add(structs.listener_check(key, changed))
    for word in range(4):
        other = structs.VipKey.from_buffer_copy(bytes(key))
        other.addr[word] ^= 0x80
        seen.add(structs.listener_check(other, base))
    for name in ('port', 'proto', 'family'):
        other = structs.VipKey.from_buffer_copy(bytes(key))
        setattr(other, name, getattr(key, name) + 1)
        seen.add(structs.listener_check(other, base))
    assert len(seen) == 1 + 8 + 4 + 3
    # The check field itself is not hashed.
    base.check = 12345
    assert structs.listener_check(key, base) in seen


def _fnv1a_words(words):
    h = 0x4c697374
    for w in words:
        h = ((h ^ w) * 0x01000193) % 2 ** 32
    return h
