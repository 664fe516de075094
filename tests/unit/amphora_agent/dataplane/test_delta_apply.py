"""Delta apply in the dataplane: Dataplane.apply working from what it last
wrote (dataplane/written.py) leaves the same maps, gives the same summary
and refuses the same input with the same error as an apply that re-reads
every map, over random sequences of desired states (listeners added,
removed and changed; members added, removed, re-weighted, made backup;
allow lists, connection limits, idle timeouts and pool sizes changed;
refused changes: too many members, a ring that does not fit, too many
allowed CIDRs, a member without a tunnel source).

These load the real SE object (maps only, nothing attached): they need
root and a BPF-capable kernel.  Next hops come from a fake resolver, so
no routing state of the host is used.
"""

import dataclasses
import ipaddress
import logging
import os
import random
import secrets
import shutil

import pytest

from amphora_agent.dataplane import dataplane as dp_mod
from amphora_agent.dataplane import libbpf
from amphora_agent.dataplane import model
from amphora_agent.dataplane import nexthop
from amphora_agent.dataplane import written
from tests.unit.amphora_agent.dataplane import se_object

pytestmark = se_object.NEEDS_SE_OBJECT

# Small maps, so that the capacity checks are reached: rings of 2, 4 or
# 5 members are 4001 or 5261 slots at most (ring_size 5261).
LIMITS = dp_mod.Limits(max_listeners=6, ring_size=5261, max_reals=24,
                       max_nexthops=4, max_cidrs=6, ring_slots=4 * 5261)
VIPS = ['192.0.2.1', '192.0.2.2', '2001:db8::1']
MEMBERS4 = [f'198.19.0.{i}' for i in range(1, 9)]
MEMBERS6 = [f'2001:db8:100::{i}' for i in range(1, 5)]
CIDRS = ['203.0.113.0/24', '198.51.100.0/25', '2001:db8:c::/48',
         '203.0.113.128/25', '192.0.2.0/28']
MAPS = (dp_mod.LISTENER_MAP, 'vip_addrs', 'reals', 'nexthops', 'acl_v4',
        'acl_v6', 'rings', 'se_config')


class FakeResolver:
    """Three next hops by the member address's last byte (one of them the
    FIB), so next-hop entries are shared, added and left unused."""

    def snapshot(self):
        pass

    def forget(self):
        pass

    def close(self):
        pass

    def resolve(self, address):
        n = address.packed[-1] % 3
        if n == 0:
            return None
        return nexthop.ResolvedNexthop(n, f'02:00:00:00:00:0{n}',
                                       f'02:00:00:00:01:0{n}', 1500)


@pytest.fixture
def pair():
    """Two dataplanes: one applying from its kept state, one re-reading
    every map on every apply."""
    root = f'/sys/fs/bpf/octavia-dsr-test-{secrets.token_hex(4)}'
    made = []
    try:
        for name in ('delta', 'full'):
            dp = dp_mod.Dataplane.open(os.path.join(root, name),
                                       limits=LIMITS)
            dp._resolver = FakeResolver()
            made.append(dp)
        yield made
    finally:
        for dp in made:
            dp.destroy()
        shutil.rmtree(root, ignore_errors=True)


def contents(dp):
    """Every map apply writes: an array's values as one string of bytes
    (its keys are its indexes), a hash's (key, value) pairs sorted."""
    result = {}
    for name in MAPS:
        table = dp.maps[name]
        if table.type == libbpf.BPF_MAP_TYPE_ARRAY:
            # One batch for the whole array: the rings are 21,044 slots,
            # and pairs of them cost this test most of its time.
            batch = table.lookup_batch(table.max_entries)
            assert batch.count == table.max_entries, name
            result[name] = batch.values
        else:
            result[name] = sorted(table.items())
    return result


def _members(rng, family):
    pool = MEMBERS4 if family == 4 else MEMBERS6
    chosen = rng.sample(pool, rng.randrange(0, min(5, len(pool)) + 1))
    return {ipaddress.ip_address(a): model.Member(
        ipaddress.ip_address(a), rng.choice((0, 1, 1, 3)),
        rng.random() < 0.15) for a in chosen}


