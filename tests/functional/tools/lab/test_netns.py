"""Self-test of the namespace topology library, without any BPF.

The VIP is routed on the router straight to member m1 (plain routing, no SE
in the path); m1 holds the VIP on lo and serves HTTP and UDP on it.
"""

import hashlib
import json
import os
import socket
import sys
import threading
import time

import pytest

from tools.lab import netns
from tools.lab.netns import VIP4
from tools.lab.netns import VIP6

PORT = 8080
UPLOAD = 4 * 1024 * 1024


def _namespaces_of(topo):
    return netns.list_namespaces(topo.prefix)


def test_build_and_teardown_leaves_nothing():
    with netns.Topology(n_se=2, n_members=2) as topo:
        prefix = topo.prefix
        assert netns.PREFIX_RE.match(prefix)
        names = set(_namespaces_of(topo))
        assert names == {prefix + n for n in
                         ("router", "client", "se1", "se2", "m1", "m2")}
        # Interface names stay within IFNAMSIZ.
        for h in topo.hosts.values():
            assert len(h.router_ifname) <= 15 and len(h.ifname) <= 15
        assert topo.hosts["se2"].ipv4 == "198.18.2.2"
        assert topo.hosts["se2"].gw6 == "2001:db8:1:2::1"
        assert topo.hosts["m1"].ipv6 == "2001:db8:2:1::2"
        # Router sysctls.
        assert netns.read_sysctl(topo.router.ns,
                                 "net.ipv4.fib_multipath_hash_policy") == "1"
        assert netns.read_sysctl(topo.router.ns,
                                 "net.ipv6.conf.all.forwarding") == "1"
        assert netns.read_sysctl(
            topo.router.ns, "net.ipv4.conf.r-se1.rp_filter") == "0"
        # MTUs and offloads.
        assert topo.ipr("se1").get_links(ifname="eth0")[0].get(
            "IFLA_MTU") == 1600
        assert topo.ipr("client").get_links(ifname="eth0")[0].get(
            "IFLA_MTU") == 1500
        feats = topo.run("se1", ["ethtool", "-k", "eth0"]).stdout
        assert "generic-receive-offload: off" in feats
        assert "tcp-segmentation-offload: off" in feats
        # A process started in a namespace is tracked and stopped.
        proc = topo.spawn("m2", ["sleep", "300"])
        # Routed reachability, v4 and v6, from the client to every host.
        for h in topo.ses + topo.members:
            topo.run("client", ["ping", "-c1", "-W2", h.ipv4])
            topo.run("client", ["ping", "-6", "-c1", "-W2", h.ipv6])
    assert proc.poll() is not None
    assert netns.list_namespaces(prefix) == []


def test_vip_routed_to_member_without_se():
    with netns.Topology(n_se=1, n_members=2) as topo:
        prefix = topo.prefix
        topo.setup_member("m1", [VIP4, VIP6])
        topo.start_http_server("m1", [VIP4, VIP6], PORT)
        topo.start_udp_echo("m1", [VIP4, VIP6], 5353)
        topo.route_vip(VIP4, "m1")
        topo.route_vip(VIP6, "m1")

        # Replies from the VIP must never reach an SE.
        se_v4 = topo.nft_counter("se1", saddr=VIP4)
        se_v6 = topo.nft_counter("se1", saddr=VIP6)
        # ... while the router sees them arrive from the member (proves the
        # counters count).
        r_v4 = topo.nft_counter("router", "r-m1", saddr=VIP4)
        r_v6 = topo.nft_counter("router", "r-m1", saddr=VIP6)
        before = topo.link_stats("m1")

        for vip in (VIP4, VIP6):
            assert topo.http_get(vip, PORT) == "member=m1"
            resp, digest = topo.http_upload(vip, PORT, UPLOAD)
            assert resp == f"member=m1 bytes={UPLOAD} sha256={digest}"
            # A fixed source port works (and can be reused right away).
            assert topo.http_get(vip, PORT, source_port=40001) == "member=m1"
            assert topo.http_get(vip, PORT, source_port=40001) == "member=m1"

        summary = topo.udp_probe(VIP4, 5353, duration=0.5)
        assert summary["sent"] >= 10
        assert summary["lost"] == 0, summary
        assert summary["members"] == {"m1": summary["received"]}

        assert se_v4.packets() == 0
        assert se_v6.packets() == 0
        assert r_v4.packets() > UPLOAD // 1600 // 40  # >= the ACKs
        assert r_v6.packets() > 0
        after = topo.link_stats("m1")
        assert after["rx_packets"] - before["rx_packets"] > 2 * UPLOAD // 1600
        assert after["tx_packets"] > before["tx_packets"]
    assert netns.list_namespaces(prefix) == []


