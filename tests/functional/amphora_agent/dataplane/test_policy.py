"""allowed_cidrs and connection_limit in the real SE program.

Frames run through the loaded ``dsr_se`` with BPF_PROG_TEST_RUN, on a
dataplane programmed through ``Dataplane.apply()`` (the agent's path), in a
private namespace (the packet corpus's harness).  Both families.

* allowed_cidrs: a source outside the list is dropped and counted
  (``drop_not_allowed``, SE-wide and per listener), at flow creation and for
  a non-first packet without a conn-table entry; a list without a prefix
  of the VIP's family allows nobody of that family; updates are hitless (a
  thread keeps sending while the list flips: a source in both lists is
  never dropped, one in neither is never steered).
* connection_limit: new flows beyond the limit are dropped
  (``drop_conn_limit``), established ones keep going; a client FIN or RST
  frees the flow's place at once, an idle or evicted flow after one to two
  epochs; a flow that keeps sending stays counted across epochs; a member
  removal re-steers a flow without counting it twice.

docs/dataplane.md, sections *allowed_cidrs* and *connection_limit*, states
these semantics.
"""

import ipaddress
import socket
import threading
import time

import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet import UDP
from scapy.packet import Raw

from amphora_agent.dataplane import model
from amphora_agent.dataplane import packets
from amphora_agent.dataplane import structs
from tests.functional.amphora_agent.dataplane import test_packet_corpus as pc

pytestmark = pc.pytestmark

DROP, REDIRECT = pc.DROP, pc.REDIRECT
VIP4, VIP6 = pc.VIP4, pc.VIP6
M4, M6 = pc.M4, pc.M6

ALLOWED = ("203.0.113.0/25", "2001:db8:c::/64")
IN4, OUT4 = "203.0.113.7", "203.0.113.200"
IN6, OUT6 = "2001:db8:c::7", "2001:db8:cc::7"

ACL4, ACL6 = f"{VIP4}:5000/tcp", f"[{VIP6}]:5000/tcp"
ACL6_V4ONLY = f"[{VIP6}]:5001/tcp"
LIM4, LIM6 = f"{VIP4}:5100/tcp", f"[{VIP6}]:5100/tcp"
LIMUDP = f"{VIP4}:5153/udp"
LIMIT = 3

# listener -> (members, connection limit, allowed_cidrs)
POLICY = {
    ACL4: (M4, 0, ALLOWED),
    ACL6: (M6, 0, ALLOWED),
    ACL6_V4ONLY: (M6, 0, ("203.0.113.0/24",)),
    LIM4: (M4, LIMIT, None),
    LIM6: (M6, LIMIT, None),
    LIMUDP: (M4, 2, None),
    # The harness clears this one's next-hop cache entry (FIB fallback).
    f"{VIP4}:7070/tcp": ((pc.M4_FIB,), 0, None),
}


def desired(specs, changes):
    """A desired state from specs (listener -> ListenerSpec fields, with
    members and allowed_cidrs as text) and changes (listener -> fields
    to override)."""
    st = model.DesiredState(
        tunnel_source4=ipaddress.ip_address(pc.TUNNEL4),
        tunnel_source6=ipaddress.ip_address(pc.TUNNEL6))
    for text, fields in specs.items():
        fields = dict(fields, **changes.get(text, {}))
        members = fields.pop("members")
        if "allowed_cidrs" in fields:
            fields["allowed_cidrs"] = model.parse_cidrs(
                fields["allowed_cidrs"])
        key = model.ListenerKey.parse(text)
        st.listeners[key] = model.ListenerSpec(
            key, members={ipaddress.ip_address(m): model.Member(
                ipaddress.ip_address(m)) for m in members}, **fields)
    return st


def state(**changes):
    """The harness's desired state; changes: listener -> dict of
    ListenerSpec fields to override (members as addresses)."""
    return desired({text: dict(members=members, conn_limit=limit,
                               allowed_cidrs=cidrs)
                    for text, (members, limit, cidrs) in POLICY.items()},
                   changes)