def _spec(rng, key):
    cidrs = None
    if rng.random() < 0.3:
        cidrs = model.parse_cidrs(rng.sample(CIDRS, rng.randrange(0, 4)))
    return model.ListenerSpec(
        key, rng.choice(list(model.structs.HashAlgorithm)),
        rng.choice(list(model.structs.Encap)),
        members=_members(rng, key.vip.version),
        conn_limit=rng.choice((0, 0, 100)), allowed_cidrs=cidrs,
        idle_timeout_ms=rng.choice((0, 0, 30000)),
        pool_members=rng.choice((0, 0, 3, 8)))


def _key(rng):
    return model.ListenerKey(ipaddress.ip_address(rng.choice(VIPS)),
                             rng.choice((80, 443, 53)),
                             rng.choice(('tcp', 'udp')))


def _edit(rng, state):
    """The next desired state: unchanged listeners keep their spec object
    (as the planner hands them back), edited ones get a new one."""
    listeners = dict(state.listeners)
    for _ in range(rng.randrange(1, 4)):
        choice = rng.randrange(5)
        keys = list(listeners)
        if choice == 0 or not keys:
            key = _key(rng)
            listeners[key] = _spec(rng, key)
        elif choice == 1:
            del listeners[rng.choice(keys)]
        elif choice == 2:
            key = rng.choice(keys)
            listeners[key] = _spec(rng, key)
        else:
            # One member re-weighted, added or removed.
            key = rng.choice(keys)
            old = listeners[key]
            members = {a: dataclasses.replace(m)
                       for a, m in old.members.items()}
            extra = _members(rng, key.vip.version)
            if members and rng.random() < 0.5:
                address = rng.choice(list(members))
                if rng.random() < 0.5:
                    del members[address]
                else:
                    members[address].weight = rng.randrange(0, 5)
            elif extra:
                address = rng.choice(list(extra))
                members[address] = extra[address]
            listeners[key] = dataclasses.replace(old, members=members)
    source6 = state.tunnel_source6
    if rng.random() < 0.05:
        source6 = None      # v6 members then need a source: refused
    elif source6 is None:
        source6 = ipaddress.ip_address('2001:db8:ff::1')
    return model.DesiredState(
        listeners=listeners,
        tunnel_source4=ipaddress.ip_address('198.18.0.1'),
        tunnel_source6=source6, icmp_echo=rng.random() < 0.9)


def held_by(state):
    """Written.held() counted from a desired state the maps implement."""
    cidrs = {4: 0, 6: 0}
    for key, spec in state.listeners.items():
        cidrs[key.vip.version] += len(spec.acl() or ())
    return {'max_listeners': len(state.listeners),
            'max_members': sum(len(s.members)
                               for s in state.listeners.values()),
            'ring_size': max((len(s.members)
                              for s in state.listeners.values()), default=0),
            'ring_slots': sum(s.ring_size(LIMITS.ring_size)
                              for s in state.listeners.values()),
            'max_cidrs': max(cidrs.values())}


def _apply(dp, state, **kwargs):
    try:
        return dp.apply(state, **kwargs)
    except model.InvalidConfig as exc:
        return f'InvalidConfig: {exc}'


# DSR_DELTA_SEEDS=40 for a longer run.
SEEDS = int(os.environ.get('DSR_DELTA_SEEDS', 8))


@pytest.mark.parametrize('seed', range(SEEDS))
def test_delta_apply_equals_a_full_re_read(pair, seed):
    delta, full = pair
    rng = random.Random(seed)
    state = model.DesiredState(
        tunnel_source4=ipaddress.ip_address('198.18.0.1'),
        tunnel_source6=ipaddress.ip_address('2001:db8:ff::1'))
    refused = applied = 0
    for step in range(80):
        candidate = _edit(rng, state)
        if step % 20 == 19:
            # One listener too many, whatever else the edit did.
            while len(candidate.listeners) <= LIMITS.max_listeners:
                key = _key(rng)
                candidate.listeners.setdefault(key, _spec(rng, key))
        before = contents(delta)
        full._written = None        # re-read every map
        expected = _apply(full, candidate)
        got = _apply(delta, candidate)
        assert got == expected, f'step {step}'
        if isinstance(got, str):
            refused += 1
            # Nothing written before a refused change.
            assert contents(delta) == before, f'step {step}'
        else:
            applied += 1
            state = candidate
        assert contents(delta) == contents(full), f'step {step}'
        # What it kept is what the maps hold.
        kept = delta._written
        if kept is not None:
            assert kept.differences(delta._read_written()) == [], step
        if applied:
            # What it reports holding is what the applied state asks for,
            # also after a refused change (nothing written); the caller
            # gets a dict of its own.
            delta.held()['conn_table_size'] = 1
            assert delta.held() == held_by(state), f'step {step}'
    # The sequence reached both paths.
    assert applied > 20 and refused > 0, (applied, refused)


