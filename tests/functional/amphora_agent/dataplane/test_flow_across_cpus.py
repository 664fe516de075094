"""A flow keeps its member when its packets arrive on different CPUs.

RSS may move a flow between receive queues (an indirection-table change, a
queue's interrupt moved, an upstream ECMP or bond change), so one flow's
packets can reach the SE's program on several CPUs.  The connection table
is one hash shared by every CPU with per-CPU LRU lists
(``BPF_F_NO_COMMON_LRU``, docs/dataplane.md *Maps*): an entry made on one
CPU is found from every other, and a lookup from any CPU marks it used, so
the CPU whose LRU list holds it does not evict it while the flow is active
elsewhere.  A per-CPU table (Katran's per-CPU LRU maps without a shared
fallback, or an LRU_PERCPU_HASH) fails these tests: the second CPU would
not know the flow and would take the ring's new choice.

Frames run through the loaded ``dsr_se`` with BPF_PROG_TEST_RUN, the
calling thread pinned to one CPU (``sched_setaffinity``; a test run runs on
the caller's CPU).  The per-CPU ``steered`` counter shows which CPU ran
each frame, so a test cannot pass by running everything on one CPU.
"""

import os
import struct

import pytest

from amphora_agent.dataplane import dataplane
from amphora_agent.dataplane import libbpf
from tests.functional.amphora_agent.dataplane import test_packet_corpus as pc
from tests.functional.amphora_agent.dataplane import test_policy as tp