class PolicyHarness(pc.SeHarness):
    policy = POLICY   # the listeners forget_flows() resets

    @staticmethod
    def base_state(icmp_echo=True):
        return state()

    def listener_stats(self, key):
        (lst,) = [s for s in self.dp.stats(conn_table_entries=False)[
            "listeners"] if s["listener"] == key]
        return lst

    def counted(self, key):
        return self.dp.counted_flows(self.listener(key).id)

    @staticmethod
    def flow_key(key, src, sport):
        """The FlowKey of a TCP flow from src:sport to listener key."""
        lkey = model.ListenerKey.parse(key)
        src = model.parse_address(src)
        return structs.FlowKey(
            src=structs.pack_addr(src), dst=structs.pack_addr(lkey.vip),
            sport=socket.htons(sport), dport=socket.htons(lkey.port),
            proto=socket.IPPROTO_TCP, family=structs.family_of(src))

    def remembered(self, key, src, sport):
        """The conn-table entry of a TCP flow to listener key, or None."""
        return self.dp.conn_lookup(self.flow_key(key, src, sport))

    def forget_flows(self):
        """Empty the conn tables and the counts (each test starts clean)."""
        self.dp.forget_flows()
        for key in self.policy:
            self.dp._zero_conn_slots(self.listener(key).id)


def policy_state(policy, fields, changes):
    """A desired state from a policy table (listener -> (members, *the
    values of fields)), with changes (listener -> fields to override)."""
    return desired({text: dict(zip(("members",) + fields, row))
                    for text, row in policy.items()}, changes)


def harness_class(policy, fields):
    """A PolicyHarness whose base state is a policy table's (see
    policy_state) and whose forget_flows() resets its listeners."""
    class Harness(PolicyHarness):
        @staticmethod
        def base_state(icmp_echo=True):
            return policy_state(policy, fields, {})
    Harness.policy = policy
    return Harness


def harness_of(cls):
    """A module fixture's body: a set-up harness of class cls, torn
    down also on failure."""
    h = cls()
    try:
        h.setup()
        yield h
    finally:
        h.teardown()


@pytest.fixture(scope="module")
def harness():
    yield from harness_of(PolicyHarness)


def fresh(harness):
    """The harness as each test wants it: default epochs, its base state,
    no flows."""
    harness.write_config(epoch_shift=0)
    harness.apply(harness.base_state())
    harness.forget_flows()
    return harness


@pytest.fixture
def se(harness):
    return fresh(harness)


def tcp(key, src, sport, flags="S", payload=b""):
    lkey = model.ListenerKey.parse(key)
    if lkey.vip.version == 4:
        pkt = pc.ip4(dst=str(lkey.vip), src=src, flags="DF")
    else:
        pkt = pc.ip6(dst=str(lkey.vip), src=src)
    pkt = pkt / TCP(sport=sport, dport=lkey.port, flags=flags, seq=1000,
                    ack=1 if "A" in flags else 0)
    return bytes(pkt / Raw(payload) if payload else pkt)


def udp(key, src, sport):
    lkey = model.ListenerKey.parse(key)
    return bytes(pc.ip4(dst=str(lkey.vip), src=src)
                 / UDP(sport=sport, dport=lkey.port) / Raw(b"q" * 20))


def member_of(res):
    return str(packets.outer_destination(res.data_out)[0])


def steered(se, frame):
    res = se.run(frame)
    assert (res.retval, res.delta) == (REDIRECT, {"steered": 1}), (
        res.verdict, res.delta)
    return member_of(res)


def dropped(se, frame, reason):
    res = se.run(frame)
    assert (res.retval, res.delta) == (DROP, {reason: 1}), (
        res.verdict, res.delta)


# --------------------------------------------------------------- allowed_cidrs

@pytest.mark.parametrize("key,inside,outside,case", [
    (ACL4, IN4, OUT4, "v4-source-not-allowed"),
    (ACL6, IN6, OUT6, "v6-source-not-allowed"),
])
def test_allowed_cidrs(se, key, inside, outside, case):
    before = se.listener_stats(key)
    steered(se, tcp(key, inside, 40001))
    # The verdict table's row for this case (docs/dataplane.md).
    verdict, counter = pc.SPECIAL[case]
    res = se.run(tcp(key, outside, 40001))
    assert (res.retval, res.delta) == (verdict, {counter: 1})
    # Not only the first packet: anything without a conn-table entry.
    dropped(se, tcp(key, outside, 40002, flags="A", payload=b"x" * 10),
            "drop_not_allowed")
    after = se.listener_stats(key)
    assert after["drop_not_allowed"] - before["drop_not_allowed"] == 2
    assert after["drops"] - before["drops"] == 2
    assert after["new_flows"] - before["new_flows"] == 1


