"""Malformed VIP traffic on a real network never loops between router and SE.

Topology (three namespaces ``dsrc<random>-{c,r,s}``, static neighbours, so
nothing but the test's frames crosses the links)::

    client 203.0.113.7 --- rc0 [router] rs0 --- eth0 SE 198.18.0.2
                                 VIP4/32, VIP6/128 via the SE
                                 member subnets: blackhole

The SE forwards (net.ipv*.conf.all.forwarding=1) and its default route is
the router: a VIP frame its XDP program handed to the stack would go back to
the router, which routes the VIP to the SE again -- a loop that only the
TTL ends.  ``test_control_loop_without_program`` shows that loop (so the
counting can see one); ``test_corpus_frames_cross_router_once`` sends corpus
frames from the client with scapy and checks, from the router's interface
counters (pyroute2), that every frame was forwarded to the SE at most once
(exactly once when the router forwards it at all) and that the SE's
counters moved as the verdict table says.
"""

import contextlib
import ipaddress
import os
import secrets
import shutil
import subprocess
import time
import traceback

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
import pytest
from scapy.layers.inet import IP
from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether

from amphora_agent.dataplane import dataplane
from amphora_agent.dataplane import model
from amphora_agent.dataplane import structs
from tests.functional.amphora_agent.dataplane import (
    test_packet_corpus as corpus)

pytestmark = corpus.pytestmark

VIP4, VIP6 = corpus.VIP4, corpus.VIP6
CLIENT4, CLIENT6 = corpus.CLIENT4, corpus.CLIENT6
RC4, RC6 = "203.0.113.1", "2001:db8:c::1"     # router, client side
RS4, RS6 = "198.18.0.1", "2001:db8:ff::1"     # router, SE side
SE4, SE6 = "198.18.0.2", "2001:db8:ff::2"
MEMBER4, MEMBER6 = "198.19.1.2", "2001:db8:101::2"
MTU = 1600          # every link: a 1600-byte IP packet reaches the SE
OVERHEAD4, OVERHEAD6 = 20, 40  # IPIP outer headers
NUD_PERMANENT = 0x80
IFA_F_NODAD = 0x02
DEADLINE = 10.0
# Generic XDP: on this kernel (6.18) frames a native-mode veth program
# XDP_TXes are counted (xdp_tx) but never reach the peer, even with GRO on
# the peer; DSR_TEST_XDP_MODE=native tries anyway.
XDP_MODE = os.environ.get("DSR_TEST_XDP_MODE", "generic")

# Corpus frames the router forwards to the SE: (case id, SE counter).
FORWARDED = [
    ("v4-tcp-syn", "steered"),
    ("v4-udp", "steered"),
    ("v4-options", "drop_ip_options"),
    ("v4-first-fragment", "drop_fragment"),
    ("v4-last-fragment", "drop_fragment"),
    ("v4-tcp-no-listener", "drop_no_listener"),
    ("v4-gre-to-vip", "drop_unsupported_proto"),
    ("v4-no-member", "drop_no_member"),
    ("v4-tcp-truncated", "drop_malformed"),
    ("v4-udp-truncated", "drop_malformed"),
    ("v4-icmp-error-quoting-other-source", "drop_malformed"),
    ("v4-icmp-frag-needed-for-flow", "icmp_error_steered"),
    ("v4-icmp-timestamp", "drop_icmp"),
    ("v4-icmp-echo", "icmp_echo_reply"),
    ("v4-too-big-df", "icmp_too_big_sent"),
    ("v4-too-big-not-df", "drop_too_big"),
    ("v6-tcp-syn", "steered"),
    ("v6-hop-by-hop", "drop_ipv6_ext"),
    ("v6-routing", "drop_ipv6_ext"),
    ("v6-dest-options", "drop_ipv6_ext"),
    ("v6-fragment-header", "drop_fragment"),
    ("v6-tcp-no-listener", "drop_no_listener"),
    ("v6-proto-253", "drop_unsupported_proto"),
    ("v6-packet-too-big-for-flow", "icmp_error_steered"),
    ("v6-icmp-echo", "icmp_echo_reply"),
    ("v6-too-big", "icmp_too_big_sent"),
]
# Corpus frames the router itself discards (bad IP header): never forwarded.
ROUTER_DROPS = ["v4-ihl-4", "v4-tot-len-over-frame",
                "v6-payload-len-over-frame"]