def test_vip_ecmp_and_reroute():
    with netns.Topology(n_se=1, n_members=2) as topo:
        for m in ("m1", "m2"):
            topo.setup_member(m, [VIP4, VIP6])
            topo.start_http_server(m, [VIP4, VIP6], PORT)
        topo.route_vip(VIP4, ["m1", "m2"])
        topo.route_vip(VIP6, ["m1", "m2"])
        routes = topo.router_routes(4)
        assert "nexthop via 198.19.1.2" in routes
        assert "nexthop via 198.19.2.2" in routes
        # L4 multipath hashing: different source ports reach both members.
        for vip in (VIP4, VIP6):
            seen = {topo.http_get(vip, PORT, source_port=41000 + k)
                    for k in range(24)}
            assert seen == {"member=m1", "member=m2"}, (vip, seen)
        # Change the route: everything goes to m2.
        topo.route_vip(VIP4, "m2")
        assert {topo.http_get(VIP4, PORT, source_port=42000 + k)
                for k in range(6)} == {"member=m2"}
        topo.unroute_vip(VIP4)
        with pytest.raises(netns.CommandError):
            topo.http_get(VIP4, PORT, timeout=1)


def test_background_probe_and_extra_sources():
    with netns.Topology(n_se=1, n_members=1) as topo:
        topo.setup_member("m1", [VIP6])
        topo.start_udp_echo("m1", [VIP6], 5353)
        topo.route_vip(VIP6, "m1")
        v4, v6 = topo.add_client_sources(2)
        assert v6 == ["2001:db8:d::1", "2001:db8:d::2"]
        prober = topo.start_udp_probe(VIP6, 5353, duration=0.3,
                                      source=v6[1])
        res = netns.probe_result(prober)
        assert res["lost"] == 0 and res["members"] == {"m1": res["sent"]}


def test_wait_for_reports_what():
    with pytest.raises(TimeoutError, match="the impossible"):
        netns.wait_for(lambda: False, 0.05, "the impossible")
    assert netns.wait_for(lambda: 42, 1, "an answer") == 42


def test_wait_for_backs_off_and_still_polls_at_the_deadline():
    """Polls start 20 ms apart and slow to 100 ms: a second of waiting
    is about a dozen polls, not fifty; the last poll is at the deadline."""
    calls = []

    def never():
        calls.append(time.monotonic())
        return False
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        netns.wait_for(never, 1.0, "nothing")
    # Fifty at a fixed 20 ms; a loaded host oversleeps (fewer polls).
    assert 3 <= len(calls) <= 16, len(calls)
    assert calls[-1] - start >= 1.0
    # A caller's own interval is kept.
    calls.clear()
    with pytest.raises(TimeoutError):
        netns.wait_for(never, 1.0, "nothing", interval=0.5)
    assert 2 <= len(calls) <= 3, len(calls)


def test_kill_procs_signals_every_process_before_waiting_for_one(tmp_path):
    """Each process takes a second to exit after SIGTERM: the second must
    have had its SIGTERM before the first one exited (a lab's teardown
    used to stop a dozen such processes one after the other)."""
    script = '\n'.join((
        'import signal, sys, time',
        'def term(*_):',
        '    with open(sys.argv[1], "a") as f:',
        '        f.write(f"term {time.time()}\\n")',
        '    time.sleep(1)',
        '    with open(sys.argv[1], "a") as f:',
        '        f.write(f"exit {time.time()}\\n")',
        '    sys.exit(0)',
        'signal.signal(signal.SIGTERM, term)',
        'print("READY", flush=True)',
        'while True:',
        '    time.sleep(60)'))
    logs = [tmp_path / f'p{i}.log' for i in (1, 2)]
    procs = [netns.Proc([sys.executable, '-c', script, str(log)])
             for log in logs]
    for proc in procs:
        proc.wait_for_line('^READY')
    netns.kill_procs(procs)
    assert all(p.returncode == 0 for p in procs), [p.returncode
                                                   for p in procs]
    times = [dict(line.split() for line in log.read_text().splitlines())
             for log in logs]
    assert float(times[1]['term']) < float(times[0]['exit']), times