def test_list_without_the_vip_family_allows_nobody(se):
    """An IPv6 VIP whose list names only IPv4 prefixes: no IPv6 source."""
    dropped(se, tcp(ACL6_V4ONLY, IN6, 40003), "drop_not_allowed")
    dropped(se, tcp(ACL6_V4ONLY, OUT6, 40003), "drop_not_allowed")


def test_list_shown_as_applied(se):
    live = se.dp.read_state()
    assert live.listeners[model.ListenerKey.parse(ACL4)].allowed_cidrs == \
        model.parse_cidrs([ALLOWED[0]])
    assert live.listeners[model.ListenerKey.parse(ACL6)].allowed_cidrs == \
        model.parse_cidrs([ALLOWED[1]])
    assert se.dp.apply(live)["acls_written"] == 0  # idempotent


def test_removing_the_list_allows_everyone_and_frees_the_trie(se):
    se.apply(state(**{ACL4: {"allowed_cidrs": None},
                      ACL6: {"allowed_cidrs": None},
                      ACL6_V4ONLY: {"allowed_cidrs": None}}))
    assert not list(se.dp.maps["acl_v4"].keys())
    assert not list(se.dp.maps["acl_v6"].keys())
    steered(se, tcp(ACL4, OUT4, 40004))
    steered(se, tcp(ACL6, OUT6, 40004))


def test_established_flows_are_not_rechecked(se):
    """The check is at flow creation: tightening a list stops new flows
    from the removed prefix, the flows already on a member continue."""
    flow = tcp(ACL4, IN4, 40005)
    steered(se, flow)
    se.apply(state(**{ACL4: {"allowed_cidrs": ("198.51.100.0/24",)}}))
    steered(se, tcp(ACL4, IN4, 40005, flags="A", payload=b"x"))
    dropped(se, tcp(ACL4, IN4, 40006), "drop_not_allowed")


@pytest.mark.parametrize("key,both,neither,family", [
    (ACL4, IN4, OUT4, 4), (ACL6, IN6, OUT6, 6)])
def test_updates_are_hitless(se, key, both, neither, family):
    """While the list flips between two lists that share a prefix, a
    source of the shared prefix is never dropped and one outside both is
    never steered: no window with an empty or a missing list."""
    if family == 4:
        lists = (("203.0.113.0/28", "192.0.2.0/24"),
                 ("203.0.113.0/28", "198.18.0.0/15"))
    else:
        lists = (("2001:db8:c::/64", "2001:db8:1::/48"),
                 ("2001:db8:c::/64", "2001:db8:2::/48"))
    frames = [tcp(key, both, 42000 + i) for i in range(8)] + \
        [tcp(key, neither, 42000 + i) for i in range(8)]
    wrong, runs = [], [0]
    stop = threading.Event()

    def sender():
        # Every frame is a new flow (the table is emptied each round), so
        # every one is checked against the list in force.
        while not stop.is_set():
            with se.inside():
                for i, frame in enumerate(frames):
                    res = pc.libbpf.prog_test_run(se.prog.fd, frame)
                    ok = REDIRECT if i < 8 else DROP
                    if res.retval != ok:
                        wrong.append((i, res.retval))
                    runs[0] += 1
            se.dp.forget_flows()

    thread = threading.Thread(target=sender)
    thread.start()
    # At least 60 flips, and on until the sender has checked 400 frames
    # during them: an apply may be much faster than a round of frames.
    deadline = time.monotonic() + 60
    n = 0
    try:
        while n < 60 or runs[0] < 400:
            assert time.monotonic() < deadline, (n, runs)
            se.apply(state(**{key: {"allowed_cidrs": lists[n % 2]}}))
            n += 1
    finally:
        stop.set()
        thread.join(30)
    assert not wrong, wrong[:10]
    # The unused half of the double buffer is gone after each update (the
    # other listeners of this family store no prefix of it).
    count = sum(1 for _ in se.dp.maps[f"acl_v{family}"].keys())
    assert count == len(lists[(n - 1) % 2])


# ------------------------------------------------------------ connection_limit

