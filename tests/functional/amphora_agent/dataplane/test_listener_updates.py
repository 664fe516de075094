"""A packet never reads another listener's entry while the agent updates
the listeners map.

The map is a preallocated hash: the kernel hands the element an update
replaced (or a delete freed) to the very next update at once, with no
grace period, so a packet that looked up listener A just before could read
B's ring, id and policy in A's element a moment later.  The program
copies the entry, checks the copy against its key (``listener.check``,
bpf/listener.h) and looks it up again when the check fails
(docs/dataplane.md, "Listener entries").

One thread rewrites the map from one CPU with batch updates (a few hundred
nanoseconds apart, so the reuse lands inside a packet's processing), while
the other CPU runs SYNs to A through the loaded program.  A's member has no
route, so every run is a new flow that reads A's entry, picks A's member by
A's ring and is dropped there (drop_no_route) leaving the frame as it was:
a test run repeats it many times.  B's member has a route: a run that read
B's entry is steered to it (and, a new flow, remembered there).  Every
run must be A's drop.  Deletes free elements the same way, to the next
insert; from Python the syscalls between a delete and an insert are too far
apart to race a packet here, so only replacements are raced.
"""

import os
import secrets
import threading
import time

import pytest
from scapy.layers.inet import TCP

from amphora_agent.dataplane import dataplane
from amphora_agent.dataplane import libbpf
from amphora_agent.dataplane import model
from tests.functional.amphora_agent.dataplane import test_packet_corpus as pc
from tests.functional.amphora_agent.dataplane import test_policy as tp
from tests.unit.amphora_agent.dataplane import se_object