CPUS = sorted(os.sched_getaffinity(0))
pytestmark = pc.pytestmark + [
    pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs to run on")]

KEY = f"{pc.VIP4}:5400/tcp"
SRC = "203.0.113.9"
FLOOD_SRC = "203.0.113.10"
TWO, THREE = pc.M4[:2], pc.M4
# A small table, so that new flows on one CPU evict within seconds: each
# CPU's LRU list holds CONN_TABLE / ncpus entries.
CONN_TABLE = 1024
STEERED = pc.structs.SE_STATS.index("steered")


class CpuHarness(tp.PolicyHarness):
    policy = {KEY: None}
    limits = dataplane.Limits(max_listeners=4, ring_size=1021, max_reals=64,
                              max_nexthops=16, conn_table_size=CONN_TABLE)

    @staticmethod
    def base_state(icmp_echo=True):
        return state(TWO)


def state(members):
    # The corpus harness clears the next-hop cache of M4_FIB's slot in
    # its :7070 listener at set-up: that listener is here too.
    return tp.desired({KEY: dict(members=members),
                       f"{pc.VIP4}:7070/tcp": dict(members=(pc.M4_FIB,))},
                      {})


@pytest.fixture(scope="module")
def harness():
    yield from tp.harness_of(CpuHarness)


@pytest.fixture
def se(harness):
    return tp.fresh(harness)


class Pinned:
    """Run frames with the calling thread on one CPU; restores the
    thread's CPU set on exit."""

    def __init__(self, se):
        self.se = se
        self.saved = os.sched_getaffinity(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.sched_setaffinity(0, self.saved)

    def steered_per_cpu(self):
        return [struct.unpack_from("<Q", v)[0] for v in
                self.se.dp.maps["se_stats"].lookup_percpu(pc._u32(STEERED))]

    def member(self, frame, cpu):
        """The member `frame` is steered to, run on `cpu` (asserted)."""
        os.sched_setaffinity(0, {cpu})
        before = self.steered_per_cpu()
        member = tp.steered(self.se, frame)
        after = self.steered_per_cpu()
        moved = [a - b for a, b in zip(after, before)]
        assert moved[cpu] == 1 and sum(moved) == 1, (
            f"the frame was not steered on CPU {cpu}: {moved}")
        return member

    def flood(self, cpu, sports):
        """New flows from FLOOD_SRC on `cpu`, one frame each (SYN)."""
        os.sched_setaffinity(0, {cpu})
        template = bytearray(tp.tcp(KEY, FLOOD_SRC, 1))
        sport_off = 14 + 20  # Ethernet + IPv4 without options
        with self.se.inside():
            for sport in sports:
                struct.pack_into("!H", template, sport_off, sport)
                res = libbpf.prog_test_run(self.se.prog.fd, bytes(template))
                assert res.retval == pc.REDIRECT, res.retval


def flows_on(pin, cpu, sports):
    """SYN of every flow on `cpu`: sport -> member."""
    return {p: pin.member(tp.tcp(KEY, SRC, p), cpu) for p in sports}


def ring_moved(se, members):
    """The flows (sport -> member) the current ring gives another member:
    without their conn-table entry they would change member."""
    moved = {p: m for p, m in members.items()
             if str(se.ring_member(KEY, SRC, p, 6)[0]) != m}
    assert moved, "the ring change moved no flow: the test would prove nothing"
    return moved


def test_flow_keeps_its_member_on_every_cpu(se):
    a, b = CPUS[0], CPUS[-1]
    with Pinned(se) as pin:
        first = flows_on(pin, a, range(42000, 42064))
        # A third member changes the ring under the established flows.
        se.apply(state(THREE))
        moved = ring_moved(se, first)
        hits0 = se.listener_stats(KEY)["conn_hits"]
        for p, m in first.items():
            assert pin.member(tp.tcp(KEY, SRC, p, flags="A"), b) == m
        # Back and forth between the CPUs, packet by packet.
        for p, m in moved.items():
            for cpu in (a, b, a, b):
                assert pin.member(tp.tcp(KEY, SRC, p, flags="PA",
                                         payload=b"x"), cpu) == m
        assert (se.listener_stats(KEY)["conn_hits"] - hits0
                == len(first) + 4 * len(moved))


def test_flow_active_on_another_cpu_survives_new_flows_on_its_first(se):
    """The entry lives in the LRU list of the CPU that made it; while that
    CPU fills its list with new flows, the flow's packets on the other CPU
    keep it referenced, so it is not the one evicted.  Flows that stay
    silent meanwhile are evicted: the flood is big enough to matter."""
    a, b = CPUS[0], CPUS[-1]
    per_cpu = CONN_TABLE // len(CPUS)
    with Pinned(se) as pin:
        first = flows_on(pin, a, range(43000, 43064))
        se.apply(state(THREE))
        moved = ring_moved(se, first)
        ports = sorted(moved)
        active, silent = ports[:8:2], ports[1::2]
        assert active and silent, moved
        batch = 16
        for start in range(0, 4 * per_cpu, batch):
            pin.flood(a, range(10000 + start, 10000 + start + batch))
            for p in active:
                assert pin.member(tp.tcp(KEY, SRC, p, flags="A"), b) \
                    == first[p], f"flow {p} lost its member after " \
                    f"{start + batch} new flows on CPU {a}"
        # The silent ones were evicted: the ring's new member now.
        evicted = [p for p in silent
                   if pin.member(tp.tcp(KEY, SRC, p, flags="A"), b)
                   != first[p]]
        assert evicted == silent


def test_a_cpu_evicts_from_its_own_share(se):
    """Each CPU's LRU list holds conn_table_size / possible CPUs entries
    (docs/dataplane.md, *Capacity is per CPU*): new flows on one CPU evict
    that CPU's old flows while the table as a whole is still half empty."""
    a = CPUS[0]
    per_cpu = CONN_TABLE // libbpf.num_possible_cpus()
    with Pinned(se) as pin:
        first = flows_on(pin, a, range(44000, 44032))
        se.apply(state(THREE))
        moved = ring_moved(se, first)
        pin.flood(a, range(20000, 20000 + per_cpu))
        entries = sum(se.dp.conn_entries().values())
        assert entries <= per_cpu < CONN_TABLE, entries
        evicted = [p for p in moved
                   if pin.member(tp.tcp(KEY, SRC, p, flags="A"), a)
                   != first[p]]
        assert evicted == sorted(moved), (
            f"{len(evicted)} of {len(moved)} evicted with {entries} of "
            f"{CONN_TABLE} entries in use")
