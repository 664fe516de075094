"""timeout_client_data: the idle timeout of a flow's conn-table entry, in
the real SE program.

Frames run through the loaded ``dsr_se`` with BPF_PROG_TEST_RUN on a
dataplane programmed through ``Dataplane.apply()`` (the packet corpus's
harness, in a private namespace).

* A flow that sent nothing for longer than its listener's idle timeout no
  longer holds its member: its next packet is admitted and steered like a
  new flow (``conn_expired``, ``new_flows``), to the member the current
  ring gives it; a flow that keeps sending keeps its member across a ring
  change; a listener without a timeout (0) keeps idle flows.
* An expired flow is admitted again: over a full connection_limit it is
  dropped.
* UDP flows expire the same way; the timeout is shown as applied.

docs/dataplane.md, section *timeout_client_data*, states these semantics.
"""

import socket
import time

import pytest

from amphora_agent.dataplane import model
from amphora_agent.dataplane import structs
from tests.functional.amphora_agent.dataplane import test_packet_corpus as pc
from tests.functional.amphora_agent.dataplane import test_policy as tp

pytestmark = pc.pytestmark

VIP4, M4 = pc.VIP4, pc.M4
SRC = "203.0.113.7"
UNIT = 2 ** structs.CONN_TIME_SHIFT / 1e9   # conn-time unit, s

IDLE = f"{VIP4}:5200/tcp"      # idle timeout IDLE_MS
KEEP = f"{VIP4}:5201/tcp"      # no idle timeout
LIMIDLE = f"{VIP4}:5202/tcp"   # limit 2, idle timeout SHORT_MS
IDLEUDP = f"{VIP4}:5253/udp"   # idle timeout SHORT_MS
# Long enough that a flow refreshed every REFRESH s never comes near it,
# even when a loaded machine stalls this process for a second.
IDLE_MS, REFRESH = 2500, 0.2
SHORT_MS = 300

# listener -> (members, connection limit, idle timeout in ms)
POLICY = {
    IDLE: (M4[:2], 0, IDLE_MS),
    KEEP: (M4[:2], 0, 0),
    LIMIDLE: (M4, 2, SHORT_MS),
    IDLEUDP: (M4, 0, SHORT_MS),
    # The harness clears this one's next-hop cache entry at set-up.
    f"{VIP4}:7070/tcp": ((pc.M4_FIB,), 0, 0),
}


FIELDS = ("conn_limit", "idle_timeout_ms")


def state(**changes):
    """The desired state; changes: listener -> ListenerSpec fields to
    override (members as addresses)."""
    return tp.policy_state(POLICY, FIELDS, changes)


IdleHarness = tp.harness_class(POLICY, FIELDS)


@pytest.fixture(scope="module")
def harness():
    yield from tp.harness_of(IdleHarness)


@pytest.fixture
def se(harness):
    return tp.fresh(harness)


def ring_choice(se, key, sport):
    """The member a new TCP flow from SRC:sport gets from the ring now."""
    return str(se.ring_member(key, SRC, sport, socket.IPPROTO_TCP)[0])


def ack(key, sport):
    return tp.tcp(key, SRC, sport, flags="A", payload=b"data")


def wait_idle(since, ms):
    """Until a flow last seen at `since` (monotonic) is idle past ms: the
    timeout plus the rounding of the conn-time units and the coarse
    clock's tick."""
    time.sleep(max(0.0, since + ms / 1e3 + 3 * UNIT + 0.01
                   - time.monotonic()))


