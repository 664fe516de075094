"""A corpus of valid, malformed and odd frames through the real SE program.

Every frame runs through the loaded, configured ``dsr_se`` XDP program with
BPF_PROG_TEST_RUN.  For each one the test asserts the XDP verdict *and* that
exactly one ``se_stats`` counter moved, by exactly one: the one the verdict
table in docs/dataplane.md names (``test_verdict_table_matches_docs`` keeps
the two in step).  Steered frames, echo replies and the SE's own
frag-needed / packet-too-big are parsed back with scapy and checked field by
field (outer header, checksums, quoted bytes, the member Maglev picked).

The dataplane lives in a private network namespace ``dsrc<random>`` with one
veth towards a static next hop (permanent neighbour entries, routes to the
member subnets): member next hops are resolved, and BPF_PROG_TEST_RUN runs,
in the namespace of the calling thread, so the test thread enters it for
those calls only (``SeHarness.inside``).  In BPF_PROG_TEST_RUN the ingress
device is that namespace's ``lo``: a steered frame leaves on the veth, so
its verdict is XDP_REDIRECT; ``test_steer_to_ingress_interface_is_tx``
passes the veth as the ingress instead and gets XDP_TX.

Needs root (namespaces, BPF) and the built objects (``make build``).
"""

import contextlib
import dataclasses
import errno
import ipaddress
import os
from pathlib import Path
import random
import re
import secrets
import shutil
import socket
import struct
from typing import Callable
from typing import Optional

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
import pytest
from scapy.layers.inet import ICMP
from scapy.layers.inet import IP
from scapy.layers.inet import TCP
from scapy.layers.inet import UDP
from scapy.layers.inet6 import ICMPv6DestUnreach
from scapy.layers.inet6 import ICMPv6EchoReply
from scapy.layers.inet6 import ICMPv6EchoRequest
from scapy.layers.inet6 import ICMPv6ND_NA
from scapy.layers.inet6 import ICMPv6ND_NS
from scapy.layers.inet6 import ICMPv6NDOptSrcLLAddr
from scapy.layers.inet6 import ICMPv6PacketTooBig
from scapy.layers.inet6 import ICMPv6ParamProblem
from scapy.layers.inet6 import ICMPv6TimeExceeded
from scapy.layers.inet6 import IPv6
from scapy.layers.inet6 import IPv6ExtHdrDestOpt
from scapy.layers.inet6 import IPv6ExtHdrFragment
from scapy.layers.inet6 import IPv6ExtHdrHopByHop
from scapy.layers.inet6 import IPv6ExtHdrRouting
from scapy.layers.inet6 import Jumbo
from scapy.layers.l2 import ARP
from scapy.layers.l2 import Dot1AD
from scapy.layers.l2 import Dot1Q
from scapy.layers.l2 import Ether
from scapy.layers.sctp import SCTP
from scapy.packet import Raw

from amphora_agent.dataplane import dataplane
from amphora_agent.dataplane import libbpf
from amphora_agent.dataplane import model
from amphora_agent.dataplane import structs

REPO = Path(__file__).resolve().parents[4]
DOC = REPO / "docs" / "dataplane.md"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="needs root (network namespaces, BPF)"),
    pytest.mark.skipif(
        not os.path.exists(os.path.join(dataplane.object_dir(),
                                        dataplane.SE_OBJECT)),
        reason="BPF objects not built (make build)"),
]

# XDP verdicts.
ABORTED, DROP, PASS, TX, REDIRECT = 0, 1, 2, 3, 4
VERDICT_NAMES = {ABORTED: "ABORTED", DROP: "DROP", PASS: "PASS", TX: "TX",
                 REDIRECT: "REDIRECT"}
VERDICT_BY_NAME = {v: k for k, v in VERDICT_NAMES.items()}

# Addresses (documentation / benchmarking ranges only).
VIP4 = "198.51.100.10"
VIP6 = "2001:db8:100::10"
CLIENT4 = "203.0.113.7"
CLIENT6 = "2001:db8:c::7"
ROUTER4 = "203.0.113.254"     # source of ICMP errors "from the path"
ROUTER6 = "2001:db8:c::fe"
OTHER4 = "198.51.100.99"      # not a VIP
OTHER6 = "2001:db8:100::99"
SE4, SE_GW4 = "198.18.0.2", "198.18.0.1"          # SE veth, next hop
SE6, SE_GW6 = "2001:db8:ff::2", "2001:db8:ff::1"
TUNNEL4, TUNNEL6 = "198.18.0.2", "2001:db8:ff::2"  # tunnel sources
GW_MAC = "02:00:5e:00:53:01"   # static neighbour: the next hop's MAC
PEER_MAC = "02:00:5e:00:53:aa"  # "router" that sent the frame to the SE
SE_MAC = "02:00:5e:00:53:bb"    # destination MAC of frames to the SE
LINK_MTU = 1500
SMALL_MTU = 1300               # route MTU towards M6_SMALLMTU
OUTER_TTL = dataplane.DEFAULT_TTL

M4 = ("198.19.1.2", "198.19.2.2", "198.19.3.2")
M6 = ("2001:db8:101::2", "2001:db8:102::2", "2001:db8:103::2")
M4_FIB = "198.19.7.2"          # next hop cache entry cleared: FIB fallback
M4_NOROUTE = "192.0.2.200"     # no route in the SE's namespace
M6_NOROUTE = "2001:db8:dead::2"
M6_SMALLMTU = "2001:db8:1ff::2"
M4_STICKY = ("198.19.6.2", "198.19.6.3")  # listener :6060, test_icmp_error_*

IPIP, GRE = structs.Encap.IPIP, structs.Encap.GRE

# listener -> (encapsulation, members).  Outer family = the members' family.
LISTENERS = {
    f"{VIP4}:80/tcp": (IPIP, M4),
    f"{VIP4}:53/udp": (IPIP, M4),
    f"{VIP4}:443/tcp": (GRE, M4),
    f"{VIP4}:8443/tcp": (IPIP, M6),
    f"{VIP4}:9443/tcp": (GRE, M6),
    f"{VIP4}:8080/tcp": (IPIP, ()),
    f"{VIP4}:9090/tcp": (IPIP, (M4_NOROUTE,)),
    f"{VIP4}:7070/tcp": (IPIP, (M4_FIB,)),
    f"{VIP4}:6060/tcp": (IPIP, M4_STICKY[:1]),
    f"[{VIP6}]:80/tcp": (IPIP, M6),
    f"[{VIP6}]:53/udp": (IPIP, M6),
    f"[{VIP6}]:443/tcp": (GRE, M6),
    f"[{VIP6}]:8443/tcp": (IPIP, M4),
    f"[{VIP6}]:9443/tcp": (GRE, M4),
    f"[{VIP6}]:9090/tcp": (IPIP, (M6_NOROUTE,)),
    f"[{VIP6}]:2020/tcp": (IPIP, (M6_SMALLMTU,)),
}
LIMITS = dataplane.Limits(max_listeners=16, ring_size=1021, max_reals=256,
                          max_nexthops=64, conn_table_size=65536)

ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD


# --------------------------------------------------------------------------
# Checksums and the program's flow hash, re-implemented for verification


def inet_csum(data):
    """RFC 1071 checksum; 0 over a block that includes a valid checksum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp6_csum_ok(src, dst, icmp):
    pseudo = (ipaddress.ip_address(src).packed
              + ipaddress.ip_address(dst).packed
              + struct.pack("!I3xB", len(icmp), socket.IPPROTO_ICMPV6))
    return inet_csum(pseudo + icmp) == 0


_M32 = 0xFFFFFFFF
HASH_SEED = 0x4F637461  # jhash.h DSR_HASH_SEED


def _rol(w, s):
    return ((w << s) | (w >> (32 - s))) & _M32


def jhash_5words(w, extra):
    """bpf/jhash.h jhash_5words (lookup3 mix + final)."""
    a = b = c = (0xDEADBEEF + (5 << 2) + HASH_SEED) & _M32
    a = (a + w[0]) & _M32
    b = (b + w[1]) & _M32
    c = (c + w[2]) & _M32
    for x, y, z, s in ((0, 2, 1, 4), (1, 0, 2, 6), (2, 1, 0, 8),
                       (0, 2, 1, 16), (1, 0, 2, 19), (2, 1, 0, 4)):
        v = [a, b, c]
        v[x] = (v[x] - v[y]) & _M32
        v[x] ^= _rol(v[y], s)
        v[y] = (v[y] + v[z]) & _M32
        a, b, c = v
    a = (a + w[3]) & _M32
    b = (b + extra) & _M32
    for x, y, s in ((2, 1, 14), (0, 2, 11), (1, 0, 25), (2, 1, 16),
                    (0, 2, 4), (1, 0, 14), (2, 1, 24)):
        v = [a, b, c]
        v[x] ^= v[y]
        v[x] = (v[x] - _rol(v[y], s)) & _M32
        a, b, c = v
    return c


def flow_hash(src, sport, proto,
              algorithm=structs.HashAlgorithm.SOURCE_IP_PORT):
    """The program's flow_hash(): words as the CPU loads them (LE host)."""
    raw = ipaddress.ip_address(src).packed.ljust(16, b"\0")
    words = struct.unpack("<4I", raw)
    if algorithm == structs.HashAlgorithm.SOURCE_IP:
        return jhash_5words(words, 0)
    sport_word = struct.unpack("<H", struct.pack("!H", sport))[0]
    return jhash_5words(words, (sport_word << 16) | proto)


# --------------------------------------------------------------------------
# The SE under test


def _u32(v):
    return struct.pack("<I", v)


@dataclasses.dataclass
class Result:
    retval: int
    data_out: bytes
    delta: dict  # se_stats counters that moved: name -> increment

    @property
    def verdict(self):
        return VERDICT_NAMES.get(self.retval, str(self.retval))


