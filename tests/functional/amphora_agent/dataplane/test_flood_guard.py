"""The new-flow flood guard in the real SE program (issue 15).

Frames run through the loaded ``dsr_se`` with BPF_PROG_TEST_RUN on a
dataplane programmed through ``Dataplane.apply()``, the calling thread
pinned to one CPU (the guard's window is per CPU).  With
``se_config.flood_rate`` = RATE, a CPU remembers RATE new flows per second:
the flows beyond are steered to their ring member all the same but get no
conn-table entry, and their packets are counted as ``flood_guarded``.
Established flows keep their entries, the flows a connection_limit
listener counts are always remembered (its FINs without an entry, never
counted, are not), RSTs without an entry are never remembered whatever the
rate, and rate 0 turns the guard off.

docs/dataplane.md, section *New-flow flood guard*, states these semantics.
"""

import os
import socket
import time

import pytest

from amphora_agent.dataplane import model
from amphora_agent.dataplane import structs
from tests.functional.amphora_agent.dataplane import test_packet_corpus as pc
from tests.functional.amphora_agent.dataplane import test_policy as tp

pytestmark = pc.pytestmark

RATE = 8
PLAIN = f"{pc.VIP4}:5200/tcp"
PLAIN6 = f"[{pc.VIP6}]:5200/tcp"
LIMITED = f"{pc.VIP4}:5300/tcp"
SRC4, SRC6 = "203.0.113.9", "2001:db8:c::9"
ESTABLISHED_PORT = 30000
CLOCK_MONOTONIC_COARSE = 6   # what the program's window is measured on
WINDOW_NS = 1_000_000_000    # flood.h FLOOD_WINDOW_NS

# listener -> (members, connection limit)
POLICY = {
    PLAIN: (pc.M4, 0),
    PLAIN6: (pc.M6, 0),
    LIMITED: (pc.M4, 1000),
    # The harness clears this one's next-hop cache entry.
    f"{pc.VIP4}:7070/tcp": ((pc.M4_FIB,), 0),
}
FIELDS = ("conn_limit",)


def state(**changes):
    return tp.policy_state(POLICY, FIELDS, changes)


class FloodHarness(tp.harness_class(POLICY, FIELDS)):
    def reset_window(self):
        """Every CPU's window back to "none yet": the next insert opens
        a new one."""
        m = self.dp.maps["flood_window"]
        m.update(pc._u32(0), m.join_percpu(
            [bytes(structs.FloodWindow())] * len(m.lookup_percpu(
                pc._u32(0)))))


@pytest.fixture(scope="module")
def harness():
    yield from tp.harness_of(FloodHarness)


@pytest.fixture
def se(harness):
    saved = os.sched_getaffinity(0)
    # One CPU: the window and the LRU list are per CPU.
    os.sched_setaffinity(0, {min(saved)})
    harness.write_config(flood_rate=0)
    harness.apply(harness.base_state())
    harness.forget_flows()
    harness.reset_window()
    try:
        yield harness
    finally:
        harness.write_config(flood_rate=0)
        os.sched_setaffinity(0, saved)


def burst(se, key, src, sports, flags="S"):
    """One frame of each flow, all within one window of the guard (a
    burst that took too long is run again on new ports: a window rolled
    over in the middle would let more flows in).  Returns the ports used
    and the members each was steered to."""
    for attempt in range(3):
        ports = [p + attempt * 1000 for p in sports]
        se.reset_window()
        start = time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)
        members = [tp.steered(se, tp.tcp(key, src, p, flags=flags))
                   for p in ports]
        if time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE) - start \
                < WINDOW_NS // 2:
            return ports, members
    pytest.fail("three bursts of a few frames each took half a second")


def ring_member(se, key, src, sport):
    return str(se.ring_member(key, src, sport, socket.IPPROTO_TCP)[0])


@pytest.mark.parametrize("key,src", [(PLAIN, SRC4), (PLAIN6, SRC6)])
def test_flows_over_the_rate_are_steered_but_not_remembered(se, key, src):
    # An established flow, remembered before the flood.
    tp.steered(se, tp.tcp(key, src, ESTABLISHED_PORT))
    assert se.remembered(key, src, ESTABLISHED_PORT)
    se.write_config(flood_rate=RATE)
    before = se.listener_stats(key)

    ports, members = burst(se, key, src, range(40000, 40000 + RATE + 4))

    # Every flow went to its ring member, remembered or not.
    assert members == [ring_member(se, key, src, p) for p in ports]
    kept = [p for p in ports if se.remembered(key, src, p)]
    assert kept == ports[:RATE]
    after = se.listener_stats(key)
    assert after["flood_guarded"] - before["flood_guarded"] == 4
    assert after["new_flows"] - before["new_flows"] == RATE
    assert after["conn_misses"] - before["conn_misses"] == RATE + 4
    # The established flow kept its entry and is still a hit.
    assert se.remembered(key, src, ESTABLISHED_PORT)
    tp.steered(se, tp.tcp(key, src, ESTABLISHED_PORT, flags="A",
                          payload=b"x"))
    assert se.listener_stats(key)["conn_hits"] - after["conn_hits"] == 1


def test_a_later_packet_of_a_guarded_flow_misses_and_is_guarded_again(se):
    """Not only SYNs: over the rate, an ACK without an entry is not
    remembered either (a spoofed one looks just like it)."""
    se.write_config(flood_rate=RATE)
    ports, _ = burst(se, PLAIN, SRC4, range(41000, 41000 + RATE + 1))
    guarded = ports[-1]
    before = se.listener_stats(PLAIN)
    member = tp.steered(se, tp.tcp(PLAIN, SRC4, guarded, flags="A",
                                   payload=b"x"))
    assert member == ring_member(se, PLAIN, SRC4, guarded)
    after = se.listener_stats(PLAIN)
    assert after["flood_guarded"] - before["flood_guarded"] == 1
    assert not se.remembered(PLAIN, SRC4, guarded)