def test_idle_flow_is_steered_again_active_flow_keeps_its_member(se):
    sports = range(51000, 51040)
    before = {p: tp.steered(se, tp.tcp(IDLE, SRC, p)) for p in sports}
    kept = {p: tp.steered(se, tp.tcp(KEEP, SRC, p)) for p in sports}
    created = time.monotonic()
    # A third member: the rings change, established flows must not.
    se.apply(state(**{IDLE: {"members": M4}, KEEP: {"members": M4}}))
    active, idle = list(sports)[:20], list(sports)[20:]
    stats0 = se.listener_stats(IDLE)
    end = created + 1.5 * IDLE_MS / 1e3
    while time.monotonic() < end:
        for p in active:
            assert tp.steered(se, ack(IDLE, p)) == before[p]
        time.sleep(REFRESH)
    wait_idle(created, IDLE_MS)
    for p in active:
        assert tp.steered(se, ack(IDLE, p)) == before[p]
    stats1 = se.listener_stats(IDLE)
    assert stats1["conn_expired"] == stats0["conn_expired"] == 0
    # Idle past the timeout: each goes where the current ring says.
    after = {p: tp.steered(se, ack(IDLE, p)) for p in idle}
    stats2 = se.listener_stats(IDLE)
    assert stats2["conn_expired"] - stats1["conn_expired"] == len(idle)
    assert stats2["new_flows"] - stats1["new_flows"] == len(idle)
    for p in idle:
        assert after[p] == ring_choice(se, IDLE, p)
    moved = [p for p in idle if after[p] != before[p]]
    assert moved, "the ring change moved none of the idle flows"
    # ...and from now on they are established on that member.
    for p in idle:
        assert tp.steered(se, ack(IDLE, p)) == after[p]
    assert se.listener_stats(IDLE)["conn_expired"] == \
        stats2["conn_expired"]
    # No timeout: idle flows keep their member, also those the new ring
    # would send elsewhere.
    assert {p: tp.steered(se, ack(KEEP, p)) for p in sports} == kept
    assert any(ring_choice(se, KEEP, p) != kept[p]
               for p in sports)
    assert se.listener_stats(KEEP)["conn_expired"] == 0


def test_expired_flow_is_admitted_again(se):
    """Epochs of 2^28 ns (268 ms): flows idle past the timeout and two
    epochs no longer count; one that comes back is a new flow and meets
    a full limit."""
    se.write_config(epoch_shift=28)
    tp.steered(se, tp.tcp(LIMIDLE, SRC, 52000))
    tp.steered(se, tp.tcp(LIMIDLE, SRC, 52001))
    last = time.monotonic()
    deadline = last + 5
    while se.counted(LIMIDLE) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert se.counted(LIMIDLE) == 0
    wait_idle(last, SHORT_MS)
    tp.steered(se, tp.tcp(LIMIDLE, SRC, 52010))
    tp.steered(se, tp.tcp(LIMIDLE, SRC, 52011))
    assert se.counted(LIMIDLE) == 2
    tp.dropped(se, ack(LIMIDLE, 52000), "drop_conn_limit")
    stats = se.listener_stats(LIMIDLE)
    assert stats["drop_conn_limit"] == 1 and stats["counted_flows"] == 2
    # A place frees: the returning flow gets it.
    tp.steered(se, tp.tcp(LIMIDLE, SRC, 52010, flags="R"))
    tp.steered(se, ack(LIMIDLE, 52000))
    assert se.counted(LIMIDLE) == 2


def test_udp_flows_expire(se):
    tp.steered(se, tp.udp(IDLEUDP, SRC, 53000))
    last = time.monotonic()
    tp.steered(se, tp.udp(IDLEUDP, SRC, 53000))
    assert se.listener_stats(IDLEUDP)["conn_expired"] == 0
    wait_idle(last, SHORT_MS)
    tp.steered(se, tp.udp(IDLEUDP, SRC, 53000))
    stats = se.listener_stats(IDLEUDP)
    assert stats["conn_expired"] == 1 and stats["new_flows"] == 2


def test_timeout_is_shown_and_changed_without_moving_flows(se):
    shown = {s["listener"]: s.get("idle_timeout_ms")
             for s in se.dp.stats(conn_table_entries=False)["listeners"]}
    assert shown[IDLE] == IDLE_MS and shown[KEEP] is None
    live = se.dp.read_state().listeners
    assert live[model.ListenerKey.parse(IDLE)].idle_timeout_ms == IDLE_MS
    member = tp.steered(se, tp.tcp(KEEP, SRC, 54000))
    changes = se.apply(state(**{KEEP: {"idle_timeout_ms": 60000}}))
    assert changes["rings_written"] == 0
    assert tp.steered(se, ack(KEEP, 54000)) == member
    assert se.listener_stats(KEEP)["idle_timeout_ms"] == 60000
    assert se.listener_stats(KEEP)["conn_hits"] >= 1