class SeHarness:
    """A configured SE dataplane in its own network namespace."""

    limits = LIMITS  # map sizes (a subclass may shrink the conn table)

    def __init__(self):
        tag = secrets.token_hex(4)
        self.ns = "dsrc" + tag
        self.pin_dir = "/sys/fs/bpf/octavia-dsr-test-" + tag
        self.dp = None
        self.prog = None
        self.ifindex = None
        self.mac = None
        self.state = None

    # -- namespace ---------------------------------------------------------

    @contextlib.contextmanager
    def inside(self):
        """Run the block with this thread in the SE's namespace."""
        saved = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            pr_netns.setns(self.ns, flags=0)
            try:
                yield
            finally:
                pr_netns.setns(saved)
        finally:
            os.close(saved)

    def sysctl(self, key, value):
        with self.inside():
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(f"{value}\n")

    def setup(self):
        pr_netns.create(self.ns)
        with self.inside(), IPRoute() as ip:
            ip.link("set", index=ip.link_lookup(ifname="lo")[0], state="up")
            ip.link("add", ifname="se0", kind="veth", peer="nh0")
            se0 = ip.link_lookup(ifname="se0")[0]
            nh0 = ip.link_lookup(ifname="nh0")[0]
            ip.link("set", index=se0, mtu=LINK_MTU, state="up")
            ip.link("set", index=nh0, mtu=LINK_MTU, state="up")
            ip.addr("add", index=se0, address=SE4, prefixlen=30)
            ip.addr("add", index=se0, address=SE6, prefixlen=64,
                    flags=0x02)  # IFA_F_NODAD
            for gw in (SE_GW4, SE_GW6):
                ip.neigh("add", dst=gw, lladdr=GW_MAC, ifindex=se0,
                         state=0x80)  # NUD_PERMANENT
            ip.route("add", dst="198.19.0.0/16", gateway=SE_GW4)
            ip.route("add", dst="2001:db8:100::/40", gateway=SE_GW6)
            ip.route("add", dst="2001:db8:1ff::/48", gateway=SE_GW6,
                     metrics={"mtu": SMALL_MTU})
            self.ifindex = se0
            self.mac = ip.get_links(se0)[0].get("IFLA_ADDRESS")
        # The FIB fallback (bpf_fib_lookup) needs forwarding on the ingress.
        for key in ("net.ipv4.conf.all.forwarding",
                    "net.ipv6.conf.all.forwarding"):
            self.sysctl(key, 1)
        with self.inside():
            self.dp = dataplane.Dataplane.open(self.pin_dir,
                                               limits=self.limits,
                                               create=True)
            self.state = self.base_state()
            self.dp.apply(self.state)
        self.prog = self.dp.program()
        # Clear M4_FIB's next-hop cache slot: the program must fall back to
        # bpf_fib_lookup for it.
        real_idx, real = self.real_of(f"{VIP4}:7070/tcp", M4_FIB)
        real.nh = 0
        self.dp.maps["reals"].update(_u32(real_idx), bytes(real))

    def teardown(self):
        errors = []
        for step in (lambda: self.prog and self.prog.close(),
                     lambda: self.dp and self.dp.destroy(),
                     lambda: os.path.isdir(self.pin_dir)
                     and shutil.rmtree(self.pin_dir),
                     lambda: self.ns in pr_netns.listnetns()
                     and pr_netns.remove(self.ns)):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - first one re-raised
                errors.append(exc)
        if errors:
            raise errors[0]

    # -- configuration -----------------------------------------------------

    @staticmethod
    def base_state(icmp_echo=True):
        state = model.DesiredState(
            tunnel_source4=ipaddress.ip_address(TUNNEL4),
            tunnel_source6=ipaddress.ip_address(TUNNEL6),
            icmp_echo=icmp_echo)
        for text, (encap, members) in LISTENERS.items():
            key = model.ListenerKey.parse(text)
            state.listeners[key] = model.ListenerSpec(
                key, encap=encap, members={
                    ipaddress.ip_address(m): model.Member(
                        ipaddress.ip_address(m)) for m in members})
        return state

    def apply(self, state):
        with self.inside():
            changes = self.dp.apply(state)
        self.state = state
        return changes

    def listener(self, key):
        key = model.ListenerKey.parse(key) if isinstance(key, str) else key
        return self.dp._live_listeners()[key]

    def real_of(self, key, address):
        lid = self.listener(key).id
        address = ipaddress.ip_address(address)
        reals, _ = self.dp._live_reals()
        for live in reals.get(lid, []):
            if live.address == address:
                return live.index, live.real
        raise LookupError(f"{address} is not a member of {key}")

    def ring_member(self, key, src, sport, proto):
        """The member the listener's Maglev ring gives a new flow."""
        listener = self.listener(key)
        h = flow_hash(src, sport, proto, listener.hash_alg)
        # Each listener's ring is its own extent, sized by its pool.
        slot = listener.ring_off + h % listener.ring_size
        # Two u32 slots per 8-byte element (maps.h).
        pair = self.dp.maps["rings"].lookup(_u32(slot >> 1))
        idx = struct.unpack("<II", pair)[slot & 1]
        assert idx, f"ring slot {slot} of {key} is empty"
        real = structs.Real.from_bytes(self.dp.maps["reals"].lookup(_u32(idx)))
        return structs.unpack_addr(real.addr, real.family), h

    def write_config(self, **fields):
        cfg = self.dp.config()
        for name, value in fields.items():
            setattr(cfg, name, value)
        self.dp.maps["se_config"].update(_u32(0), bytes(cfg))

    # -- running frames ----------------------------------------------------

    def counters(self):
        """se_stats summed over CPUs (fast path of Dataplane.stats())."""
        m = self.dp.maps["se_stats"]
        return {name: sum(struct.unpack_from("<Q", v)[0]
                          for v in m.lookup_percpu(_u32(i)))
                for i, name in enumerate(structs.SE_STATS)}

    def run(self, frame, ingress_ifindex=None, use_stats_api=False):
        frame = bytes(frame)
        read = ((lambda: self.dp.stats()["se"]) if use_stats_api
                else self.counters)
        ctx = None
        if ingress_ifindex is not None:
            # struct xdp_md: data, data_end, data_meta, ingress_ifindex,
            # rx_queue_index, egress_ifindex
            ctx = struct.pack("<6I", 0, len(frame), 0, ingress_ifindex, 0, 0)
        before = read()
        with self.inside():
            res = libbpf.prog_test_run(self.prog.fd, frame, ctx_in=ctx)
        after = read()
        delta = {k: after[k] - before[k] for k in after
                 if after[k] != before[k]}
        return Result(res.retval, res.data_out, delta)


@pytest.fixture(scope="module")
def se():
    harness = SeHarness()
    try:
        harness.setup()
        yield harness
    finally:
        harness.teardown()


# --------------------------------------------------------------------------
# Frame building


def eth(dst=SE_MAC, src=PEER_MAC):
    return Ether(dst=dst, src=src)


def ip4(dst=VIP4, src=CLIENT4, **kw):
    return eth() / IP(src=src, dst=dst, **kw)


def ip6(dst=VIP6, src=CLIENT6, **kw):
    return eth() / IPv6(src=src, dst=dst, **kw)


def syn4(dport=80, sport=40001, **kw):
    kw.setdefault("flags", "DF")
    return ip4(**kw) / TCP(sport=sport, dport=dport, flags="S", seq=1000)


def syn6(dport=80, sport=40003, **kw):
    return ip6(**kw) / TCP(sport=sport, dport=dport, flags="S", seq=1000)


def sized(pkt, l3_len):
    """Pad the L4 payload so that the IP packet is l3_len bytes."""
    have = len(bytes(pkt)) - 14
    return pkt / Raw(b"\xa5" * (l3_len - have))


def patched(pkt, offset, data):
    """Overwrite bytes of the built frame at offset (no fixing-up)."""
    raw = bytearray(bytes(pkt))
    raw[offset:offset + len(data)] = data
    return bytes(raw)


BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


def trailing(pkt, size=1514):
    """The frame padded with junk after its IP packet to `size` bytes (the
    IP header still says how long the packet is)."""
    frame = bytes(pkt)
    return frame + b"\x5a" * (size - len(frame))


def to_mac(pkt, mac):
    """The frame sent to another destination MAC (e.g. a group's)."""
    return bytes.fromhex(mac.replace(":", "")) + bytes(pkt)[6:]


def quote4(l4, src=VIP4, dst=CLIENT4, n=28, **kw):
    """The first n bytes of a packet the VIP sent (an ICMP error's quote)."""
    return bytes(IP(src=src, dst=dst, **kw) / l4)[:n]


def quote6(l4, src=VIP6, dst=CLIENT6, n=48, **kw):
    return bytes(IPv6(src=src, dst=dst, **kw) / l4)[:n]


def icmp_err4(quote, type_=3, code=4, **kw):
    extra = {"nexthopmtu": 1400} if (type_, code) == (3, 4) else {}
    return (ip4(src=ROUTER4, **kw) / ICMP(type=type_, code=code, **extra)
            / Raw(quote))


def icmp_err6(layer, quote):
    return ip6(src=ROUTER6) / layer / Raw(quote)


# --------------------------------------------------------------------------
# Checks of what the program made of a frame


def _family(address):
    return ipaddress.ip_address(address).version


def inner_flow(frame):
    """(src, sport, proto) of an untagged IPv4/IPv6 frame's flow."""
    etype = struct.unpack("!H", frame[12:14])[0]
    if etype == ETH_P_IP:
        return (str(ipaddress.IPv4Address(frame[26:30])),
                struct.unpack("!H", frame[34:36])[0], frame[23])
    return (str(ipaddress.IPv6Address(frame[22:38])),
            struct.unpack("!H", frame[54:56])[0], frame[20])


