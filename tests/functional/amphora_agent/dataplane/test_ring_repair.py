"""A ring that does not hold what its listener's member slots say is
written again: after an apply cut short between a new member's slot and
its listener's ring (the retry reads the maps), and when another process
changed a ring behind the agent's back (the full check) -- on the real
program and maps, in the SE's own network namespace.
"""

import dataclasses
import ipaddress
import logging

import pytest

from amphora_agent.dataplane import dataplane
from amphora_agent.dataplane import model
from amphora_agent.dataplane import structs
from tests.functional.amphora_agent.dataplane import test_packet_corpus as pc
from tests.functional.amphora_agent.dataplane.test_reconcile import member_of
from tests.functional.amphora_agent import inject

KEY = f'{pc.VIP4}:80/tcp'
NEW = '198.19.4.2'      # routed like M4: via the SE's gateway


def ring_members(se, key=KEY):
    """The member addresses the listener's ring points at."""
    listener = se.listener(key)
    batch = se.dp.maps['rings'].lookup_batch(se.dp.maps['rings'].max_entries)
    slots = memoryview(batch.values).cast('I')[
        listener.ring_off:listener.ring_off + listener.ring_size]
    found = set()
    for index in set(slots):
        assert index, 'a ring slot is empty'
        real = structs.Real.from_bytes(se.dp.maps['reals'].lookup(
            index.to_bytes(4, 'little')))
        assert real.flags & structs.REAL_F_IN_USE, index
        found.add(str(structs.unpack_addr(real.addr, real.family)))
    return found


def with_new_member(state):
    key = model.ListenerKey.parse(KEY)
    spec = state.listeners[key]
    address = ipaddress.ip_address(NEW)
    listeners = dict(state.listeners)
    listeners[key] = dataclasses.replace(spec, members={
        **spec.members, address: model.Member(address)})
    return dataclasses.replace(state, listeners=listeners)


def test_a_ring_write_that_failed_is_written_by_the_retry(se, monkeypatch,
                                                          caplog):
    assert ring_members(se) == set(pc.M4)
    size = se.listener(KEY).ring_size
    state = with_new_member(se.state)
    inject.fail_first_call(
        monkeypatch, se.dp, '_write_ring',
        dataplane.DataplaneError('injected: ring write failed'))
    with pytest.raises(dataplane.DataplaneError):
        se.apply(state)
    # The new member's slot is written, the ring is not.
    se.real_of(KEY, NEW)
    assert ring_members(se) == set(pc.M4)

    # The retry re-reads the maps: the new member looks like one it has
    # with the same weight, yet the ring is written.
    with caplog.at_level(logging.WARNING):
        changes = se.apply(state)
    assert changes['rings_written'] == 1
    assert se.listener(KEY).ring_size == size
    assert ring_members(se) == set(pc.M4) | {NEW}
    assert f'listener {KEY}: its ring does not hold its members' in \
        caplog.text
    # New flows reach the new member.
    steered = {str(member_of(se, 41000 + i)) for i in range(64)}
    assert NEW in steered
    # Applied again, nothing is left to do; a full check finds nothing.
    assert not any(se.apply(state).values())
    caplog.clear()
    with caplog.at_level(logging.WARNING), se.inside():
        assert not any(se.dp.apply(state, full=True).values())
    assert caplog.text == ''


def test_a_restarted_agent_writes_the_ring_an_apply_left_unwritten(
        se, monkeypatch):
    """The process died between the slot and the ring: the next process
    reads the maps on its first apply and writes the ring."""
    state = with_new_member(se.state)

    def fail(*args, **kwargs):
        raise dataplane.DataplaneError('injected: killed here')
    monkeypatch.setattr(se.dp, '_write_ring', fail)
    with pytest.raises(dataplane.DataplaneError):
        se.apply(state)
    assert ring_members(se) == set(pc.M4)
    with se.inside(), dataplane.Dataplane.open(se.pin_dir) as other:
        assert other.apply(state)['rings_written'] == 1
    assert ring_members(se) == set(pc.M4) | {NEW}


def test_the_full_check_rewrites_a_ring_changed_behind_its_back(
        se, caplog):
    before = ring_members(se)
    listener = se.listener(KEY)
    index, _ = se.real_of(KEY, pc.M4[0])
    # Another process points the whole ring at one member.
    with se.inside(), dataplane.Dataplane.open(se.pin_dir) as other:
        other._write_ring_memory(
            listener.ring_off * 4,
            index.to_bytes(4, 'little') * listener.ring_size)
    assert ring_members(se) == {pc.M4[0]}
    # A delta apply trusts what it wrote.
    assert not any(se.apply(se.state).values())
    assert ring_members(se) == {pc.M4[0]}
    with caplog.at_level(logging.WARNING), se.inside():
        changes = se.dp.apply(se.state, full=True)
    assert changes['rings_written'] == 1
    assert ring_members(se) == before
    assert 'differ from what this agent wrote' in caplog.text
    assert f'ring of listener {KEY}: not the one this agent wrote' in \
        caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING), se.inside():
        assert not any(se.dp.apply(se.state, full=True).values())
    assert caplog.text == ''