def test_an_unchanged_state_reads_no_map(pair):
    delta, _ = pair
    # Nothing written by this process yet: it says nothing of what the
    # maps hold (reading them all for a report is not worth it).
    assert delta.held() is None
    state = model.DesiredState(
        tunnel_source4=ipaddress.ip_address('198.18.0.1'))
    rng = random.Random(1)
    for port in (80, 443):
        key = model.ListenerKey(ipaddress.ip_address(VIPS[0]), port)
        state.listeners[key] = model.ListenerSpec(
            key, members=_members(rng, 4))
    delta.apply(state)

    def refuse(*_args, **_kwargs):
        raise AssertionError('apply re-read a map')
    delta._read_written = refuse
    assert not any(delta.apply(state).values())
    again = model.DesiredState(listeners=dict(state.listeners),
                               tunnel_source4=state.tunnel_source4)
    key = next(iter(again.listeners))
    again.listeners[key] = dataclasses.replace(
        again.listeners[key], conn_limit=7)
    assert delta.apply(again)['listeners_updated'] == 1


def test_full_apply_repairs_and_logs_what_another_writer_changed(
        pair, caplog):
    delta, _ = pair
    key = model.ListenerKey(ipaddress.ip_address(VIPS[0]), 80)
    address = ipaddress.ip_address(MEMBERS4[0])
    state = model.DesiredState(
        listeners={key: model.ListenerSpec(key, members={
            address: model.Member(address, 5)})},
        tunnel_source4=ipaddress.ip_address('198.18.0.1'))
    delta.apply(state)
    want = contents(delta)
    # Another process (dsrctl) changes the member's weight.
    with dp_mod.Dataplane.open(delta.pin_dir) as other:
        changed = model.DesiredState(listeners={key: dataclasses.replace(
            state.listeners[key], members={
                address: model.Member(address, 9)})},
            tunnel_source4=state.tunnel_source4)
        other.apply(changed)
    assert contents(delta) != want
    # The delta apply trusts what it wrote: nothing to do.
    assert not any(delta.apply(state).values())
    with caplog.at_level(logging.WARNING):
        changes = delta.apply(state, full=True)
    assert changes['rings_written'] == 1
    assert contents(delta) == want
    assert 'differ from what this agent wrote' in caplog.text
    assert f'{address} of listener 0 weight 5' in caplog.text
    assert 'weight 9' in caplog.text
    # Nothing differs any more: a full apply keeps what it had.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert not any(delta.apply(state, full=True).values())
    assert caplog.text == ''
    assert written.Written is type(delta._written)


def test_members_replaced_in_a_full_slot_table_are_refused_before_writing(
        pair):
    """A leaving member keeps its slot until the rings change: with all
    23 slots in use, 3 members replaced by 3 others need 3 more.  Refused
    (InvalidConfig, nothing written), where it used to stop half-written
    on an IndexError; the removals first, then the additions, work."""
    delta, _ = pair

    def state(first):
        listeners = {}
        for port, addresses in zip((80, 443, 53, 8080), (
                first, MEMBERS4[:5], MEMBERS4[:5], MEMBERS4)):
            key = model.ListenerKey(ipaddress.ip_address(VIPS[0]), port)
            # Rings sized for 8 members whatever the count: 4 of them
            # fill ring_slots and none is resized.
            members = {ipaddress.ip_address(a): model.Member(
                ipaddress.ip_address(a)) for a in addresses}
            listeners[key] = model.ListenerSpec(key, pool_members=8,
                                                members=members)
        return model.DesiredState(
            listeners=listeners,
            tunnel_source4=ipaddress.ip_address('198.18.0.1'))
    delta.apply(state(MEMBERS4[:5]))
    before = contents(delta)
    with pytest.raises(model.InvalidConfig) as exc:
        delta.apply(state(MEMBERS4[3:8]))
    assert str(exc.value).startswith(
        '3 new members need a member slot each and only 0 of 23 are free')
    assert contents(delta) == before
    assert delta.apply(state(MEMBERS4[3:5]))['members_removed'] == 3
    assert delta.apply(state(MEMBERS4[3:8]))['members_added'] == 3