def inner_l3_len(frame):
    etype = struct.unpack("!H", frame[12:14])[0]
    if etype == ETH_P_IP:
        return struct.unpack("!H", frame[16:18])[0]
    return 40 + struct.unpack("!H", frame[18:20])[0]


def inner_tos(frame):
    etype = struct.unpack("!H", frame[12:14])[0]
    if etype == ETH_P_IP:
        return frame[15]
    return ((frame[14] & 0x0F) << 4) | (frame[15] >> 4)


def check_steered(se, frame, res, listener, flow=None):
    """A steered frame: outer header right, inner packet byte-identical
    (without what followed it in the frame).

    ``flow``: (src, sport, proto) the member was chosen by (default: the
    frame's own); returns the member address.
    """
    encap, members = LISTENERS[listener]
    outer_v = _family(members[0])
    inner_v = 4 if struct.unpack("!H", frame[12:14])[0] == ETH_P_IP else 6
    ip_len = 20 if outer_v == 4 else 40
    hdr = ip_len + (4 if encap == GRE else 0)
    out = res.data_out
    inner_proto = 4 if inner_v == 4 else 41
    outer_proto = 47 if encap == GRE else inner_proto
    flow = flow or inner_flow(frame)
    expected_member, h = se.ring_member(listener, *flow)
    l3_len = inner_l3_len(frame)
    tos = inner_tos(frame)
    # Bytes after the IP packet (padding, junk) are trimmed, not sent.
    packet = frame[14:14 + l3_len]

    assert len(out) == 14 + hdr + l3_len, "not trimmed to the IP packet"
    assert out[14 + hdr:] == packet, "inner packet was modified"
    e = Ether(out[:14])
    assert e.dst == GW_MAC and e.src == se.mac
    assert e.type == (ETH_P_IP if outer_v == 4 else ETH_P_IPV6)
    if outer_v == 4:
        o = IP(out[14:14 + ip_len])
        assert (o.version, o.ihl) == (4, 5)
        assert o.tos == tos, "DSCP/ECN not copied to the outer header"
        assert o.len == l3_len + hdr
        assert (o.id, int(o.flags), o.frag) == (0, 2, 0)  # DF
        assert o.ttl == OUTER_TTL
        assert o.proto == outer_proto
        assert o.src == TUNNEL4
        member = o.dst
        assert inet_csum(out[14:34]) == 0, "outer IPv4 checksum invalid"
    else:
        o = IPv6(out[14:14 + ip_len])
        assert o.version == 6
        assert o.tc == tos, "DSCP/ECN not copied to the outer header"
        assert o.fl == h & 0xFFFFF, "flow label is not the flow hash"
        assert o.plen == l3_len + hdr - 40
        assert o.nh == outer_proto
        assert o.hlim == OUTER_TTL
        assert o.src == TUNNEL6
        member = o.dst
    if encap == GRE:
        assert out[14 + ip_len:14 + hdr] == struct.pack(
            "!HH", 0, ETH_P_IP if inner_v == 4 else ETH_P_IPV6)
    assert ipaddress.ip_address(member) in {
        ipaddress.ip_address(m) for m in members}
    assert ipaddress.ip_address(member) == expected_member, (
        f"sent to {member}, the ring says {expected_member}")
    return ipaddress.ip_address(member)


def steered(listener, flow=None):
    return lambda se, frame, res: check_steered(se, frame, res, listener,
                                                flow)


def check_echo_reply(se, frame, res):
    out = res.data_out
    assert len(out) == len(frame)
    e_in, e_out = Ether(frame), Ether(out)
    assert (e_out.dst, e_out.src) == (e_in.src, e_in.dst), "MACs not swapped"
    if IP in e_in:
        i, o = e_in[IP], e_out[IP]
        assert (o.src, o.dst) == (i.dst, i.src)
        assert o.ttl == 64
        assert inet_csum(out[14:34]) == 0, "IPv4 checksum invalid"
        assert o[ICMP].type == 0 and o[ICMP].code == 0
        assert (o[ICMP].id, o[ICMP].seq) == (i[ICMP].id, i[ICMP].seq)
        assert bytes(o[ICMP].payload) == bytes(i[ICMP].payload)
        assert inet_csum(out[34:14 + o.len]) == 0, "ICMP checksum invalid"
        # Nothing but addresses, TTL, checksums and the type changed.
        assert out[14:22] == frame[14:22] and out[23] == frame[23]
    else:
        i, o = e_in[IPv6], e_out[IPv6]
        assert (o.src, o.dst) == (i.dst, i.src)
        assert o.hlim == 64
        reply = o[ICMPv6EchoReply]
        assert reply.type == 129 and reply.code == 0
        req = i[ICMPv6EchoRequest]
        assert (reply.id, reply.seq, reply.data) == (req.id, req.seq,
                                                     req.data)
        assert icmp6_csum_ok(o.src, o.dst, out[54:54 + o.plen]), \
            "ICMPv6 checksum invalid"
        assert out[14:21] == frame[14:21]


def check_too_big(mtu):
    """The SE's frag-needed (v4) / packet-too-big (v6) back to the client."""
    def check(se, frame, res):
        out = res.data_out
        e_in, e_out = Ether(frame), Ether(out)
        assert (e_out.dst, e_out.src) == (e_in.src, e_in.dst)
        if IP in e_in:
            quote = frame[14:14 + 20 + 64]
            assert len(out) == 14 + 20 + 8 + len(quote) == 126
            o = IP(out[14:])
            assert (o.version, o.ihl, o.tos, o.len) == (4, 5, 0, 112)
            assert (o.id, int(o.flags), o.frag, o.ttl) == (0, 0, 0, 64)
            assert o.proto == 1
            assert (o.src, o.dst) == (e_in[IP].dst, e_in[IP].src)
            assert inet_csum(out[14:34]) == 0, "IPv4 checksum invalid"
            icmp = out[34:]
            assert icmp[0:2] == bytes([3, 4]), "not frag-needed"
            assert icmp[4:6] == b"\0\0"
            assert struct.unpack("!H", icmp[6:8])[0] == mtu
            assert icmp[8:] == quote, "quoted datagram differs"
            assert inet_csum(icmp) == 0, "ICMP checksum invalid"
            assert o[ICMP].nexthopmtu == mtu
        else:
            quote = frame[14:14 + 40 + 64]
            assert len(out) == 14 + 40 + 8 + len(quote) == 166
            o = IPv6(out[14:])
            assert (o.version, o.tc, o.fl, o.plen, o.nh, o.hlim) == (
                6, 0, 0, 112, 58, 64)
            assert (o.src, o.dst) == (e_in[IPv6].dst, e_in[IPv6].src)
            icmp = out[54:]
            assert icmp[0:2] == bytes([2, 0]), "not packet-too-big"
            assert struct.unpack("!I", icmp[4:8])[0] == mtu
            assert icmp[8:] == quote, "quoted datagram differs"
            assert icmp6_csum_ok(o.src, o.dst, icmp), "checksum invalid"
            assert o[ICMPv6PacketTooBig].mtu == mtu
    return check


def check_untouched(se, frame, res):
    assert res.data_out == frame, "a passed frame must not be modified"


# --------------------------------------------------------------------------
# The corpus.  Every case id is a row of the verdict table in
# docs/dataplane.md with the same verdict and counter.


@dataclasses.dataclass
class Case:
    id: str
    build: Callable[[], bytes]
    verdict: int
    counter: str
    check: Optional[Callable] = None
    # A known program bug: the case states the correct behaviour and is a
    # strict xfail until the bug is fixed.
    xfail: Optional[str] = None


def C(id_, build, verdict, counter, check=None, xfail=None):
    if verdict == PASS and check is None:
        check = check_untouched
    return Case(id_, build, verdict, counter, check, xfail)


L4_80, L4_53 = f"{VIP4}:80/tcp", f"{VIP4}:53/udp"
L6_80, L6_53 = f"[{VIP6}]:80/tcp", f"[{VIP6}]:53/udp"


def Q4_TCP(**kw):
    """Quote of VIP:80 -> client:40001 (what an ICMP error carries)."""
    return quote4(TCP(sport=80, dport=40001, flags="SA"), **kw)


def Q6_TCP(**kw):
    return quote6(TCP(sport=80, dport=40003, flags="SA"), **kw)