CPUS = sorted(os.sched_getaffinity(0))
pytestmark = pc.pytestmark + [
    pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs to race on")]

KEY_A, KEY_B = f"{pc.VIP4}:5600/tcp", f"{pc.VIP4}:5601/tcp"
MEMBER_A, MEMBER_B = pc.M4_NOROUTE, pc.M4[1]
POLICY = {KEY_A: ((MEMBER_A,),), KEY_B: ((MEMBER_B,),),
          # SeHarness.setup clears this one's next-hop cache slot.
          f"{pc.VIP4}:7070/tcp": ((pc.M4_FIB,),)}
RACE_SECONDS = 3.0
REPEAT = 1000       # program runs per BPF_PROG_TEST_RUN call
SOURCE = "203.0.113.9"
PAIRS = 256         # (A, B) pairs per batch call of the writer


@pytest.fixture(scope="module")
def harness():
    yield from tp.harness_of(tp.harness_class(POLICY, ()))


@pytest.fixture
def se(harness):
    return tp.fresh(harness)


def listener_stats(se, key):
    stats = dict(se.listener_stats(key))
    del stats["listener"]
    return stats


def icmp_error_about_a_flow_of_a():
    """An error about A's reply to a client: steered by A's entry and
    ring like a new flow (the ICMP path's own lookup)."""
    port = model.ListenerKey.parse(KEY_A).port
    return bytes(pc.icmp_err4(pc.quote4(
        TCP(sport=port, dport=40001, flags="SA"), dst=SOURCE)))


@pytest.mark.parametrize("frame_of", [
    lambda: tp.tcp(KEY_A, SOURCE, 40001), icmp_error_about_a_flow_of_a],
    ids=["new-flow", "icmp-error"])
def test_a_packet_never_reads_another_listeners_entry(se, frame_of):
    listeners = se.dp.maps[dataplane.LISTENER_MAP]
    ka, kb = (bytes(dataplane._vip_key(model.ListenerKey.parse(k)))
              for k in (KEY_A, KEY_B))
    va, vb = (listeners.lookup(k) for k in (ka, kb))
    # Back to back in the kernel: B's update takes the element A's
    # replaced a few hundred nanoseconds before.
    keys, values = (ka + kb) * PAIRS, (va + vb) * PAIRS
    frame = frame_of()
    res = se.run(frame)
    assert res.delta == {"drop_no_route": 1}, res.delta
    before = (se.counters(), listener_stats(se, KEY_A),
              listener_stats(se, KEY_B))
    stop, errors, batches = threading.Event(), [], [0]

    def writer():
        try:
            os.sched_setaffinity(0, {CPUS[0]})
            while not stop.is_set():
                listeners.update_batch(keys, values)
                batches[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer, daemon=True)
    runs = 0
    saved = os.sched_getaffinity(0)
    thread.start()
    try:
        os.sched_setaffinity(0, {CPUS[-1]})
        started = time.monotonic() + 30
        while batches[0] == 0 and not errors and time.monotonic() < started:
            time.sleep(0.01)    # poll: the writer runs before the race
        at_start = batches[0]
        assert at_start, "the writer did not start"
        deadline = time.monotonic() + RACE_SECONDS
        with se.inside():
            while time.monotonic() < deadline and not errors:
                libbpf.prog_test_run(se.prog.fd, frame, repeat=REPEAT)
                runs += REPEAT
        during = batches[0] - at_start
    finally:
        stop.set()
        thread.join(30)
        os.sched_setaffinity(0, saved)
    assert not errors, errors
    assert not thread.is_alive()
    # Each batch ends with both entries as they were.
    assert (listeners.lookup(ka), listeners.lookup(kb)) == (va, vb)
    assert during > 10, "the writer hardly ran: the race proves nothing"

    counters = se.counters()
    delta = {k: counters[k] - before[0][k] for k in counters
             if counters[k] != before[0][k]}
    assert listener_stats(se, KEY_B) == before[2], (
        f"packets of {KEY_A} read {KEY_B}'s entry: {delta}")
    # Every run read A's entry (dropped at A's member), or, rarely, found
    # no entry at all: even two lookups in a row can miss a key whose
    # bucket is rewritten back to back (docs/dataplane.md; 0-13 of
    # ~100,000 runs on a loaded host).  A drop, not a wrong member; the
    # bound only says the lookup path works.
    missed = delta.pop("drop_no_listener", 0)
    assert delta == {"drop_no_route": runs - missed}
    assert missed <= runs // 100, f"{missed} of {runs} runs missed A"
    a = listener_stats(se, KEY_A)
    assert a["drops"] - before[1]["drops"] == runs - missed


def test_the_old_listener_pin_goes_once_this_release_is_attached(harness):
    """An SE of the previous release, opened by this one: the listener
    entries are written to both maps while the old program may still be
    attached; an attach that fails keeps it so; attach() swaps this
    release's program in and removes the old pin, and writes go to
    listener_entries alone."""
    pin_dir = f"/sys/fs/bpf/octavia-dsr-test-{secrets.token_hex(4)}"
    old_pin = os.path.join(pin_dir, dataplane.RETIRED_LISTENER_MAP)
    dp = old = None
    try:
        with harness.inside():
            dp = dataplane.Dataplane.open(pin_dir, limits=pc.LIMITS)
            dp.apply(harness.base_state())
            entries = dict(dp.maps[dataplane.LISTENER_MAP].items())
            dp.close()
            os.unlink(os.path.join(pin_dir, dataplane.LISTENER_MAP))
            se_object.pin_old_listeners(pin_dir, entries,
                                        pc.LIMITS.max_listeners)
            old = libbpf.Map.from_pin(old_pin)
            dp = dataplane.Dataplane.open(pin_dir, limits=pc.LIMITS,
                                          reload=True)
            assert dp.apply(harness.base_state())["listeners_updated"] == 0
            # The loopback has no native XDP: refused, nothing retired.
            with pytest.raises(dataplane.DataplaneError):
                dp.attach("lo", "native")
            assert os.path.exists(old_pin)
            dp.attach("se0")
            assert not os.path.exists(old_pin)
            before = dict(old.items())
            state = harness.base_state()
            del state.listeners[model.ListenerKey.parse(KEY_B)]
            assert dp.apply(state)["listeners_removed"] == 1
            assert len(dict(dp.maps[dataplane.LISTENER_MAP].items())) == \
                len(entries) - 1
            assert dict(old.items()) == before
    finally:
        if old is not None:
            old.close()
        with harness.inside():
            dataplane.Dataplane.detach("se0")
            if dp is not None:
                dp.close()
            dataplane.Dataplane.remove_pins(pin_dir)
    assert not os.path.exists(pin_dir)
