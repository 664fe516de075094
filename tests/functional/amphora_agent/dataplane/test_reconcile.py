"""The dataplane's full check (the agent runs it every
[agent] dataplane_check_interval): Dataplane.apply works from what it last
wrote, so a change another process makes to the live maps goes unseen by
a delta apply; apply(full=True) re-reads every map, logs the difference
and repairs it -- on the real program, in its own network namespace,
judged by the verdict and the member of a crafted first packet.
"""

import ipaddress
import logging

import pytest

from amphora_agent.dataplane import dataplane
from amphora_agent.dataplane import model
from amphora_agent.dataplane import packets
from amphora_agent.dataplane import structs
from tests.functional.amphora_agent.dataplane import test_packet_corpus as pc

KEY = f'{pc.VIP4}:80/tcp'


@pytest.fixture
def se():
    harness = pc.SeHarness()
    try:
        harness.setup()
        yield harness
    finally:
        harness.teardown()


def member_of(se, sport):
    """The member the program sends a new flow's first packet to (None:
    not steered); a new source port each time, so that no conn-table
    entry answers."""
    result = se.run(pc.syn4(dport=80, sport=sport))
    if result.retval not in (pc.TX, pc.REDIRECT):
        return None
    return ipaddress.ip_address(packets.outer_destination(result.data_out)[0])


def maps_of(se):
    return {name: sorted(se.dp.maps[name].items())
            for name in (dataplane.LISTENER_MAP, 'reals', 'vip_addrs')}


def test_full_check_repairs_a_listener_and_a_member_changed_behind_its_back(
        se, caplog):
    state = se.state
    before = maps_of(se)
    steered_to = member_of(se, 40101)
    assert steered_to in {ipaddress.ip_address(m) for m in pc.M4}
    # Another process: the listener entry deleted, a member of another
    # listener given weight 7.
    other_key = f'[{pc.VIP6}]:80/tcp'
    index, real = se.real_of(other_key, pc.M6[0])
    with se.inside(), dataplane.Dataplane.open(se.pin_dir) as other:
        other.maps[dataplane.LISTENER_MAP].delete(bytes(dataplane._vip_key(
            model.ListenerKey.parse(KEY))))
        real.weight = 7
        other.maps['reals'].update(index.to_bytes(4, 'little'), bytes(real))
    assert member_of(se, 40102) is None
    # A delta apply trusts what it wrote: the change stays unseen.
    assert not any(se.apply(state).values())
    assert member_of(se, 40103) is None

    with caplog.at_level(logging.WARNING), se.inside():
        changes = se.dp.apply(state, full=True)
    warning = caplog.text
    assert 'differ from what this agent wrote' in warning
    assert f'listener {KEY}: removed' in warning
    assert f'member slot {index}: {pc.M6[0]} of listener' in warning
    assert 'weight 1 ' in warning and 'weight 7 ' in warning
    # The listener is back (its old member slots freed, new ones taken),
    # the weight is 1 again; flows of the listener go to members again.
    assert changes['listeners_added'] == 1
    assert changes['members_removed'] == len(pc.LISTENERS[KEY][1])
    assert structs.Real.from_bytes(se.dp.maps['reals'].lookup(
        index.to_bytes(4, 'little'))).weight == 1
    assert member_of(se, 40104) in {ipaddress.ip_address(m) for m in pc.M4}
    after = maps_of(se)
    assert after['vip_addrs'] == before['vip_addrs']
    assert len(after[dataplane.LISTENER_MAP]) == len(
        before[dataplane.LISTENER_MAP])
    # Now the kept state is the maps: a second check finds nothing.
    caplog.clear()
    with caplog.at_level(logging.WARNING), se.inside():
        assert not any(se.dp.apply(state, full=True).values())
    assert 'differ' not in caplog.text