CASES = [
    # -- steered to a member ----------------------------------------------
    C("v4-tcp-syn", lambda: syn4(tos=0xB9, ttl=63), REDIRECT, "steered",
      steered(L4_80)),
    C("v4-tcp-ack-data", lambda: ip4(flags="DF") / TCP(
        sport=40001, dport=80, flags="A", seq=1001, ack=5) / Raw(b"x" * 100),
      REDIRECT, "steered", steered(L4_80)),
    C("v4-udp", lambda: ip4(tos=0x2E) / UDP(sport=40002, dport=53)
      / Raw(b"q" * 30), REDIRECT, "steered", steered(L4_53)),
    C("v6-tcp-syn", lambda: syn6(tc=0xB9, hlim=63), REDIRECT, "steered",
      steered(L6_80)),
    C("v6-udp", lambda: ip6(tc=0x01) / UDP(sport=40004, dport=53)
      / Raw(b"q" * 30), REDIRECT, "steered", steered(L6_53)),
    C("v4-gre-v4", lambda: syn4(443, tos=0x60), REDIRECT, "steered",
      steered(f"{VIP4}:443/tcp")),
    C("v4-ipip-v6", lambda: syn4(8443, tos=0x61), REDIRECT, "steered",
      steered(f"{VIP4}:8443/tcp")),
    C("v4-gre-v6", lambda: syn4(9443, tos=0x62), REDIRECT, "steered",
      steered(f"{VIP4}:9443/tcp")),
    C("v6-gre-v6", lambda: syn6(443, tc=0x63), REDIRECT, "steered",
      steered(f"[{VIP6}]:443/tcp")),
    C("v6-ipip-v4", lambda: syn6(8443, tc=0x64), REDIRECT, "steered",
      steered(f"[{VIP6}]:8443/tcp")),
    C("v6-gre-v4", lambda: syn6(9443, tc=0x65), REDIRECT, "steered",
      steered(f"[{VIP6}]:9443/tcp")),
    C("v4-ttl-1", lambda: syn4(sport=40011, ttl=1), REDIRECT, "steered",
      steered(L4_80)),
    C("v4-ttl-0", lambda: syn4(sport=40012, ttl=0), REDIRECT, "steered",
      steered(L4_80)),
    C("v6-hlim-1", lambda: syn6(sport=40013, hlim=1), REDIRECT, "steered",
      steered(L6_80)),
    C("v6-hlim-0", lambda: syn6(sport=40014, hlim=0), REDIRECT, "steered",
      steered(L6_80)),
    C("v4-bad-ip-checksum", lambda: syn4(sport=40015, chksum=0x1234),
      REDIRECT, "steered", steered(L4_80)),
    C("v4-eth-padding", lambda: bytes(syn4(sport=40016)) + b"\0" * 6,
      REDIRECT, "steered", steered(L4_80)),
    C("v4-df-at-mtu", lambda: sized(syn4(sport=40017), LINK_MTU - 20),
      REDIRECT, "steered", steered(L4_80)),
    C("v6-at-mtu", lambda: sized(syn6(sport=40018), LINK_MTU - 40),
      REDIRECT, "steered", steered(L6_80)),
    C("v4-not-df-fits", lambda: syn4(sport=40019, flags=0), REDIRECT,
      "steered", steered(L4_80)),
    C("v4-tcp-rst", lambda: ip4(flags="DF") / TCP(
        sport=40020, dport=80, flags="R"), REDIRECT, "steered",
      steered(L4_80)),
    C("v4-fib-fallback", lambda: syn4(7070, sport=40021), REDIRECT,
      "steered", steered(f"{VIP4}:7070/tcp")),
    C("v4-trailing-bytes", lambda: trailing(syn4(sport=40022)), REDIRECT,
      "steered", steered(L4_80)),
    C("v4-trailing-bytes-4in6", lambda: trailing(syn4(8443, sport=40023)),
      REDIRECT, "steered", steered(f"{VIP4}:8443/tcp")),
    C("v6-trailing-bytes", lambda: trailing(syn6(sport=40024)), REDIRECT,
      "steered", steered(L6_80)),

    # -- ICMP errors about a VIP flow: to the flow's member ---------------
    C("v4-icmp-frag-needed-for-flow", lambda: icmp_err4(Q4_TCP()),
      REDIRECT, "icmp_error_steered",
      steered(L4_80, (CLIENT4, 40001, 6))),
    C("v4-icmp-time-exceeded-for-flow", lambda: icmp_err4(
        quote4(UDP(sport=53, dport=40002)), type_=11, code=0),
      REDIRECT, "icmp_error_steered", steered(L4_53, (CLIENT4, 40002, 17))),
    C("v4-icmp-port-unreach-for-flow", lambda: icmp_err4(
        quote4(UDP(sport=53, dport=40002), n=48), code=3),
      REDIRECT, "icmp_error_steered", steered(L4_53, (CLIENT4, 40002, 17))),
    C("v6-packet-too-big-for-flow", lambda: icmp_err6(
        ICMPv6PacketTooBig(mtu=1280), Q6_TCP()), REDIRECT,
      "icmp_error_steered", steered(L6_80, (CLIENT6, 40003, 6))),
    C("v6-dest-unreach-for-flow", lambda: icmp_err6(
        ICMPv6DestUnreach(code=1), Q6_TCP()), REDIRECT,
      "icmp_error_steered", steered(L6_80, (CLIENT6, 40003, 6))),
    C("v6-time-exceeded-for-flow", lambda: icmp_err6(
        ICMPv6TimeExceeded(), quote6(UDP(sport=53, dport=40004))),
      REDIRECT, "icmp_error_steered", steered(L6_53, (CLIENT6, 40004, 17))),
    C("v6-param-problem-for-flow", lambda: icmp_err6(
        ICMPv6ParamProblem(ptr=6), Q6_TCP()), REDIRECT,
      "icmp_error_steered", steered(L6_80, (CLIENT6, 40003, 6))),
    C("v4-icmp-error-quoting-first-fragment", lambda: icmp_err4(
        Q4_TCP(flags="MF")), REDIRECT, "icmp_error_steered",
      steered(L4_80, (CLIENT4, 40001, 6))),
    C("v4-icmp-error-trailing-bytes", lambda: trailing(icmp_err4(Q4_TCP()),
                                                       200),
      REDIRECT, "icmp_error_steered", steered(L4_80, (CLIENT4, 40001, 6))),

    # -- answered by the SE itself (XDP_TX) --------------------------------
    C("v4-icmp-echo", lambda: ip4() / ICMP(type=8, id=0x1234, seq=7)
      / Raw(b"ping" * 8), TX, "icmp_echo_reply", check_echo_reply),
    C("v6-icmp-echo", lambda: ip6() / ICMPv6EchoRequest(
        id=0x1234, seq=7, data=b"ping" * 8), TX, "icmp_echo_reply",
      check_echo_reply),
    C("v4-too-big-df", lambda: sized(syn4(sport=40030), 1600), TX,
      "icmp_too_big_sent", check_too_big(LINK_MTU - 20)),
    C("v4-too-big-df-by-one", lambda: sized(syn4(sport=40031),
                                            LINK_MTU - 19),
      TX, "icmp_too_big_sent", check_too_big(LINK_MTU - 20)),
    C("v4-too-big-gre-v4", lambda: sized(syn4(443, sport=40032), 1600), TX,
      "icmp_too_big_sent", check_too_big(LINK_MTU - 24)),
    C("v4-too-big-ipip-v6", lambda: sized(syn4(8443, sport=40033), 1600),
      TX, "icmp_too_big_sent", check_too_big(LINK_MTU - 40)),
    C("v4-too-big-fib", lambda: sized(syn4(7070, sport=40034), 1600), TX,
      "icmp_too_big_sent", check_too_big(LINK_MTU - 20)),
    C("v6-too-big", lambda: sized(syn6(sport=40035), 1600), TX,
      "icmp_too_big_sent", check_too_big(LINK_MTU - 40)),
    C("v6-too-big-ipip-v4", lambda: sized(syn6(8443, sport=40036), 1600),
      TX, "icmp_too_big_sent", check_too_big(LINK_MTU - 20)),
    C("v6-too-big-gre-v4", lambda: sized(syn6(9443, sport=40037), 1600),
      TX, "icmp_too_big_sent", check_too_big(LINK_MTU - 24)),
    C("v6-too-big-min-mtu", lambda: sized(syn6(2020, sport=40038),
                                          SMALL_MTU),
      TX, "icmp_too_big_sent", check_too_big(1280)),

    # -- not for a VIP: passed untouched -----------------------------------
    C("v4-other-dst", lambda: syn4(dst=OTHER4), PASS, "pass"),
    C("v4-to-se-address", lambda: ip4(dst=SE4) / ICMP(type=8), PASS, "pass"),
    C("v4-vip-as-source", lambda: ip4(src=VIP4, dst=CLIENT4)
      / TCP(sport=80, dport=40001, flags="SA"), PASS, "pass"),
    C("v4-other-dst-options", lambda: ip4(dst=OTHER4, options=[
        b"\x01\x01\x01\x00"]) / TCP(dport=80), PASS, "pass"),
    C("v4-other-dst-fragment", lambda: ip4(dst=OTHER4, flags="MF")
      / TCP(dport=80), PASS, "pass"),
    C("v4-other-dst-ihl-4", lambda: patched(syn4(dst=OTHER4), 14, b"\x44"),
      PASS, "pass"),
    C("v4-multicast", lambda: eth(dst="01:00:5e:00:00:05") / IP(
        src=SE_GW4, dst="224.0.0.5", proto=89, ttl=1) / Raw(b"\0" * 40),
      PASS, "pass"),
    C("v6-other-dst", lambda: syn6(dst=OTHER6), PASS, "pass"),
    C("v6-other-dst-hbh", lambda: ip6(dst=OTHER6) / IPv6ExtHdrHopByHop()
      / TCP(dport=80), PASS, "pass"),
    C("arp-request-for-vip", lambda: eth(dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=PEER_MAC, psrc=SE_GW4, pdst=VIP4), PASS, "pass"),
    C("arp-reply", lambda: eth() / ARP(op=2, hwsrc=PEER_MAC, psrc=SE_GW4,
                                       hwdst=SE_MAC, pdst=SE4),
      PASS, "pass"),
    C("ipv6-nd-ns-multicast-for-vip", lambda: eth(dst="33:33:ff:00:00:10")
      / IPv6(src="fe80::1", dst="ff02::1:ff00:10", hlim=255)
      / ICMPv6ND_NS(tgt=VIP6) / ICMPv6NDOptSrcLLAddr(lladdr=PEER_MAC),
      PASS, "pass"),
    C("ipv6-nd-na-to-se", lambda: ip6(src="fe80::1", dst=SE6, hlim=255)
      / ICMPv6ND_NA(tgt="fe80::1", R=1, S=1), PASS, "pass"),
    C("vlan-tagged-to-vip", lambda: eth() / Dot1Q(vlan=100)
      / IP(src=CLIENT4, dst=VIP4) / TCP(dport=80, flags="S"), PASS, "pass"),
    C("qinq-to-vip", lambda: eth() / Dot1AD(vlan=10) / Dot1Q(vlan=100)
      / IPv6(src=CLIENT6, dst=VIP6) / TCP(dport=80, flags="S"),
      PASS, "pass"),
    C("lldp", lambda: Ether(dst="01:80:c2:00:00:0e", src=PEER_MAC,
                            type=0x88CC) / Raw(b"\x02\x07\x04" + b"\0" * 43),
      PASS, "pass"),
    C("non-ip-ethertype", lambda: Ether(dst=SE_MAC, src=PEER_MAC,
                                        type=0x88B5) / Raw(b"\0" * 46),
      PASS, "pass"),
    C("v4-syn-to-vip-broadcast-mac", lambda: to_mac(
        syn4(sport=40025), BROADCAST_MAC), PASS, "pass"),
    C("v4-echo-to-vip-multicast-mac", lambda: to_mac(
        ip4() / ICMP(type=8), "01:00:5e:33:64:0a"), PASS, "pass"),
    C("v4-too-big-df-to-vip-broadcast-mac", lambda: to_mac(
        sized(syn4(sport=40026), 1600), BROADCAST_MAC), PASS, "pass"),
    C("v6-syn-to-vip-multicast-mac", lambda: to_mac(
        syn6(sport=40027), "33:33:00:00:00:10"), PASS, "pass"),
    C("v6-echo-to-vip-multicast-mac", lambda: to_mac(
        ip6() / ICMPv6EchoRequest(), "33:33:00:00:00:10"), PASS, "pass"),
    C("eth-header-only", lambda: bytes(Ether(dst=SE_MAC, src=PEER_MAC,
                                             type=0x88B5)),
      PASS, "pass"),

    # -- dropped: malformed ------------------------------------------------
    C("eth-header-only-ipv4", lambda: bytes(Ether(dst=SE_MAC, src=PEER_MAC,
                                                  type=ETH_P_IP)),
      DROP, "drop_malformed"),
    C("v4-header-truncated", lambda: bytes(syn4())[:14 + 19], DROP,
      "drop_malformed"),
    C("v4-header-truncated-other-dst",
      lambda: bytes(syn4(dst=OTHER4))[:14 + 19], DROP, "drop_malformed"),
    C("v4-ihl-4", lambda: patched(syn4(), 14, b"\x44"), DROP,
      "drop_malformed"),
    C("v4-ihl-0", lambda: patched(syn4(), 14, b"\x40"), DROP,
      "drop_malformed"),
    C("v4-version-6", lambda: patched(syn4(), 14, b"\x65"), DROP,
      "drop_malformed"),
    C("v4-tot-len-over-frame", lambda: ip4(len=200) / TCP(dport=80), DROP,
      "drop_malformed"),
    C("v4-tot-len-under-header", lambda: ip4(len=19) / TCP(dport=80), DROP,
      "drop_malformed"),
    C("v4-tcp-truncated", lambda: ip4(proto=6) / Raw(
        bytes(TCP(sport=40040, dport=80))[:10]), DROP, "drop_malformed"),
    C("v4-udp-truncated", lambda: ip4(proto=17) / Raw(
        bytes(UDP(sport=40041, dport=53))[:4]), DROP, "drop_malformed"),
    C("v4-tcp-beyond-tot-len", lambda: ip4(proto=6, len=24) / Raw(
        bytes(TCP(sport=40042, dport=80, flags="S"))), DROP,
      "drop_malformed"),
    C("v4-icmp-error-beyond-tot-len", lambda: ip4(proto=1, len=28) / ICMP(
        type=3, code=4) / Raw(Q4_TCP()), DROP, "drop_malformed"),
    C("v6-tcp-beyond-payload-len", lambda: ip6(nh=6, plen=4) / Raw(
        bytes(TCP(sport=40045, dport=80, flags="S"))), DROP,
      "drop_malformed"),
    C("v6-payload-len-wraps", lambda: ip6(plen=65535) / TCP(
        sport=40046, dport=80, flags="S"), DROP, "drop_malformed"),
    C("v6-payload-len-wraps-echo", lambda: ip6(plen=65496)
      / ICMPv6EchoRequest(), DROP, "drop_malformed"),
    C("v4-icmp-truncated", lambda: ip4(proto=1) / Raw(b"\x08\x00\xf7\xff"),
      DROP, "drop_malformed"),
    C("v4-icmp-error-quote-truncated", lambda: icmp_err4(Q4_TCP(n=22)),
      DROP, "drop_malformed"),
    C("v4-icmp-error-quote-with-options", lambda: icmp_err4(Q4_TCP(
        options=[b"\x01\x01\x01\x00"], n=32)), DROP, "drop_malformed"),
    C("v4-icmp-error-quote-version-6", lambda: icmp_err4(
        patched(Q4_TCP(), 0, b"\x65")), DROP, "drop_malformed"),
    C("v4-icmp-error-quoting-later-fragment", lambda: icmp_err4(
        Q4_TCP(frag=5)), DROP, "drop_malformed"),
    C("v6-icmp-error-quote-version-4", lambda: icmp_err6(
        ICMPv6PacketTooBig(mtu=1280), patched(Q6_TCP(), 0, b"\x40")),
      DROP, "drop_malformed"),
    C("v4-icmp-error-quoting-other-source", lambda: icmp_err4(Q4_TCP(
        src=OTHER4)), DROP, "drop_malformed"),
    C("v6-header-truncated", lambda: bytes(syn6())[:14 + 39], DROP,
      "drop_malformed"),
    C("v6-header-truncated-other-dst",
      lambda: bytes(syn6(dst=OTHER6))[:14 + 30], DROP, "drop_malformed"),
    C("v6-version-4", lambda: patched(syn6(), 14, b"\x40"), DROP,
      "drop_malformed"),
    C("v6-payload-len-over-frame", lambda: ip6(plen=200) / TCP(dport=80),
      DROP, "drop_malformed"),
    C("v6-tcp-truncated", lambda: ip6(nh=6) / Raw(
        bytes(TCP(sport=40043, dport=80))[:10]), DROP, "drop_malformed"),
    C("v6-udp-truncated", lambda: ip6(nh=17) / Raw(
        bytes(UDP(sport=40044, dport=53))[:6]), DROP, "drop_malformed"),
    C("v6-icmp-truncated", lambda: ip6(nh=58) / Raw(b"\x80\x00\x00\x00"),
      DROP, "drop_malformed"),
    C("v6-icmp-error-quote-truncated", lambda: icmp_err6(
        ICMPv6PacketTooBig(mtu=1280), Q6_TCP(n=42)), DROP, "drop_malformed"),
    C("v6-icmp-error-quoting-other-source", lambda: icmp_err6(
        ICMPv6PacketTooBig(mtu=1280), Q6_TCP(src=OTHER6)), DROP,
      "drop_malformed"),

    # -- dropped: a source no host can have (RFC 1122 3.2.1.3, RFC 4443
    # 2.4): never answered, never steered --------------------------------
    C("v4-echo-from-broadcast", lambda: ip4(src="255.255.255.255")
      / ICMP(type=8), DROP, "drop_malformed"),
    C("v4-echo-from-multicast", lambda: ip4(src="224.0.0.5") / ICMP(type=8),
      DROP, "drop_malformed"),
    C("v4-echo-from-unspecified", lambda: ip4(src="0.0.0.0") / ICMP(type=8),
      DROP, "drop_malformed"),
    C("v4-echo-from-loopback", lambda: ip4(src="127.0.0.1") / ICMP(type=8),
      DROP, "drop_malformed"),
    C("v6-echo-from-multicast", lambda: ip6(src="ff02::1")
      / ICMPv6EchoRequest(), DROP, "drop_malformed"),
    C("v6-echo-from-unspecified", lambda: ip6(src="::")
      / ICMPv6EchoRequest(), DROP, "drop_malformed"),
    C("v6-echo-from-loopback", lambda: ip6(src="::1")
      / ICMPv6EchoRequest(), DROP, "drop_malformed"),
    C("v4-too-big-df-from-multicast", lambda: sized(syn4(
        src="239.1.2.3", sport=40080), 1600), DROP, "drop_malformed"),
    C("v4-too-big-df-from-broadcast", lambda: sized(syn4(
        src="255.255.255.255", sport=40081), 1600), DROP, "drop_malformed"),
    C("v6-too-big-from-multicast", lambda: sized(syn6(
        src="ff0e::1", sport=40082), 1600), DROP, "drop_malformed"),
    C("v4-syn-from-unspecified", lambda: syn4(src="0.0.0.0", sport=40083),
      DROP, "drop_malformed"),
    C("v6-syn-from-loopback", lambda: syn6(src="::1", sport=40084), DROP,
      "drop_malformed"),
    C("v4-icmp-error-from-broadcast", lambda: ip4(src="255.255.255.255")
      / ICMP(type=3, code=4, nexthopmtu=1400) / Raw(Q4_TCP()), DROP,
      "drop_malformed"),
    C("v4-syn-from-class-e", lambda: syn4(src="240.0.0.1", sport=40085),
      DROP, "drop_malformed"),
    C("v4-echo-from-class-e", lambda: ip4(src="250.1.2.3") / ICMP(type=8),
      DROP, "drop_malformed"),
    C("v6-syn-from-v4-mapped", lambda: syn6(src="::ffff:203.0.113.7",
                                            sport=40086),
      DROP, "drop_malformed"),
    C("v6-echo-from-v4-mapped", lambda: ip6(src="::ffff:203.0.113.7")
      / ICMPv6EchoRequest(), DROP, "drop_malformed"),
    C("v6-syn-from-link-local", lambda: syn6(src="fe80::1", sport=40087),
      DROP, "drop_malformed"),
    C("v6-echo-from-link-local", lambda: ip6(src="febf::1")
      / ICMPv6EchoRequest(), DROP, "drop_malformed"),
    C("v4-udp-from-vip", lambda: ip4(src=VIP4) / UDP(sport=7, dport=53)
      / Raw(b"echo"), DROP, "drop_malformed"),
    C("v6-udp-from-vip", lambda: ip6(src=VIP6) / UDP(sport=7, dport=53)
      / Raw(b"echo"), DROP, "drop_malformed"),
    C("v4-echo-from-vip", lambda: ip4(src=VIP4) / ICMP(type=8), DROP,
      "drop_malformed"),

    # -- dropped: IPv4 options, fragments, IPv6 extension headers ---------
    C("v4-options", lambda: ip4(options=[b"\x01\x01\x01\x00"])
      / TCP(sport=40050, dport=80, flags="S"), DROP, "drop_ip_options"),
    C("v4-options-icmp-echo", lambda: ip4(options=[b"\x01\x01\x01\x00"])
      / ICMP(type=8), DROP, "drop_ip_options"),
    C("v4-first-fragment", lambda: ip4(flags="MF", frag=0)
      / TCP(sport=40051, dport=80) / Raw(b"a" * 32), DROP, "drop_fragment"),
    C("v4-middle-fragment", lambda: ip4(flags="MF", frag=5, proto=6)
      / Raw(b"a" * 32), DROP, "drop_fragment"),
    C("v4-last-fragment", lambda: ip4(frag=185, proto=6) / Raw(b"a" * 32),
      DROP, "drop_fragment"),
    C("v4-fragment-icmp-echo", lambda: ip4(flags="MF") / ICMP(type=8)
      / Raw(b"a" * 32), DROP, "drop_fragment"),
    C("v6-fragment-header", lambda: ip6() / IPv6ExtHdrFragment(m=1, id=7)
      / TCP(sport=40052, dport=80), DROP, "drop_fragment"),
    C("v6-atomic-fragment", lambda: ip6() / IPv6ExtHdrFragment(m=0, id=7)
      / TCP(sport=40053, dport=80), DROP, "drop_fragment"),
    C("v6-hop-by-hop", lambda: ip6() / IPv6ExtHdrHopByHop()
      / TCP(sport=40054, dport=80), DROP, "drop_ipv6_ext"),
    C("v6-routing", lambda: ip6() / IPv6ExtHdrRouting(addresses=[OTHER6])
      / TCP(sport=40055, dport=80), DROP, "drop_ipv6_ext"),
    C("v6-dest-options", lambda: ip6() / IPv6ExtHdrDestOpt()
      / TCP(sport=40056, dport=80), DROP, "drop_ipv6_ext"),
    C("v6-ah", lambda: ip6(nh=51) / Raw(b"\x06\x04" + b"\0" * 22), DROP,
      "drop_ipv6_ext"),
    C("v6-esp", lambda: ip6(nh=50) / Raw(b"\0" * 24), DROP,
      "drop_ipv6_ext"),
    C("v6-jumbo", lambda: patched(
        ip6(plen=0) / IPv6ExtHdrHopByHop(options=[Jumbo(jumboplen=100)])
        / TCP(sport=40057, dport=80), 18, b"\0\0"), DROP, "drop_ipv6_ext"),
    C("v6-payload-len-0", lambda: patched(syn6(sport=40058), 18, b"\0\0"),
      DROP, "drop_ipv6_ext"),

    # -- dropped: nothing to steer to --------------------------------------
    C("v4-gre-to-vip", lambda: ip4(proto=47) / Raw(b"\0\0\x08\0" + bytes(
        IP(src=CLIENT4, dst=OTHER4))), DROP, "drop_unsupported_proto"),
    C("v4-ipip-to-vip", lambda: ip4(proto=4) / IP(src=CLIENT4, dst=OTHER4),
      DROP, "drop_unsupported_proto"),
    C("v4-proto-253", lambda: ip4(proto=253) / Raw(b"\0" * 20), DROP,
      "drop_unsupported_proto"),
    C("v4-igmp-to-vip", lambda: ip4(proto=2) / Raw(b"\x11" + b"\0" * 7),
      DROP, "drop_unsupported_proto"),
    C("v6-gre-to-vip", lambda: ip6(nh=47) / Raw(b"\0" * 24), DROP,
      "drop_unsupported_proto"),
    C("v6-no-next-header", lambda: ip6(nh=59) / Raw(b"\0" * 8), DROP,
      "drop_unsupported_proto"),
    C("v6-proto-253", lambda: ip6(nh=253) / Raw(b"\0" * 20), DROP,
      "drop_unsupported_proto"),
    C("v4-tcp-no-listener", lambda: syn4(81), DROP, "drop_no_listener"),
    C("v4-udp-to-tcp-port", lambda: ip4() / UDP(sport=40060, dport=80),
      DROP, "drop_no_listener"),
    C("v4-sctp-no-listener", lambda: ip4() / SCTP(sport=40061, dport=80),
      DROP, "drop_no_listener"),
    C("v6-tcp-no-listener", lambda: syn6(81), DROP, "drop_no_listener"),
    C("v4-icmp-error-for-unknown-port", lambda: icmp_err4(quote4(
        TCP(sport=81, dport=40001))), DROP, "drop_no_listener"),
    C("v4-no-member", lambda: syn4(8080), DROP, "drop_no_member"),
    C("v4-no-route", lambda: syn4(9090), DROP, "drop_no_route"),
    C("v6-no-route", lambda: syn6(9090), DROP, "drop_no_route"),
    C("v4-too-big-not-df", lambda: sized(syn4(sport=40062, flags=0), 1600),
      DROP, "drop_too_big"),
    C("v4-icmp-error-too-big", lambda: sized(icmp_err4(Q4_TCP()), 1600),
      DROP, "drop_too_big"),
    C("v6-icmp-error-too-big", lambda: sized(icmp_err6(
        ICMPv6PacketTooBig(mtu=1280), Q6_TCP()), 1600), DROP,
      "drop_too_big"),

    # -- dropped: ICMP to a VIP that is neither echo nor a flow's error ---
    C("v4-icmp-echo-reply-to-vip", lambda: ip4() / ICMP(type=0), DROP,
      "drop_icmp"),
    C("v4-icmp-echo-code-1", lambda: ip4() / ICMP(type=8, code=1), DROP,
      "drop_icmp"),
    C("v4-icmp-timestamp", lambda: ip4() / ICMP(type=13) / Raw(b"\0" * 12),
      DROP, "drop_icmp"),
    C("v4-icmp-redirect", lambda: ip4(src=ROUTER4) / ICMP(
        type=5, gw=OTHER4) / Raw(Q4_TCP()), DROP, "drop_icmp"),
    C("v4-icmp-error-quoting-icmp", lambda: icmp_err4(quote4(ICMP(
        type=0))), DROP, "drop_icmp"),
    C("v6-icmp-echo-reply-to-vip", lambda: ip6() / ICMPv6EchoReply(), DROP,
      "drop_icmp"),
    C("v6-nd-ns-unicast-to-vip", lambda: ip6(hlim=255) / ICMPv6ND_NS(
        tgt=VIP6), DROP, "drop_icmp"),
    C("v6-icmp-error-quoting-hbh", lambda: icmp_err6(
        ICMPv6PacketTooBig(mtu=1280), quote6(IPv6ExtHdrHopByHop() / TCP(
            sport=80, dport=40003))), DROP, "drop_icmp"),
]