@pytest.mark.parametrize("key,src,case", [
    (LIM4, IN4, "v4-over-conn-limit"),
    (LIM6, IN6, "v6-over-conn-limit"),
])
def test_limit_refuses_new_flows_only(se, key, src, case):
    ports = [43000 + i for i in range(LIMIT)]
    members = [steered(se, tcp(key, src, port)) for port in ports]
    assert se.counted(key) == LIMIT
    verdict, counter = pc.SPECIAL[case]
    res = se.run(tcp(key, src, 43100))
    assert (res.retval, res.delta) == (verdict, {counter: 1})
    # A non-first packet of a flow the SE does not know is a new flow too.
    dropped(se, tcp(key, src, 43101, flags="A", payload=b"x"),
            "drop_conn_limit")
    # Established flows keep going, to their member.
    for port, member in zip(ports, members):
        assert steered(se, tcp(key, src, port, flags="A",
                               payload=b"data")) == member
    stats = se.listener_stats(key)
    assert stats["drop_conn_limit"] == 2
    assert stats["drops"] == 2
    assert stats["connection_limit"] == LIMIT
    assert stats["counted_flows"] == LIMIT
    assert se.dp.se_counters()["drop_conn_limit"] >= 2


@pytest.mark.parametrize("close", ["FA", "R", "RA"])
def test_client_fin_or_rst_frees_the_place(se, close):
    for i in range(LIMIT):
        steered(se, tcp(LIM4, IN4, 44000 + i))
    dropped(se, tcp(LIM4, IN4, 44100), "drop_conn_limit")
    # The close itself reaches the member; the place is free at once.
    steered(se, tcp(LIM4, IN4, 44000, flags=close))
    assert se.counted(LIM4) == LIMIT - 1
    # A retransmitted FIN does not free a second place.
    steered(se, tcp(LIM4, IN4, 44000, flags=close))
    assert se.counted(LIM4) == LIMIT - 1
    steered(se, tcp(LIM4, IN4, 44100))
    dropped(se, tcp(LIM4, IN4, 44101), "drop_conn_limit")
    # The rest of the closed flow (ACKs) still goes to its member.
    steered(se, tcp(LIM4, IN4, 44000, flags="A"))


def test_new_connection_on_a_closed_flows_ports_is_admitted_again(se):
    steered(se, tcp(LIM4, IN4, 44200))
    steered(se, tcp(LIM4, IN4, 44200, flags="FA"))
    for i in range(1, LIMIT + 1):
        steered(se, tcp(LIM4, IN4, 44200 + i))
    # Full: a SYN reusing the closed flow's ports is a new connection.
    dropped(se, tcp(LIM4, IN4, 44200), "drop_conn_limit")
    steered(se, tcp(LIM4, IN4, 44201, flags="R"))
    steered(se, tcp(LIM4, IN4, 44200))
    assert se.counted(LIM4) == LIMIT


def test_udp_flows_are_limited(se):
    steered(se, udp(LIMUDP, IN4, 45000))
    steered(se, udp(LIMUDP, IN4, 45001))
    dropped(se, udp(LIMUDP, IN4, 45002), "drop_conn_limit")
    steered(se, udp(LIMUDP, IN4, 45000))


def test_idle_and_evicted_flows_stop_counting(se):
    """Epochs of 2^28 ns (268 ms: the set-up below must fit in one even on
    a loaded machine): a flow that sends nothing for two epochs no longer
    counts; deleting entries behind the program's back (what an LRU
    eviction is) leaks nothing past two epochs."""
    se.write_config(epoch_shift=28)
    epoch = 2 ** 28 / 1e9
    for i in range(LIMIT):
        steered(se, tcp(LIM4, IN4, 46000 + i))
    dropped(se, tcp(LIM4, IN4, 46100), "drop_conn_limit")
    se.dp.forget_flows()  # "evicted"
    assert se.counted(LIM4) == LIMIT  # nobody told the counts
    deadline = time.monotonic() + 5
    while se.counted(LIM4) and time.monotonic() < deadline:
        time.sleep(epoch / 4)
    assert se.counted(LIM4) == 0
    for i in range(LIMIT):
        steered(se, tcp(LIM4, IN4, 46200 + i))
    dropped(se, tcp(LIM4, IN4, 46300), "drop_conn_limit")