def test_cleanup_on_failure_and_stale_sweep():
    prefix = None
    with pytest.raises(ZeroDivisionError):
        with netns.Topology(n_se=1, n_members=1) as topo:
            prefix = topo.prefix
            topo.spawn("m1", ["sleep", "300"])
            1 / 0
    assert netns.list_namespaces(prefix) == []
    # A dead owner's namespaces are swept; a live owner's are not.
    dead = netns.new_prefix()
    live = netns.new_prefix()
    try:
        with open(f"{netns.OWNER_DIR}/{dead}", "w") as f:
            f.write("999999999\n")
        netns.create_namespace(dead + "x")
        netns.create_namespace(live + "x")
        removed = netns.sweep_stale()
        assert dead + "x" in removed
        assert netns.list_namespaces(dead) == []
        assert netns.list_namespaces(live) == [live + "x"]
    finally:
        netns.remove_namespace(live + "x")
        netns.release_prefix(live)
        netns.remove_namespace(dead + "x")
        netns.release_prefix(dead)


def test_servers_importable_and_documented():
    # The server scripts are stdlib-only programs; the client's summary is
    # JSON on its last line.
    from tools.lab.servers import client
    assert json.dumps(client._percentile([1, 2, 3], 0.5)) == "2"
    assert hashlib.sha256(b"").hexdigest()


def test_xdp_tx_on_se_reaches_router():
    """XDP_TX out of an SE's veth needs NAPI on the router side (the
    XDP_PASS program Topology attaches there): prove frames come back."""
    with netns.Topology(n_se=1, n_members=0) as topo:
        se = topo.hosts["se1"]
        mac = topo.ipr("se1").get_links(ifname="eth0")[0].get("IFLA_ADDRESS")
        topo.run("router", ["ip", "neigh", "replace", se.ipv4, "lladdr", mac,
                            "dev", se.router_ifname, "nud", "permanent"])
        bounced = topo.nft_counter("router", se.router_ifname,
                                   saddr=se.gw4)
        netns.attach_xdp(se.ns, se.ifname,
                         netns.compile_bpf(netns.XDP_TX_C, "xdp_tx"))
        before = topo.link_stats("se1")
        topo.run("router", ["ping", "-c", "10", "-i", "0.01", "-W", "0.2",
                            se.ipv4], check=False)
        netns.wait_for(lambda: bounced.packets() >= 10, 5,
                       "XDP_TX'ed echo requests at the router")
        assert topo.link_stats("se1")["tx_dropped"] == before["tx_dropped"]


def test_socket_in_makes_the_socket_there_and_leaves_this_thread_alone():
    """topo.http_get runs in the test process with a socket of the client's
    namespace: the socket sees that namespace's addresses, the calling
    thread stays in its own, and a namespace that is not there is an
    OSError."""
    def this_thread_ns():
        return os.stat(f'/proc/self/task/{threading.get_native_id()}/ns/'
                       f'net').st_ino

    with netns.Topology(n_se=1, n_members=1) as topo:
        before = this_thread_ns()
        s = netns.socket_in(topo.ns('client'), socket.AF_INET,
                            socket.SOCK_STREAM)
        with s:
            s.bind((topo.client.ipv4, 0))     # an address only it has
        assert this_thread_ns() == before
        with pytest.raises(OSError):
            socket.socket().bind((topo.client.ipv4, 0))
        with pytest.raises(OSError, match='No such file'):
            netns.socket_in(topo.prefix + 'nowhere', socket.AF_INET,
                            socket.SOCK_STREAM)