CASES_BY_ID = {c.id: c for c in CASES}
assert len(CASES_BY_ID) == len(CASES), "duplicate case id"

# Rows of the verdict table exercised by dedicated tests below (the state
# they need differs from the module's): id -> (verdict, counter).
SPECIAL = {
    "eth-runt": (None, None),  # refused by BPF_PROG_TEST_RUN (see test)
    "v4-icmp-echo-disabled": (DROP, "drop_icmp"),
    "v6-icmp-echo-disabled": (DROP, "drop_icmp"),
    "v4-no-tunnel-source": (DROP, "drop_no_tunnel_source"),
    "v6-no-tunnel-source": (DROP, "drop_no_tunnel_source"),
    "fib-forwarding-disabled": (DROP, "drop_no_route"),
    "steer-out-ingress": (TX, "steered"),
    "icmp-error-after-ring-change": (REDIRECT, "icmp_error_steered"),
    # test_policy.py
    "v4-source-not-allowed": (DROP, "drop_not_allowed"),
    "v6-source-not-allowed": (DROP, "drop_not_allowed"),
    "v4-over-conn-limit": (DROP, "drop_conn_limit"),
    "v6-over-conn-limit": (DROP, "drop_conn_limit"),
}


def vip_destined(frame):
    """Untagged IPv4/IPv6 frame to a unicast MAC whose header is complete
    and whose destination is a VIP (the frames the SE must never pass; one
    to a group MAC is passed: the stack never forwards it)."""
    if len(frame) < 14 or frame[0] & 1:
        return False
    etype = struct.unpack("!H", frame[12:14])[0]
    if etype == ETH_P_IP and len(frame) >= 34:
        return frame[30:34] == ipaddress.ip_address(VIP4).packed
    if etype == ETH_P_IPV6 and len(frame) >= 54:
        return frame[38:54] == ipaddress.ip_address(VIP6).packed
    return False