def test_active_flows_stay_counted_across_epochs(se):
    """Epochs of 2^28 ns (268 ms; an iteration of the loop below must stay
    well under two of them even on a loaded machine)."""
    se.write_config(epoch_shift=28)
    epoch = 2 ** 28 / 1e9
    flows = [tcp(LIM4, IN4, 47000 + i) for i in range(LIMIT)]
    for f in flows:
        steered(se, f)
    end = time.monotonic() + 8 * epoch
    while time.monotonic() < end:
        for i in range(LIMIT):
            steered(se, tcp(LIM4, IN4, 47000 + i, flags="A", payload=b"k"))
        assert se.counted(LIM4) == LIMIT
        dropped(se, tcp(LIM4, IN4, 47100), "drop_conn_limit")
        time.sleep(epoch / 3)


def test_limit_set_on_a_busy_listener_counts_its_flows(se):
    se.apply(state(**{LIM4: {"conn_limit": 0}}))
    for i in range(LIMIT):
        steered(se, tcp(LIM4, IN4, 48000 + i))
    steered(se, tcp(LIM4, IN4, 48100))  # no limit yet: a 4th flow
    se.apply(state())
    assert se.counted(LIM4) == 0  # nothing counted the old flows yet
    for i in range(LIMIT):
        steered(se, tcp(LIM4, IN4, 48000 + i, flags="A"))
    steered(se, tcp(LIM4, IN4, 48100, flags="A"))  # established: kept
    assert se.counted(LIM4) == LIMIT + 1
    dropped(se, tcp(LIM4, IN4, 48200), "drop_conn_limit")


def test_member_removal_does_not_count_a_flow_twice(se):
    sources = {}
    sport = 49000
    while len(sources) < LIMIT:  # flows on different members
        member = steered(se, tcp(LIM4, IN4, sport))
        sources.setdefault(member, sport)
        if sources[member] != sport:
            se.run(tcp(LIM4, IN4, sport, flags="R"))
        sport += 1
    assert se.counted(LIM4) == LIMIT
    gone = sorted(sources)[0]
    se.apply(state(**{LIM4: {"members": [m for m in M4 if m != gone]}}))
    # The flow re-steers to another member; it is not refused, not
    # counted again.
    assert steered(se, tcp(LIM4, IN4, sources[gone], flags="A")) != gone
    assert se.counted(LIM4) == LIMIT
    dropped(se, tcp(LIM4, IN4, 49500), "drop_conn_limit")


def test_unlimited_listeners_track_nothing(se):
    steered(se, tcp(ACL4, IN4, 49600))
    conn = [structs.Conn.from_bytes(v) for _, v in
            se.dp.maps["conn_table_v4"].items()]
    assert conn and all(c.ep == structs.CONN_EP_NONE for c in conn)
    assert not any(r.real.flags & structs.REAL_F_LIMITED for r in
                   se.dp._live_reals()[0][se.listener(ACL4).id])


def test_new_listener_and_members_start_with_zero_counters(se):
    """A listener id and member slots taken over from a removed listener
    do not inherit its counters (Octavia shows a new listener's stats)."""
    def slots(key):
        return sorted(r.index for r in se.dp._live_reals()[0][
            se.listener(key).id])
    before = se.listener_stats(ACL4)["packets"]
    for port in range(49700, 49710):
        steered(se, tcp(ACL4, IN4, port))
    assert se.listener_stats(ACL4)["packets"] == before + 10
    old_id, old_slots = se.listener(ACL4).id, slots(ACL4)
    rest = {t: dict(members=m, conn_limit=lim, allowed_cidrs=c)
            for t, (m, lim, c) in POLICY.items() if t != ACL4}
    se.apply(desired(rest, {}))
    # The lowest free id and slots are the removed listener's.
    new = f"{VIP4}:5099/tcp"
    se.apply(desired(dict(rest, **{new: dict(members=M4)}), {}))
    assert (se.listener(new).id, slots(new)) == (old_id, old_slots)
    stats = se.listener_stats(new)
    assert stats["packets"] == stats["bytes"] == stats["new_flows"] == 0
    members = [m for m in se.dp.stats(conn_table_entries=False)["members"]
               if m["listener"] == new]
    assert len(members) == len(M4)
    assert all(m["packets"] == m["bytes"] == 0 for m in members)


# ------------------------------------- a packet the SE does not steer leaves
# no conn-table entry and takes no connection_limit place