# What the SE sends back towards the router (XDP_TX).
SE_TX = {"steered", "icmp_error_steered", "icmp_echo_reply",
         "icmp_too_big_sent"}
# ... of which these are for the client (the rest goes to blackholed
# member subnets).
TO_CLIENT = {"icmp_echo_reply", "icmp_too_big_sent"}


def wait_for(predicate, what, timeout=DEADLINE):
    """Poll predicate() until truthy (returned) or raise at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {what}")
        time.sleep(0.01)  # poll interval, not synchronisation


class Net:
    def __init__(self):
        tag = secrets.token_hex(4)
        self.client, self.router, self.se = (f"dsrc{tag}-{n}" for n in "crs")
        self.pin_dir = "/sys/fs/bpf/octavia-dsr-test-" + tag
        self.created = []
        self.dp = None
        self.macs = {}

    @contextlib.contextmanager
    def inside(self, ns):
        saved = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            pr_netns.setns(ns, flags=0)
            try:
                yield
            finally:
                pr_netns.setns(saved)
        finally:
            os.close(saved)

    def sysctls(self, ns, values):
        with self.inside(ns):
            for key, value in values.items():
                with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                    f.write(f"{value}\n")

    def ipr(self, ns):
        return IPRoute(netns=ns, flags=0)

    def link(self, ns, ifname, key):
        with self.ipr(ns) as ip:
            stats = ip.get_links(ifname=ifname)[0].get("IFLA_STATS64")
            return int(stats.get(key))

    def build(self):
        for ns in (self.client, self.router, self.se):
            pr_netns.create(ns)
            self.created.append(ns)
            quiet = {"net.ipv6.conf.default.addr_gen_mode": 1,  # no LL
                     "net.ipv6.conf.default.accept_dad": 0,
                     "net.ipv6.conf.all.accept_ra": 0,
                     "net.ipv6.conf.default.accept_ra": 0,
                     "net.ipv4.conf.all.rp_filter": 0,
                     "net.ipv4.conf.default.rp_filter": 0,
                     "net.ipv4.conf.all.send_redirects": 0,
                     "net.ipv4.conf.default.send_redirects": 0}
            self.sysctls(ns, quiet)
        with self.ipr(self.router) as r:
            r.link("set", index=r.link_lookup(ifname="lo")[0], state="up")
            for rif, host, ips in (("rc0", self.client,
                                    ((RC4, 24), (RC6, 64), (CLIENT4, 24),
                                     (CLIENT6, 64))),
                                   ("rs0", self.se,
                                    ((RS4, 24), (RS6, 64), (SE4, 24),
                                     (SE6, 64)))):
                r.link("add", ifname=rif, kind="veth",
                       peer={"ifname": "eth0", "net_ns_fd": host})
                ri = r.link_lookup(ifname=rif)[0]
                r.link("set", index=ri, mtu=MTU)
                with self.ipr(host) as h:
                    hi = h.link_lookup(ifname="eth0")[0]
                    h.link("set", index=hi, mtu=MTU)
                    # No ARP / ND / MLD (IFF_NOARP: no solicited-node
                    # groups; no IFF_MULTICAST: no all-routers group), set
                    # before any address: nothing but the test's frames.
                    for ns_, ifn in ((self.router, rif), (host, "eth0")):
                        subprocess.run(
                            ["nsenter", f"--net=/run/netns/{ns_}", "--",
                             "ip", "link", "set", "dev", ifn, "arp", "off",
                             "multicast", "off"],
                            check=True, capture_output=True)
                    (r4, p4), (r6, p6), (h4, _), (h6, _) = ips
                    r.addr("add", index=ri, address=r4, prefixlen=p4)
                    r.addr("add", index=ri, address=r6, prefixlen=p6,
                           flags=IFA_F_NODAD)
                    h.addr("add", index=hi, address=h4, prefixlen=p4)
                    h.addr("add", index=hi, address=h6, prefixlen=p6,
                           flags=IFA_F_NODAD)
                    h.link("set", index=h.link_lookup(ifname="lo")[0],
                           state="up")
                    rmac = r.get_links(ri)[0].get("IFLA_ADDRESS")
                    hmac = h.get_links(hi)[0].get("IFLA_ADDRESS")
                    self.macs[rif], self.macs[host] = rmac, hmac
                    for dst in (h4, h6):
                        r.neigh("add", dst=dst, lladdr=hmac, ifindex=ri,
                                state=NUD_PERMANENT)
                    for dst in (r4, r6):
                        h.neigh("add", dst=dst, lladdr=rmac, ifindex=hi,
                                state=NUD_PERMANENT)
                    r.link("set", index=ri, state="up")
                    h.link("set", index=hi, state="up")
                    h.route("add", dst="0.0.0.0/0", gateway=r4)
                    h.route("add", dst="::/0", gateway=r6)
            r.route("add", dst=f"{VIP4}/32", gateway=SE4)
            r.route("add", dst=f"{VIP6}/128", gateway=SE6)
            r.route("add", dst="198.19.0.0/16", type="blackhole")
            r.route("add", dst="2001:db8:101::/48", type="blackhole")
        # Forwarding last: enabled before the links, it would join the
        # all-routers group while they still had IFF_MULTICAST (MLD noise).
        for ns in (self.router, self.se):
            self.sysctls(ns, {"net.ipv4.conf.all.forwarding": 1,
                              "net.ipv6.conf.all.forwarding": 1})
        if XDP_MODE == "native":
            # Native XDP_TX on a veth needs NAPI on the peer (GRO on).
            subprocess.run(["nsenter", f"--net=/run/netns/{self.router}",
                            "--", "ethtool", "-K", "rs0", "gro", "on"],
                           check=True, capture_output=True)
        for ns in (self.client, self.router, self.se):
            with self.ipr(ns) as ip:
                wait_for(lambda: all(
                    link.get("IFLA_OPERSTATE") == "UP"
                    for link in ip.get_links()
                    if link.get("IFLA_IFNAME") != "lo"), f"links up in {ns}")

    def start_se(self):
        state = model.DesiredState(
            tunnel_source4=ipaddress.ip_address(SE4),
            tunnel_source6=ipaddress.ip_address(SE6))
        for text, members in ((f"{VIP4}:80/tcp", (MEMBER4,)),
                              (f"{VIP4}:53/udp", (MEMBER4,)),
                              (f"{VIP4}:8080/tcp", ()),
                              (f"[{VIP6}]:80/tcp", (MEMBER6,))):
            key = model.ListenerKey.parse(text)
            state.listeners[key] = model.ListenerSpec(key, members={
                ipaddress.ip_address(m): model.Member(
                    ipaddress.ip_address(m)) for m in members})
        with self.inside(self.se):
            self.dp = dataplane.Dataplane.open(
                self.pin_dir, limits=dataplane.Limits(
                    max_listeners=8, ring_size=251, max_reals=64,
                    max_nexthops=16, conn_table_size=4096), create=True)
            self.dp.apply(state)
            self.mode = self.dp.attach("eth0", mode=XDP_MODE)

    def se_counters(self):
        m = self.dp.maps["se_stats"]
        return {name: sum(int.from_bytes(v[:8], "little")
                          for v in m.lookup_percpu(i.to_bytes(4, "little")))
                for i, name in enumerate(structs.SE_STATS)}

    def send_from_client(self, frames):
        """sendp() the frames on the client's eth0, from a forked child in
        the client's namespace (the test process never changes its own)."""
        pid = os.fork()
        if pid == 0:  # child: never returns into pytest
            code = 1
            try:
                pr_netns.setns(self.client, flags=0)
                from scapy.config import conf
                from scapy.packet import Raw
                from scapy.sendrecv import sendp
                conf.ifaces.reload()  # the cache is the parent's namespace
                sendp([Raw(f) for f in frames], iface="eth0", verbose=False,
                      promisc=False)
                code = 0
            except BaseException:  # noqa: BLE001 - shown in the test output
                traceback.print_exc()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "sendp failed"

    def client_frame(self, frame):
        """A corpus frame re-addressed client -> router on the wire."""
        eth = Ether(dst=self.macs["rc0"], src=self.macs[self.client])
        return bytes(eth)[:12] + bytes(frame)[12:]

    def close(self):
        errors = []
        steps = [lambda: self.dp and self.dp.destroy(),
                 lambda: os.path.isdir(self.pin_dir)
                 and shutil.rmtree(self.pin_dir)]
        # Removing the namespaces removes the veths and the XDP attachment.
        steps += [lambda ns=ns: ns in pr_netns.listnetns()
                  and pr_netns.remove(ns) for ns in reversed(self.created)]
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - first one re-raised
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def net():
    n = Net()
    try:
        n.build()
        yield n
    finally:
        n.close()