def run_case(se, case):
    frame = bytes(case.build())
    res = se.run(frame)
    return frame, res


def _params():
    for c in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=c.xfail)] \
            if c.xfail else []
        yield pytest.param(c, id=c.id, marks=marks)


# --------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("case", list(_params()))
def test_corpus(se, case):
    frame, res = run_case(se, case)
    assert res.retval != ABORTED, "XDP_ABORTED"
    assert (res.verdict, res.delta) == (VERDICT_NAMES[case.verdict],
                                        {case.counter: 1}), (
        f"{case.id}: expected {VERDICT_NAMES[case.verdict]} "
        f"{case.counter}, got {res.verdict} {res.delta}")
    if case.check:
        case.check(se, frame, res)
    if vip_destined(frame):
        assert res.retval != PASS


def test_whole_corpus_never_passes_vip_traffic(se):
    """Property over the corpus: a frame for a VIP is never XDP_PASS, a
    passed frame is never modified, every frame moves exactly one counter
    by one.  (Runs every case again: established flows, same answers.)"""
    vip_frames = 0
    for case in CASES:
        frame, res = run_case(se, case)
        assert res.retval in (DROP, PASS, TX, REDIRECT), case.id
        assert sum(res.delta.values()) == 1 and len(res.delta) == 1, (
            case.id, res.delta)
        if vip_destined(frame):
            vip_frames += 1
            assert res.retval != PASS, f"{case.id}: VIP frame passed"
        if res.retval == PASS:
            assert res.data_out == frame, case.id
            assert res.delta == {"pass": 1}, case.id
    assert vip_frames > len(CASES) // 2