def big(key, src, sport, df):
    """A SYN to listener key that is too big once encapsulated."""
    lkey = model.ListenerKey.parse(key)
    if lkey.vip.version == 4:
        pkt = pc.ip4(dst=str(lkey.vip), src=src, flags="DF" if df else 0)
    else:
        pkt = pc.ip6(dst=str(lkey.vip), src=src)
    return bytes(pc.sized(pkt / TCP(sport=sport, dport=lkey.port,
                                    flags="S"), 1600))


def leaves_nothing(se, key, src, sport, frame, verdict, counter):
    counted = se.counted(key)
    res = se.run(frame)
    assert (res.retval, res.delta) == (verdict, {counter: 1}), (
        res.verdict, res.delta)
    assert se.remembered(key, src, sport) is None
    assert se.counted(key) == counted


@pytest.mark.parametrize("key,src,df,verdict,counter", [
    (LIM4, IN4, False, DROP, "drop_too_big"),
    (LIM4, IN4, True, pc.TX, "icmp_too_big_sent"),
    (LIM6, IN6, True, pc.TX, "icmp_too_big_sent"),
], ids=["v4-no-df", "v4-df", "v6"])
def test_too_big_new_flow_leaves_nothing(se, key, src, df, verdict,
                                         counter):
    """Dropped, or answered with a frag-needed / packet-too-big: the
    client's smaller retry is the flow, this packet is not."""
    leaves_nothing(se, key, src, 49800, big(key, src, 49800, df), verdict,
                   counter)
    # The retry is admitted, remembered and counted once.
    steered(se, tcp(key, src, 49800))
    assert se.remembered(key, src, 49800) is not None
    assert se.counted(key) == 1


@pytest.mark.parametrize("key,src,member", [(LIM4, IN4, pc.M4_NOROUTE),
                                            (LIM6, IN6, pc.M6_NOROUTE)],
                         ids=["v4", "v6"])
def test_no_route_new_flow_leaves_nothing(se, key, src, member):
    se.apply(state(**{key: {"members": (member,)}}))
    for sport in range(49810, 49810 + LIMIT + 1):
        leaves_nothing(se, key, src, sport, tcp(key, src, sport), DROP,
                       "drop_no_route")


def test_no_tunnel_source_new_flow_leaves_nothing(se):
    saved = bytes(se.dp.config())
    se.write_config(tunnel_src4=0)
    try:
        leaves_nothing(se, LIM4, IN4, 49820, tcp(LIM4, IN4, 49820), DROP,
                       "drop_no_tunnel_source")
    finally:
        se.dp.maps["se_config"].update(pc._u32(0), saved)


# ------------------------------------------------------- member slot reuse

def test_reused_slot_does_not_revive_an_entry_of_its_release(se):
    """A packet racing a member's removal can remember the flow under the
    generation written at the release (the program reads the slot's flags,
    then its gen).  The slot's next occupant has another generation, so
    that entry re-steers instead of hitting the new member (maybe of
    another listener)."""
    se.apply(state(**{LIM4: {"members": M4[1:]}}))
    # The slots as released (M4[0]'s among them), before one is reused.
    reals = se.dp.maps["reals"]
    free = {i: structs.Real.from_bytes(reals.lookup(pc._u32(i)))
            for i in range(1, reals.max_entries)}
    newcomer = "198.19.4.2"
    se.apply(state(**{LIM4: {"members": M4[1:]},
                      ACL4: {"members": M4 + (newcomer,)}}))
    index, taken = se.real_of(ACL4, newcomer)
    released = free[index]
    assert not released.flags & structs.REAL_F_IN_USE
    assert taken.gen != released.gen
    # The raced entry: a LIM4 flow remembered under the released gen.
    name, fkey = structs.conn_key(se.flow_key(LIM4, IN4, 49830))
    se.dp.maps[name].update(fkey, bytes(structs.Conn(
        real=index, gen=released.gen, ep=structs.CONN_EP_NONE)))
    before = se.listener_stats(ACL4)["packets"]
    member = steered(se, tcp(LIM4, IN4, 49830, flags="A", payload=b"x"))
    assert member in M4[1:]
    assert se.listener_stats(ACL4)["packets"] == before
    assert se.remembered(LIM4, IN4, 49830).real != index