def test_a_new_window_remembers_again(se):
    se.write_config(flood_rate=RATE)
    ports, _ = burst(se, PLAIN, SRC4, range(42000, 42000 + RATE + 1))
    assert not se.remembered(PLAIN, SRC4, ports[-1])
    se.reset_window()   # what a second later does
    tp.steered(se, tp.tcp(PLAIN, SRC4, ports[-1], flags="A", payload=b"x"))
    assert se.remembered(PLAIN, SRC4, ports[-1])


def test_connection_limit_flows_are_always_remembered(se):
    """limit.h counts a flow through its entry: a limited listener's flows
    are remembered even over the rate (and count towards it)."""
    se.write_config(flood_rate=RATE)
    ports, _ = burst(se, LIMITED, SRC4, range(43000, 43000 + RATE + 4))
    assert all(se.remembered(LIMITED, SRC4, p) for p in ports)
    assert se.listener_stats(LIMITED)["flood_guarded"] == 0
    # They filled this CPU's window: a plain listener's next flow is not
    # remembered.
    tp.steered(se, tp.tcp(PLAIN, SRC4, 43999))
    assert not se.remembered(PLAIN, SRC4, 43999)


def test_fin_to_a_limited_listener_is_guarded(se):
    """Admission never counts a FIN without an entry, so nothing needs its
    entry: over the rate it is steered but not remembered, or a spoofed
    FIN flood to a limited listener would evict established flows."""
    se.write_config(flood_rate=RATE)
    before = se.listener_stats(LIMITED)
    counted = se.counted(LIMITED)
    ports, members = burst(se, LIMITED, SRC4,
                           range(48000, 48000 + RATE + 4), flags="FA")
    assert members == [ring_member(se, LIMITED, SRC4, p) for p in ports]
    kept = [p for p in ports if se.remembered(LIMITED, SRC4, p)]
    assert kept == ports[:RATE]
    after = se.listener_stats(LIMITED)
    assert after["flood_guarded"] - before["flood_guarded"] == 4
    assert se.counted(LIMITED) == counted


@pytest.mark.parametrize("rate", [0, RATE])
@pytest.mark.parametrize("key,src", [(PLAIN, SRC4), (PLAIN6, SRC6),
                                     (LIMITED, SRC4)])
@pytest.mark.parametrize("flags", ["R", "RA"])
def test_a_rst_without_an_entry_is_steered_and_never_remembered(
        se, key, src, flags, rate):
    """A RST ends its flow: one without an entry goes to its ring member
    and leaves no entry, under the guard's rate or over it, guard on or
    off (so a spoofed RST flood evicts no established flow), is neither a
    new flow nor guarded, and uses none of the guard's inserts: a SYN
    after the burst is still remembered."""
    tp.steered(se, tp.tcp(key, src, ESTABLISHED_PORT))
    se.write_config(flood_rate=rate)
    before = se.listener_stats(key)
    counted = se.counted(key)
    ports, members = burst(se, key, src, range(47000, 47000 + RATE + 4),
                           flags=flags)
    assert members == [ring_member(se, key, src, p) for p in ports]
    assert [p for p in ports if se.remembered(key, src, p)] == []
    after = se.listener_stats(key)
    assert after["conn_misses"] - before["conn_misses"] == len(ports)
    assert after["new_flows"] == before["new_flows"]
    assert after["flood_guarded"] == before["flood_guarded"]
    assert se.counted(key) == counted
    assert se.remembered(key, src, ESTABLISHED_PORT)
    tp.steered(se, tp.tcp(key, src, 46000))
    assert se.remembered(key, src, 46000)


def test_a_stale_entry_is_replaced_over_the_rate(se):
    """A remembered flow whose member went away is re-steered and
    remembered again: it is an established flow, not a new one."""
    tp.steered(se, tp.tcp(PLAIN, SRC4, ESTABLISHED_PORT))
    old = ring_member(se, PLAIN, SRC4, ESTABLISHED_PORT)
    se.write_config(flood_rate=RATE)
    burst(se, PLAIN, SRC4, range(44000, 44000 + RATE + 1))
    remaining = [m for m in pc.M4 if m != old]
    se.apply(state(**{PLAIN: {"members": remaining}}))
    try:
        member = tp.steered(se, tp.tcp(PLAIN, SRC4, ESTABLISHED_PORT,
                                       flags="A", payload=b"x"))
        assert member in remaining
        entry = se.remembered(PLAIN, SRC4, ESTABLISHED_PORT)
        assert entry.real == se.real_of(PLAIN, member)[0]
    finally:
        se.apply(se.base_state())


def test_rate_zero_remembers_every_flow(se):
    before = se.listener_stats(PLAIN)
    ports, _ = burst(se, PLAIN, SRC4, range(45000, 45000 + RATE + 4))
    assert all(se.remembered(PLAIN, SRC4, p) for p in ports)
    assert se.listener_stats(PLAIN)["flood_guarded"] == \
        before["flood_guarded"]


def test_dataplane_writes_the_rate(se):
    assert se.dp.set_flood_guard_rate(125000) is True
    assert se.dp.config().flood_rate == 125000
    assert se.dp.set_flood_guard_rate(125000) is False
    with pytest.raises(model.InvalidConfig):
        se.dp.set_flood_guard_rate(-1)