def test_stats_api_reports_the_same_counter(se):
    """Dataplane.stats()['se'] (what dsrctl shows) moves like the map."""
    res = se.run(syn4(sport=40070), use_stats_api=True)
    assert (res.retval, res.delta) == (REDIRECT, {"steered": 1})
    res = se.run(syn4(81), use_stats_api=True)
    assert (res.retval, res.delta) == (DROP, {"drop_no_listener": 1})


def test_eth_runt_refused_by_test_run(se):
    """Frames shorter than an Ethernet header cannot be run (the kernel
    refuses them, and no driver delivers them); the program's own answer
    to one would be PASS."""
    with pytest.raises(libbpf.BpfError) as info:
        se.run(bytes(Ether())[:13])
    assert info.value.errno == errno.EINVAL


def test_steered_flow_is_sticky_and_counted(se):
    """Same flow, same member; the listener and member counters move."""
    frame = bytes(syn4(sport=40071))
    first = check_steered(se, frame, se.run(frame), L4_80)
    before = {m["address"]: m["packets"] for m in se.dp.stats()["members"]
              if m["listener"] == L4_80}
    for _ in range(3):
        res = se.run(frame)
        assert res.delta == {"steered": 1}
        assert check_steered(se, frame, res, L4_80) == first
    after = {m["address"]: m["packets"] for m in se.dp.stats()["members"]
             if m["listener"] == L4_80}
    assert after[str(first)] - before[str(first)] == 3
    assert all(after[a] == before[a] for a in after if a != str(first))


def test_flows_spread_over_members(se):
    seen = set()
    for sport in range(41000, 41064):
        frame = bytes(syn4(sport=sport))
        res = se.run(frame)
        assert res.delta == {"steered": 1}
        seen.add(check_steered(se, frame, res, L4_80))
    assert seen == {ipaddress.ip_address(m) for m in M4}


def test_steer_out_ingress_interface_is_tx(se):
    """When the member's next hop is out of the interface the frame came
    in on, the verdict is XDP_TX (else XDP_REDIRECT)."""
    frame = bytes(syn4(sport=40072))
    res = se.run(frame, ingress_ifindex=se.ifindex)
    exp_verdict, exp_counter = SPECIAL["steer-out-ingress"]
    assert (res.retval, res.delta) == (exp_verdict, {exp_counter: 1})
    check_steered(se, frame, res, L4_80)


@pytest.mark.parametrize("family", [4, 6])
def test_icmp_echo_disabled(se, family):
    frame = bytes(ip4() / ICMP(type=8) if family == 4
                  else ip6() / ICMPv6EchoRequest())
    exp_verdict, exp_counter = SPECIAL[f"v{family}-icmp-echo-disabled"]
    se.apply(se.base_state(icmp_echo=False))
    try:
        assert not se.dp.config().flags & structs.SE_F_ICMP_ECHO
        res = se.run(frame)
        assert (res.retval, res.delta) == (exp_verdict, {exp_counter: 1})
    finally:
        se.apply(se.base_state())
    res = se.run(frame)
    assert (res.retval, res.delta) == (TX, {"icmp_echo_reply": 1})


@pytest.mark.parametrize("family", [4, 6])
def test_no_tunnel_source(se, family):
    """The tunnel source of the member's family is unset (the agent's model
    refuses that; the program still guards it)."""
    frame = bytes(syn4(sport=40073) if family == 4 else syn6(sport=40073))
    exp_verdict, exp_counter = SPECIAL[f"v{family}-no-tunnel-source"]
    saved = bytes(se.dp.config())
    if family == 4:
        se.write_config(tunnel_src4=0)
    else:
        se.write_config(tunnel_src6=structs.U32x4())
    try:
        res = se.run(frame)
        assert (res.retval, res.delta) == (exp_verdict, {exp_counter: 1})
    finally:
        se.dp.maps["se_config"].update(_u32(0), saved)
    assert se.run(frame).delta == {"steered": 1}


def test_fib_fallback_needs_forwarding(se):
    """bpf_fib_lookup answers FWD_DISABLED when forwarding is off on the
    ingress: members without a cached next hop then count no_route."""
    frame = bytes(syn4(7070, sport=40074))
    exp_verdict, exp_counter = SPECIAL["fib-forwarding-disabled"]
    se.sysctl("net.ipv4.conf.all.forwarding", 0)
    try:
        res = se.run(frame)
        assert (res.retval, res.delta) == (exp_verdict, {exp_counter: 1})
        # A member with a cached next hop does not need the FIB.
        assert se.run(syn4(sport=40074)).delta == {"steered": 1}
    finally:
        se.sysctl("net.ipv4.conf.all.forwarding", 1)
    assert se.run(frame).delta == {"steered": 1}


@pytest.mark.parametrize("src", [
    "1.0.0.1", "126.255.255.254", "128.0.0.1", "223.255.255.255", "::2",
    "::1:0:0:1", "::fffe:cb00:7107", "::1:ffff:cb00:7107",
    "0:0:0:1::ffff:cb00:7107", "fe7f:ffff::1", "fec0::1", "fe00::1",
    "2001:db8:c::", "198.51.100.11", "2001:db8:100::11"])
def test_sources_next_to_the_refused_ones_are_answered(se, src):
    """The source check refuses exactly 0/8, 127/8, 224/4, 240/4, ::,
    ::1, ::ffff:0:0/96, fe80::/10, ff00::/8 and the VIPs (a wrong mask or
    byte order shows here)."""
    if ":" in src:
        frame = ip6(src=src) / ICMPv6EchoRequest()
    else:
        frame = ip4(src=src) / ICMP(type=8)
    res = se.run(frame)
    assert (res.retval, res.delta) == (TX, {"icmp_echo_reply": 1})


@pytest.mark.parametrize("src", [
    "0.255.255.255", "127.0.0.1", "224.0.0.0", "239.255.255.255",
    "240.0.0.0", "255.255.255.254", "255.255.255.255", VIP4, "::", "::1",
    "::ffff:0:0", "::ffff:ffff:ffff", "::ffff:198.51.100.10", "fe80::",
    "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ff00::", VIP6])
@pytest.mark.parametrize("kind", ["syn", "echo"])
def test_refused_sources_at_their_edges(se, src, kind):
    """Both ends of each refused range (and the VIPs themselves): neither a
    new flow nor an echo request is steered or answered."""
    v6 = ":" in src
    if kind == "syn":
        frame = syn6(src=src, sport=40090) if v6 else syn4(src=src,
                                                           sport=40090)
    else:
        frame = (ip6(src=src) / ICMPv6EchoRequest() if v6
                 else ip4(src=src) / ICMP(type=8))
    res = se.run(frame)
    assert (res.retval, res.delta) == (DROP, {"drop_malformed": 1})


def test_icmp_error_follows_the_flow_not_the_ring(se):
    """An ICMP error about an established flow goes to the member that owns
    the flow (connection table), even after a ring change moved that slot
    to another member; an error for an unknown flow follows the ring."""
    key = f"{VIP4}:6060/tcp"
    old, new = (ipaddress.ip_address(m) for m in M4_STICKY)
    ports = range(42000, 42064)
    for sport in ports:  # establish flows: all on the only member
        frame = bytes(syn4(6060, sport=sport))
        res = se.run(frame)
        assert res.delta == {"steered": 1}
        assert ipaddress.ip_address(Ether(res.data_out)[IP].dst) == old
    state = se.base_state()
    lkey = model.ListenerKey.parse(key)
    state.listeners[lkey].members[new] = model.Member(new)
    se.apply(state)
    try:
        moved = [p for p in ports
                 if se.ring_member(key, CLIENT4, p, 6)[0] == new]
        assert moved, "the ring change moved no flow"
        exp_verdict, exp_counter = SPECIAL["icmp-error-after-ring-change"]
        err = bytes(icmp_err4(quote4(TCP(sport=6060, dport=moved[0]))))
        res = se.run(err)
        assert (res.retval, res.delta) == (exp_verdict, {exp_counter: 1})
        o = Ether(res.data_out)[IP]
        assert ipaddress.ip_address(o.dst) == old, "error left its flow"
        assert res.data_out[34:] == err[14:]
        # Established data follows the connection table too ...
        res = se.run(syn4(6060, sport=moved[0]))
        assert ipaddress.ip_address(Ether(res.data_out)[IP].dst) == old
        # ... while an error about a flow never seen follows the ring.
        fresh = next(p for p in range(43000, 44000)
                     if se.ring_member(key, CLIENT4, p, 6)[0] == new)
        res = se.run(icmp_err4(quote4(TCP(sport=6060, dport=fresh))))
        assert res.delta == {"icmp_error_steered": 1}
        assert ipaddress.ip_address(Ether(res.data_out)[IP].dst) == new
    finally:
        se.apply(se.base_state())