def test_control_loop_without_program(net):
    """Without the SE program a VIP packet ping-pongs: with TTL 8 the
    router sends it to the SE 4 times (8 -> 7, 5, 3, 1)."""
    before = net.link(net.router, "rs0", "tx_packets")
    frame = net.client_frame(
        Ether() / IP(src=CLIENT4, dst=VIP4, ttl=8) / TCP(dport=80))
    net.send_from_client([frame])
    wait_for(lambda: net.link(net.router, "rs0", "tx_packets") - before >= 4,
             "the control frame to loop")
    # TTL 1 at the SE: it sends time-exceeded to the client, not the VIP
    # packet back: the loop ends at exactly 4 crossings.
    wait_for(lambda: net.link(net.router, "rc0", "tx_packets") >= 1,
             "time-exceeded from the SE to reach the client")
    assert net.link(net.router, "rs0", "tx_packets") - before == 4


def test_corpus_frames_cross_router_once(net):
    net.start_se()
    frames, expected = [], {}
    for case_id, counter in FORWARDED:
        case = corpus.CASES_BY_ID[case_id]
        # The table and this list agree (the table is asserted elsewhere).
        assert case.counter == counter, case_id
        frames.append(net.client_frame(case.build()))
        expected[counter] = expected.get(counter, 0) + 1
    for case_id in ROUTER_DROPS:
        frames.append(net.client_frame(corpus.CASES_BY_ID[case_id].build()))
    n_forwarded = len(FORWARDED)
    n_se_tx = sum(v for k, v in expected.items() if k in SE_TX)
    n_to_client = sum(v for k, v in expected.items() if k in TO_CLIENT)

    se_before = net.se_counters()
    rs_tx = net.link(net.router, "rs0", "tx_packets")
    rs_rx = net.link(net.router, "rs0", "rx_packets")
    rc_tx = net.link(net.router, "rc0", "tx_packets")

    net.send_from_client(frames)

    def se_delta():
        after = net.se_counters()
        return {k: after[k] - se_before[k] for k in after
                if after[k] != se_before[k]}

    wait_for(lambda: sum(se_delta().values()) >= n_forwarded,
             f"the SE program to see {n_forwarded} frames "
             f"(so far {se_delta()})")
    wait_for(lambda: net.link(net.router, "rs0", "rx_packets") - rs_rx
             >= n_se_tx, "the SE's XDP_TX frames to reach the router")
    wait_for(lambda: net.link(net.router, "rc0", "tx_packets") - rc_tx
             >= n_to_client, "the SE's answers to reach the client")

    # Each SE counter moved by exactly its frames; nothing was passed.
    assert se_delta() == expected
    # Every forwarded frame crossed router -> SE exactly once: no loop,
    # and the frames the router dropped itself never reached the SE.
    assert net.link(net.router, "rs0", "tx_packets") - rs_tx == n_forwarded
    assert net.link(net.router, "rs0", "rx_packets") - rs_rx == n_se_tx
    assert net.link(net.router, "rc0", "tx_packets") - rc_tx == n_to_client
    assert net.mode == XDP_MODE