def test_icmp_error_goes_where_the_flow_went(se):
    """The frag-needed about VIP:80 -> client:port reaches the very member
    the client's SYN was steered to, for many flows."""
    for sport in range(44000, 44032):
        syn = bytes(syn4(sport=sport))
        owner = check_steered(se, syn, se.run(syn), L4_80)
        err = bytes(icmp_err4(quote4(TCP(sport=80, dport=sport))))
        res = se.run(err)
        assert res.delta == {"icmp_error_steered": 1}
        assert check_steered(se, err, res, L4_80,
                             (CLIENT4, sport, 6)) == owner
    for sport in range(44000, 44016):
        syn = bytes(syn6(sport=sport))
        owner = check_steered(se, syn, se.run(syn), L6_80)
        err = bytes(icmp_err6(ICMPv6PacketTooBig(mtu=1280), quote6(
            TCP(sport=80, dport=sport))))
        res = se.run(err)
        assert res.delta == {"icmp_error_steered": 1}
        assert check_steered(se, err, res, L6_80,
                             (CLIENT6, sport, 6)) == owner


# --------------------------------------------------------------------------
# Fuzz: seeded, deterministic


FUZZ_SEED = 0x05E1DA7A
FUZZ_FRAMES = 4000

_SENT_BY = {
    PASS: {"pass"},
    TX: {"steered", "icmp_echo_reply", "icmp_too_big_sent",
         "icmp_error_steered"},
    REDIRECT: {"steered", "icmp_error_steered"},
    DROP: {n for n in structs.SE_STATS if n.startswith("drop_")},
}


def _fuzz_frames(rng):
    seeds = [bytes(c.build()) for c in CASES]
    vip4 = ipaddress.ip_address(VIP4).packed
    vip6 = ipaddress.ip_address(VIP6).packed
    for i in range(FUZZ_FRAMES):
        kind = i % 5
        if kind == 0:  # random bytes behind an IPv4 / IPv6 / other type
            etype = rng.choice([b"\x08\x00", b"\x86\xdd", b"\x81\x00",
                                rng.randbytes(2)])
            body = rng.randbytes(rng.randint(0, 200))
            if etype == b"\x08\x00" and len(body) >= 20 and rng.random() < .7:
                body = body[:16] + vip4 + body[20:]
            if etype == b"\x86\xdd" and len(body) >= 40 and rng.random() < .7:
                body = body[:24] + vip6 + body[40:]
            yield rng.randbytes(12) + etype + body
        elif kind in (1, 2):  # bit flips / byte sets on a corpus frame
            frame = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                pos = rng.randrange(12, len(frame)) if len(frame) > 12 else 0
                if rng.random() < 0.5:
                    frame[pos] ^= 1 << rng.randrange(8)
                else:
                    frame[pos] = rng.randrange(256)
            yield bytes(frame)
        elif kind == 3:  # truncated or extended corpus frame
            frame = rng.choice(seeds)
            if rng.random() < 0.5:
                yield frame[:rng.randint(14, len(frame))]
            else:
                yield frame + rng.randbytes(rng.randint(1, 64))
        else:  # well-formed headers, random fields, VIP destination
            if rng.random() < 0.5:
                pkt = ip4(tos=rng.randrange(256), ttl=rng.randrange(256),
                          flags=rng.choice([0, 2, 1, 3]),
                          frag=rng.choice([0, 0, 0, rng.randrange(8192)]),
                          proto=rng.choice([1, 6, 17, 132, 47, 4, 41,
                                            rng.randrange(256)]))
            else:
                pkt = ip6(tc=rng.randrange(256), hlim=rng.randrange(256),
                          nh=rng.choice([58, 6, 17, 132, 0, 43, 44, 60,
                                         rng.randrange(256)]))
            l4 = struct.pack("!HH", rng.randrange(65536),
                             rng.choice([80, 53, 443, 8443, 9443, 8080, 9090,
                                         7070, rng.randrange(65536)]))
            if rng.random() < 0.3:  # an ICMP(v6) type/code first
                l4 = bytes([rng.choice([0, 3, 5, 8, 11, 13, 1, 2, 128, 129,
                                        135, 136]),
                            rng.randrange(3)]) + l4
            yield bytes(pkt / Raw(l4 + rng.randbytes(rng.randint(0, 1600))))


def _fuzz_run(se):
    """Yield (where, frame, result) for every fuzz frame, after checking
    what must hold for any frame: a real verdict, exactly one counter moved
    by one and it fits the verdict."""
    rng = random.Random(FUZZ_SEED)
    with se.inside():
        # Counters are read per frame; the whole loop stays in the netns.
        for n, frame in enumerate(_fuzz_frames(rng)):
            before = se.counters()
            res = libbpf.prog_test_run(se.prog.fd, frame)
            after = se.counters()
            delta = {k: after[k] - before[k] for k in after
                     if after[k] != before[k]}
            where = f"fuzz frame {n}: {frame.hex()}"
            assert res.retval in (DROP, PASS, TX, REDIRECT), (
                f"verdict {res.retval}; {where}")
            assert len(delta) == 1 and sum(delta.values()) == 1, (
                f"counters {delta}; {where}")
            assert set(delta) <= _SENT_BY[res.retval], (
                f"{VERDICT_NAMES[res.retval]} with {delta}; {where}")
            yield where, frame, Result(res.retval, res.data_out, delta)


def test_fuzz_never_aborts_never_passes_vip(se):
    verdicts = {}
    for where, frame, res in _fuzz_run(se):
        (counter,) = res.delta
        out = res.data_out
        if res.retval == PASS:
            assert not vip_destined(frame), f"VIP frame passed; {where}"
            assert out == frame, where
        elif res.retval == DROP:
            assert counter != "drop_internal", where
        elif counter in ("steered", "icmp_error_steered"):
            # The IP packet, without what followed it in the frame.
            packet = frame[14:14 + inner_l3_len(frame)]
            hdr = len(out) - 14 - len(packet)
            assert hdr in (20, 24, 40, 44), where
            assert out[hdr + 14:] == packet, where
        elif counter == "icmp_echo_reply":
            assert len(out) == len(frame), where
        else:  # icmp_too_big_sent: the quote of the frame's start
            headers = {126: 14 + 20 + 8, 166: 14 + 40 + 8}
            assert len(out) in headers, where
            quote = out[headers[len(out)]:]
            assert quote == frame[14:14 + len(quote)], where
        verdicts[res.retval] = verdicts.get(res.retval, 0) + 1
    # The generator reaches every verdict (else it tests too little).
    assert set(verdicts) == {DROP, PASS, TX, REDIRECT}, verdicts


_L4_MIN = {6: 20, 17: 8, 132: 12, 1: 8 + 20 + 4, 58: 8 + 40 + 4}


def test_fuzz_steers_only_on_bytes_of_the_packet(se):
    """Whatever is steered or answered was judged on bytes inside its IP
    packet: the IP length fits the frame, the L4 (or ICMP + quoted) header
    fits the IP length, and the outer length is the inner length plus the
    encapsulation."""
    bad = []
    for where, frame, res in _fuzz_run(se):
        (counter,) = res.delta
        if counter not in ("steered", "icmp_error_steered",
                           "icmp_echo_reply"):
            continue
        l3_len = inner_l3_len(frame)
        v4 = frame[12:14] == b"\x08\x00"
        proto = frame[23] if v4 else frame[20]
        if not (20 <= l3_len <= len(frame) - 14) or (
                l3_len < (20 if v4 else 40) + _L4_MIN.get(proto, 0)
                and counter != "icmp_echo_reply"):
            bad.append(where)
            continue
        if counter != "icmp_echo_reply":
            # The outer packet is all of the frame sent (trailing bytes
            # trimmed) and is the inner one plus the encapsulation.
            out = res.data_out
            hdr = len(out) - 14 - l3_len
            outer_len = (struct.unpack("!H", out[16:18])[0]
                         if out[12:14] == b"\x08\x00"
                         else 40 + struct.unpack("!H", out[18:20])[0])
            if outer_len != l3_len + hdr or outer_len != len(out) - 14:
                bad.append(where)
    assert not bad, f"{len(bad)} frames judged on bytes outside their " \
        f"packet, e.g. {bad[:3]}"


# --------------------------------------------------------------------------
# The documentation's verdict table is what these tests assert


_ROW = re.compile(r"^\|\s*`(?P<id>[a-z0-9-]+)`\s*\|(?P<cells>.*)\|\s*$")


def _doc_rows():
    """id -> (verdict, counter) of the rows of the "Verdict table" section."""
    text = DOC.read_text()
    section = text.split("\n## Verdict table\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = _ROW.match(line)
        if not m:
            continue
        cells = [c.strip() for c in m["cells"].split("|")]
        # | `id` | packet | verdict | counter | why |
        verdict = cells[1].strip("*` ").split()[0]
        counter = cells[2].strip("` ")
        assert m["id"] not in rows, f"row {m['id']} twice in {DOC}"
        rows[m["id"]] = (verdict, counter)
    return rows


def test_verdict_table_matches_docs():
    rows = _doc_rows()
    expected = {c.id: (VERDICT_NAMES[c.verdict], c.counter) for c in CASES}
    for id_, (verdict, counter) in SPECIAL.items():
        expected[id_] = (VERDICT_NAMES.get(verdict, "-"), counter or "-")
    expected["eth-runt"] = ("PASS", "pass")
    assert set(rows) == set(expected), (
        f"only in docs: {sorted(set(rows) - set(expected))}; "
        f"only in tests: {sorted(set(expected) - set(rows))}")
    wrong = {k: (rows[k], expected[k]) for k in rows if rows[k] != expected[k]}
    assert not wrong, f"docs vs tests (docs, tests): {wrong}"
