"""Network-namespace test topologies for the DSR functional tests.

Everything here runs as root and only touches what it created itself: every
network namespace carries a per-run unique prefix (``dsr<4 hex>-``), every
process is started by :func:`spawn` and stopped by PID (its own process
group), and every :class:`Topology` removes its namespaces on exit, also
when the test fails.  An ``atexit`` handler is the safety net for whatever a
crashed test left behind, and :func:`sweep_stale` removes the namespaces of
earlier runs whose owner process is gone.

Commands run in a namespace with ``nsenter --net=/run/netns/NAME`` -- not
``ip netns exec``, which remounts /sys and so hides the pins under
/sys/fs/bpf.

The standard DSR topology (see :class:`Topology`)::

    client ---- router ---- se1 .. seN       (service engines)
                  |  \\---- m1             (members, one link each,
                  |   \\--- m2 ...          a routed hop from the SEs)

Address plan (only documentation / benchmarking ranges)::

    link            v4 subnet         v6 subnet            host / router
    client          203.0.113.0/24    2001:db8:c::/64      .2 / .1, ::2 / ::1
    se<i>           198.18.<i>.0/24   2001:db8:1:<i>::/64  .2 / .1, ::2 / ::1
    m<j>            198.19.<j>.0/24   2001:db8:2:<j>::/64  .2 / .1, ::2 / ::1
    VIPs            192.0.2.0/24      2001:db8:f::/64      (VIP4, VIP6)
    extra client    198.51.100.0/24   2001:db8:d::/64      routed to the client
      sources                                              (add_client_sources)

``<i>``/``<j>`` are written in hex in the v6 addresses (identical up to 9).
Host side of every link is ``eth0`` in the host's namespace; the router side
is ``r-<host>`` (``r-client``, ``r-se1``, ``r-m1``).  MTU 1600 on SE and
member links, 1500 on the client link; tx/tso/gso/gro off on every veth; an
XDP_PASS program on the router side of each SE link (so XDP_TX works).

Module-level helpers (``ns`` is a full namespace name):
    wait_for(predicate, timeout, what)      poll with a deadline
    run(ns, cmd, check=True) -> CompletedProcess
    spawn(ns, cmd, ready=REGEX) -> Proc      (a Popen; tracked; stop())
    sysctl(ns, key, value) / sysctls(ns, {key: value}) / read_sysctl
    ethtool_offloads_off(ns, ifname)
    link_stats(ns, ifname) -> {rx_packets, tx_packets, ..., tx_dropped}
    nft_counter_add(ns, ifname, saddr=..) -> NftCounter (.packets())
    compile_bpf(src, name), attach_xdp(ns, ifname, obj), detach_xdp
    sweep_stale(), list_namespaces(prefix)
Topology methods take logical host names ('client', 'router', 'se1', 'm1').
"""

import atexit
from dataclasses import dataclass
import functools
import http.client
import ipaddress
import json
import os
from pathlib import Path
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from tools.lab.servers import client

NETNS_RUN_DIR = "/run/netns"
OWNER_DIR = "/run/dsr-functional"  # <prefix> -> PID of the owning process
SERVERS_DIR = Path(__file__).resolve().parent / "servers"
PYTHON = sys.executable
# The helper scripts are stdlib-only: -S skips site-packages, ~15 ms/start.
SCRIPT_PYTHON = [PYTHON, "-S"]

PREFIX_RE = re.compile(r"^dsr[0-9a-f]{4}-")

VIP4 = "192.0.2.10"
VIP6 = "2001:db8:f::10"
VIP4_NET = "192.0.2.0/24"
VIP6_NET = "2001:db8:f::/64"
CLIENT_SRC4_NET = "198.51.100.0/24"
CLIENT_SRC6_NET = "2001:db8:d::/64"

IFA_F_NODAD = 0x02

DEFAULT_LINK_MTU = 1600  # router <-> SE / member: room for 44 bytes of encap
CLIENT_MTU = 1500


# --------------------------------------------------------------------------
# Polling


def exit_on_sigterm():
    """SIGTERM -> SystemExit in the calling process, so a script's
    `finally` still tears its lab down.  pyroute2 forks helpers (namespace
    creation) and stops them with SIGTERM: a forked child exits at once
    instead of unwinding the script's cleanup a second time."""
    main_pid = os.getpid()

    def handler(signum, frame):
        if os.getpid() != main_pid:
            os._exit(128 + signum)
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)


# wait_for's polls without an interval of the caller's: 20 ms at first,
# then 1.5 times longer each, up to 100 ms.
FIRST_POLL, SLOWEST_POLL = 0.02, 0.1


def wait_for(predicate, timeout, what, interval=None):
    """Poll ``predicate()`` until it returns a truthy value; return it.

    Without ``interval`` the polls back off from FIRST_POLL to
    SLOWEST_POLL: a predicate is often a process, a query or an API call,
    and polling one 50 times a second for as long as a load balancer
    takes to go ACTIVE cost the host more CPU than what was waited for.
    A caller's ``interval`` is kept as it is (the timing measurements ask
    for 1 ms).

    Raises TimeoutError naming ``what`` (and the last exception the predicate
    raised, if any) when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    delay = FIRST_POLL if interval is None else interval
    ceiling = SLOWEST_POLL if interval is None else interval
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last_exc = exc
        now = time.monotonic()
        if now >= deadline:
            msg = f"timed out after {timeout:g}s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            raise TimeoutError(msg)
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 1.5, ceiling)


# --------------------------------------------------------------------------
# Commands and processes in a namespace


class CommandError(subprocess.CalledProcessError):
    def __str__(self):
        out = (self.stdout or "").strip()
        err = (self.stderr or "").strip()
        s = super().__str__()
        if out:
            s += f"\nstdout: {out[-2000:]}"
        if err:
            s += f"\nstderr: {err[-2000:]}"
        return s


def netns_path(ns):
    return os.path.join(NETNS_RUN_DIR, ns)


def socket_in(ns, family, kind):
    """A socket of netns ``ns`` (None: this one), for this process to use:
    a socket stays in the namespace it was made in.  It is made by a
    thread of its own that enters ``ns`` and then ends, so no thread of
    the caller ever changes namespace.  A request from the test process
    instead of a client process: about 60 ms of CPU less each (a run made
    about 1,100 of them)."""
    if ns is None:
        return socket.socket(family, kind)
    made = {}

    def make():
        try:
            pr_netns.setns(ns, flags=0)     # 0: never create it
            made['socket'] = socket.socket(family, kind)
        except OSError as exc:
            made['error'] = exc
    maker = threading.Thread(target=make, name=f'socket-in-{ns}')
    maker.start()
    maker.join()
    if 'error' in made:
        raise made['error']
    return made['socket']


def ns_cmd(ns, cmd):
    """The argv running ``cmd`` inside netns ``ns`` (None: the root ns)."""
    cmd = [str(c) for c in cmd]
    if ns is None:
        return cmd
    return ["nsenter", f"--net={netns_path(ns)}", "--"] + cmd


def run(ns, cmd, check=True, timeout=60, input=None, env=None):
    """Run ``cmd`` (argv list) in netns ``ns``; return a CompletedProcess.

    stdout/stderr are captured as text.  ``check`` raises CommandError (with
    the output in its message) on a non-zero exit.
    """
    proc = subprocess.run(
        ns_cmd(ns, cmd),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if check and proc.returncode != 0:
        raise CommandError(proc.returncode, proc.args, proc.stdout,
                           proc.stderr)
    return proc


_LIVE_PROCS = set()
_LIVE_LOCK = threading.Lock()


class Proc(subprocess.Popen):
    """A Popen in its own session whose merged stdout/stderr is drained by
    a thread into ``self.lines`` (so a chatty child never blocks)."""

    def __init__(self, argv, env=None, cwd=None):
        super().__init__(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
        self.lines = []
        self._cond = threading.Condition()
        self._eof = False
        self._drainer = threading.Thread(target=self._drain, daemon=True,
                                         name=f"drain-{self.pid}")
        self._drainer.start()
        with _LIVE_LOCK:
            _LIVE_PROCS.add(self)

    def _drain(self):
        try:
            for line in self.stdout:
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        except (ValueError, OSError):
            pass
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def output(self):
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern, timeout=10.0):
        """Wait until a line matching ``pattern`` (regex, searched) appears;
        return the line.  Raises TimeoutError, or RuntimeError when the
        process exits first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                while seen < len(self.lines):
                    if rx.search(self.lines[seen]):
                        return self.lines[seen]
                    seen += 1
                if self._eof:
                    self.wait()
                    raise RuntimeError(
                        f"{self.args!r} exited ({self.returncode}) before "
                        f"printing /{pattern}/; output:\n{self.output_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"timed out after {timeout:g}s waiting for /{pattern}/"
                        f" from {self.args!r}; output:\n{self.output_tail()}")
                self._cond.wait(left)

    def output_tail(self, n=40):
        return "\n".join(self.lines[-n:])

    def wait_output(self, timeout=None):
        """Wait for the process to exit and its output to be drained;
        return (returncode, output)."""
        rc = self.wait(timeout)
        self._drainer.join(5)
        return rc, self.output()

    def stop(self, timeout=5.0):
        """SIGTERM the process group, SIGKILL it after ``timeout``."""
        kill_proc(self, timeout)
        return self.returncode


def kill_proc(proc, timeout=5.0):
    """Stop a process started in its own session: SIGTERM its group, then
    SIGKILL after ``timeout`` seconds.  Only signals while the child is not
    yet reaped, so its PID cannot have been reused."""
    kill_procs([proc], timeout)


def kill_procs(procs, timeout=5.0):
    """kill_proc for several processes at once: every group gets its
    SIGTERM first, so their graceful exits overlap instead of adding up (a
    lab's teardown stopped a dozen processes one after the other), and
    only one (a second SIGTERM reached a Python process finishing its
    exit, after its handlers were reset: killed).  SIGKILL for the groups
    still there ``timeout`` seconds later."""
    procs = list(procs)
    try:
        for proc in procs:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in procs:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
    finally:
        for proc in procs:
            with _LIVE_LOCK:
                _LIVE_PROCS.discard(proc)
            drainer = getattr(proc, "_drainer", None)
            if drainer is not None:
                drainer.join(2)


def _signal_group(pid, sig):
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def spawn(ns, cmd, ready=None, ready_timeout=10.0, env=None, cwd=None):
    """Start ``cmd`` in netns ``ns`` as a tracked :class:`Proc`.

    ``ready``: a regex; when given, wait (deadline ``ready_timeout``) for a
    matching output line and stop the process if it does not come.
    """
    proc = Proc(ns_cmd(ns, cmd), env=env, cwd=cwd)
    if ready is not None:
        try:
            proc.wait_for_line(ready, ready_timeout)
        except BaseException:
            kill_proc(proc)
            raise
    return proc


def sysctls(ns, values):
    """Write several sysctls inside netns ``ns`` with one nsenter.

    ``values`` maps dotted keys (``net.ipv4.conf.eth0.rp_filter``; so no
    dots in interface names) or /proc/sys-relative paths
    (``net/ipv4/conf/eth0/rp_filter``) to values.
    """
    if not values:
        return
    args = []
    for key, value in values.items():
        path = key if "/" in key else key.replace(".", "/")
        args += ["/proc/sys/" + path.lstrip("/"), str(value)]
    sh = ('rc=0; while [ $# -gt 1 ]; do '
          'printf "%s\\n" "$2" > "$1" || { echo "sysctl $1=$2 failed" >&2; '
          'rc=1; }; shift 2; done; exit $rc')
    run(ns, ["sh", "-c", sh, "sysctl"] + args)


def sysctl(ns, key, value):
    """Write one sysctl (``net.ipv4.conf.all.rp_filter``) inside ``ns``."""
    sysctls(ns, {key: value})


def read_sysctl(ns, key):
    path = "/proc/sys/" + (key if "/" in key else key.replace(".", "/"))
    return run(ns, ["cat", path]).stdout.strip()


def ethtool_offloads_off(ns, ifname):
    """tx/tso/gso/gro off: native XDP on veth loses CHECKSUM_PARTIAL and
    generic XDP sees GSO super-packets otherwise."""
    run(ns, ["ethtool", "-K", ifname, "tx", "off", "tso", "off", "gso",
             "off", "gro", "off"])


# --------------------------------------------------------------------------
# Tiny BPF helpers (compiled on demand with clang, cached in /tmp)

XDP_PASS_C = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }
char _license[] SEC("license") = "GPL";
"""

XDP_TX_C = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int xdp_tx(struct xdp_md *ctx) { return XDP_TX; }
char _license[] SEC("license") = "GPL";
"""

_bpf_lock = threading.Lock()


def compile_bpf(source, name):
    """Compile BPF C ``source`` into an object cached by content hash under
    the temp dir; return its path."""
    import hashlib
    import tempfile

    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"dsr-functional-{name}-{digest}.o"
    with _bpf_lock:
        if out.exists():
            return out
        tmp_c = out.with_suffix(f".{os.getpid()}.c")
        tmp_o = out.with_suffix(f".{os.getpid()}.o")
        tmp_c.write_text(source)
        try:
            arch_inc = f"/usr/include/{os.uname().machine}-linux-gnu"
            subprocess.run(["clang", "-O2", "-g", "-Wall", "-target", "bpf",
                            f"-I{arch_inc}", "-c", str(tmp_c), "-o",
                            str(tmp_o)], check=True, capture_output=True,
                           text=True)
            os.replace(tmp_o, out)
        finally:
            for f in (tmp_c, tmp_o):
                try:
                    f.unlink()
                except FileNotFoundError:
                    pass
    return out


def attach_xdp(ns, ifname, obj, section="xdp", mode="xdpdrv"):
    """Attach the program in ``section`` of ``obj`` to ``ifname`` (native
    by default; mode xdpgeneric for generic) with iproute2."""
    run(ns, ["ip", "link", "set", "dev", ifname, mode, "obj", str(obj),
             "sec", section])


def detach_xdp(ns, ifname, mode="xdpdrv"):
    run(ns, ["ip", "link", "set", "dev", ifname, mode, "off"])


def attach_xdp_pass(ns, ifname):
    attach_xdp(ns, ifname, compile_bpf(XDP_PASS_C, "xdp_pass"))


# --------------------------------------------------------------------------
# Counters


def ipr(ns):
    """An IPRoute bound to netns ``ns`` (never creates the namespace).
    Close it (or use ``with``): an open socket keeps the netns alive."""
    if ns is None:
        return IPRoute()
    return IPRoute(netns=ns, flags=0)


_STAT_KEYS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes",
              "rx_errors", "tx_errors", "rx_dropped", "tx_dropped")


def link_stats(ns, ifname):
    """rx/tx packet, byte, error and drop counters of ``ifname`` in ``ns``."""
    with ipr(ns) as ip:
        links = ip.get_links(ifname=ifname)
        if not links:
            raise LookupError(f"no interface {ifname} in netns {ns}")
        stats = links[0].get("IFLA_STATS64")
        return {k: int(stats.get(k) or 0) for k in _STAT_KEYS}


NFT_TABLE = "dsrtest"


class NftCounter:
    """A named nftables counter in table ``netdev dsrtest`` of a namespace,
    fed by one rule on the ingress (or egress) hook of one interface."""

    def __init__(self, ns, name):
        self.ns = ns
        self.name = name

    def values(self):
        """(packets, bytes) counted so far."""
        out = run(self.ns, ["nft", "-j", "list", "counter", "netdev",
                            NFT_TABLE, self.name]).stdout
        for obj in json.loads(out).get("nftables", []):
            if "counter" in obj:
                return int(obj["counter"]["packets"]), int(
                    obj["counter"]["bytes"])
        raise LookupError(f"counter {self.name} not found in {self.ns}")

    def packets(self):
        return self.values()[0]

    def bytes(self):
        return self.values()[1]

    def reset(self):
        run(self.ns, ["nft", "reset", "counter", "netdev", NFT_TABLE,
                      self.name])


_nft_seq = 0
_nft_lock = threading.Lock()


def nft_counter_add(ns, ifname, saddr=None, daddr=None, expr=None,
                    hook="ingress", name=None):
    """Count packets on ``hook`` (ingress/egress) of ``ifname`` in ``ns``.

    Match on source address ``saddr`` and/or destination ``daddr`` (v4 or
    v6, address or prefix), or on a raw nft expression ``expr`` (e.g.
    ``"meta l4proto gre"``); nothing at all counts every packet.  Returns an
    :class:`NftCounter`.
    """
    global _nft_seq
    with _nft_lock:
        _nft_seq += 1
        seq = _nft_seq
    name = name or f"c{seq}"
    chain = f"{hook[:2]}_{ifname}".replace("-", "_")
    match = []
    for field, addr in (("saddr", saddr), ("daddr", daddr)):
        if addr is None:
            continue
        fam = "ip6" if ipaddress.ip_network(addr, strict=False).version == 6 \
            else "ip"
        match.append(f"{fam} {field} {addr}")
    if expr:
        match.append(expr)
    script = "\n".join([
        f"add table netdev {NFT_TABLE}",
        f"add chain netdev {NFT_TABLE} {chain} {{ type filter hook {hook} "
        f'device "{ifname}" priority 0; policy accept; }}',
        f"add counter netdev {NFT_TABLE} {name}",
        f"add rule netdev {NFT_TABLE} {chain} {' '.join(match)} "
        f'counter name "{name}"',
    ]) + "\n"
    run(ns, ["nft", "-f", "-"], input=script)
    return NftCounter(ns, name)


# --------------------------------------------------------------------------
# Namespaces: ownership, cleanup, stale sweep

_LIVE_NAMESPACES = set()
_LIVE_TOPOLOGIES = set()


def list_namespaces(prefix=""):
    try:
        names = os.listdir(NETNS_RUN_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def netns_exists(ns):
    return os.path.exists(netns_path(ns))


def create_namespace(ns):
    pr_netns.create(ns)
    _LIVE_NAMESPACES.add(ns)


def namespace_pids(ns):
    """PIDs of processes whose network namespace is ``ns``."""
    try:
        ino = os.stat(netns_path(ns)).st_ino
    except FileNotFoundError:
        return []
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.stat(f"/proc/{d}/ns/net").st_ino == ino:
                pids.append(int(d))
        except OSError:
            continue
    return pids


def remove_namespace(ns, kill_strays=True):
    """Remove netns ``ns`` (and so its veths).  With ``kill_strays``, any
    process still living in it is killed first (SIGTERM, then SIGKILL), so
    the namespace really goes away."""
    if kill_strays:
        _kill_pids(namespace_pids(ns))
    try:
        pr_netns.remove(ns)
    except FileNotFoundError:
        pass
    except OSError:
        if netns_exists(ns):
            subprocess.run(["ip", "netns", "delete", ns], check=False,
                           capture_output=True)
    _LIVE_NAMESPACES.discard(ns)


def _kill_pids(pids, timeout=3.0):
    pids = [p for p in pids if p != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = [p for p in pids if _pid_alive(p)]
            if not pids:
                return
            time.sleep(0.02)


def _pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def new_prefix():
    """A per-run unique prefix ``dsr<4 hex>-`` not used by any namespace,
    recorded under OWNER_DIR with our PID (see sweep_stale)."""
    os.makedirs(OWNER_DIR, exist_ok=True)
    for _ in range(1000):
        prefix = f"dsr{secrets.token_hex(2)}-"
        try:
            fd = os.open(os.path.join(OWNER_DIR, prefix),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        if list_namespaces(prefix):
            os.close(fd)
            continue
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        return prefix
    raise RuntimeError("could not find a free namespace prefix")


def release_prefix(prefix):
    try:
        os.unlink(os.path.join(OWNER_DIR, prefix))
    except FileNotFoundError:
        pass


def sweep_stale():
    """Remove namespaces (and kill their processes) left by earlier runs
    whose owning process is dead.  Namespaces of live runs are untouched.
    Returns the names removed."""
    removed = []
    try:
        owners = os.listdir(OWNER_DIR)
    except FileNotFoundError:
        owners = []
    for prefix in owners:
        try:
            with open(os.path.join(OWNER_DIR, prefix)) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            continue
        if pid and _pid_alive(pid):
            continue
        for ns in list_namespaces(prefix):
            remove_namespace(ns)
            removed.append(ns)
        release_prefix(prefix)
    return removed


def _atexit_cleanup():
    for topo in list(_LIVE_TOPOLOGIES):
        try:
            topo.close()
        except Exception:  # noqa: BLE001
            pass
    with _LIVE_LOCK:
        procs = list(_LIVE_PROCS)
    for p in procs:
        try:
            kill_proc(p, 2.0)
        except Exception:  # noqa: BLE001
            pass
    for ns in list(_LIVE_NAMESPACES):
        try:
            remove_namespace(ns)
        except Exception:  # noqa: BLE001
            pass


atexit.register(_atexit_cleanup)


# --------------------------------------------------------------------------
# The DSR topology


@dataclass
class Host:
    """One namespace attached to the router by one veth."""

    name: str            # logical name: client, se1, m2
    role: str            # client | se | member
    index: int           # i of se<i> / j of m<j>; 0 for the client
    ns: str              # namespace name (with the run prefix)
    ipv4: str            # address on eth0
    ipv6: str
    gw4: str             # router's address on this link
    gw6: str
    net4: str            # the link's subnets
    net6: str
    mtu: int
    ifname: str = "eth0"         # host side of the veth
    router_ifname: str = ""      # router side: r-<name>
    prefix4: int = 24
    prefix6: int = 64

    @property
    def netns_path(self):
        return netns_path(self.ns)

    def addr(self, family):
        """The host's address of ``family`` (4 or 6)."""
        return self.ipv4 if family == 4 else self.ipv6

    def gw(self, family):
        return self.gw4 if family == 4 else self.gw6


@dataclass
class Router:
    name: str
    ns: str
    ifnames: dict  # host name -> router-side ifname

    @property
    def netns_path(self):
        return netns_path(self.ns)


def _family(addr):
    return ipaddress.ip_network(addr, strict=False).version


def _host_net(addr):
    """'192.0.2.10' -> '192.0.2.10/32'; networks pass through."""
    net = ipaddress.ip_network(addr, strict=False)
    return str(net)


def default_routes(ipr, host, timeout):
    """The host's IPv4 and IPv6 default routes via the router.  The kernel
    sets a link's operstate UP before addrconf installs its IPv6 prefix
    route (one linkwatch event, in that order): for a moment the gateway
    is unreachable (seen once under load: EHOSTUNREACH).  Retried until
    ``timeout``, then the last error is named."""
    for dst, gateway in (("0.0.0.0/0", host.gw4), ("::/0", host.gw6)):
        wait_for(lambda: ipr.route("replace", dst=dst,
                                   gateway=gateway) is not None,
                 timeout, f"a default route via {gateway} in {host.ns}")


class Topology:
    """client -- router -- se1..seN, m1..mK, dual-stack, in fresh namespaces.

    Use as a context manager (or call build()/close()).  close() always runs
    on exit: it stops every process started through this topology, closes
    its netlink sockets and removes its namespaces.

    ``router_xdp_pass`` (default True) attaches an XDP_PASS program to the
    router side of every SE link so that XDP_TX on the SE's eth0 works
    (veth needs NAPI on the receiving peer); pass False to attach your own.

    Attributes: ``prefix``, ``router`` (Router), ``client``, ``ses``,
    ``members`` (Host lists), ``hosts`` (name -> Host, without the router),
    ``namespaces`` (every namespace name made).
    """

    def __init__(self, n_se=1, n_members=2, mtu=DEFAULT_LINK_MTU,
                 client_mtu=CLIENT_MTU, offloads_off=True, link_timeout=10.0,
                 router_xdp_pass=True):
        if not 1 <= n_se <= 250 or not 0 <= n_members <= 250:
            raise ValueError("1..250 SEs and 0..250 members")
        self.n_se = n_se
        self.n_members = n_members
        self.mtu = mtu
        self.client_mtu = client_mtu
        self.offloads_off = offloads_off
        self.link_timeout = link_timeout
        self.router_xdp_pass = router_xdp_pass
        self.prefix = None
        self.router = None
        self.client = None
        self.ses = []
        self.members = []
        self.hosts = {}
        self.namespaces = []
        self.procs = []
        self.client_sources4 = []
        self.client_sources6 = []
        self._ipr = {}
        self._closed = False

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self):
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self.close()
        except Exception as cleanup_exc:  # noqa: BLE001
            if exc_type is None:
                raise
            # Don't mask the test's own failure with a cleanup error.
            print(f"netns: {cleanup_exc}", file=sys.stderr)
        return False

    def build(self):
        _LIVE_TOPOLOGIES.add(self)
        self.prefix = new_prefix()
        p = self.prefix
        self.router = Router("router", p + "router", {})
        self.client = Host(
            name="client", role="client", index=0, ns=p + "client",
            ipv4="203.0.113.2", ipv6="2001:db8:c::2",
            gw4="203.0.113.1", gw6="2001:db8:c::1",
            net4="203.0.113.0/24", net6="2001:db8:c::/64",
            mtu=self.client_mtu)
        for i in range(1, self.n_se + 1):
            self.ses.append(Host(
                name=f"se{i}", role="se", index=i, ns=f"{p}se{i}",
                ipv4=f"198.18.{i}.2", ipv6=f"2001:db8:1:{i:x}::2",
                gw4=f"198.18.{i}.1", gw6=f"2001:db8:1:{i:x}::1",
                net4=f"198.18.{i}.0/24", net6=f"2001:db8:1:{i:x}::/64",
                mtu=self.mtu))
        for j in range(1, self.n_members + 1):
            self.members.append(Host(
                name=f"m{j}", role="member", index=j, ns=f"{p}m{j}",
                ipv4=f"198.19.{j}.2", ipv6=f"2001:db8:2:{j:x}::2",
                gw4=f"198.19.{j}.1", gw6=f"2001:db8:2:{j:x}::1",
                net4=f"198.19.{j}.0/24", net6=f"2001:db8:2:{j:x}::/64",
                mtu=self.mtu))
        for h in [self.client] + self.ses + self.members:
            h.router_ifname = f"r-{h.name}"
            self.router.ifnames[h.name] = h.router_ifname
            self.hosts[h.name] = h

        # Namespaces, with defaults set before any link appears.
        for ns in [self.router.ns] + [h.ns for h in self.hosts.values()]:
            create_namespace(ns)
            self.namespaces.append(ns)
        # The kernel defaults, not the host's: a new namespace copies
        # conf/all and conf/default from the host's
        # (net.core.devconf_inherit_init_net = 0), and a host that is a
        # DSR member itself (arp_ignore 1, arp_announce 2) would hand its
        # setup to every member the tests set up and tear down.
        base = {
            "net.ipv4.conf.all.rp_filter": 0,
            "net.ipv4.conf.default.rp_filter": 0,
            "net.ipv4.conf.all.arp_ignore": 0,
            "net.ipv4.conf.default.arp_ignore": 0,
            "net.ipv4.conf.all.arp_announce": 0,
            "net.ipv4.conf.default.arp_announce": 0,
            "net.ipv6.conf.all.accept_dad": 0,
            "net.ipv6.conf.default.accept_dad": 0,
            "net.ipv6.conf.all.accept_ra": 0,
            "net.ipv6.conf.default.accept_ra": 0,
        }
        sysctls(self.router.ns, dict(base, **{
            "net.ipv4.ip_forward": 1,
            "net.ipv4.conf.all.forwarding": 1,
            "net.ipv4.conf.default.forwarding": 1,
            "net.ipv6.conf.all.forwarding": 1,
            "net.ipv6.conf.default.forwarding": 1,
            "net.ipv4.fib_multipath_hash_policy": 1,
            "net.ipv6.fib_multipath_hash_policy": 1,
        }))
        for h in self.hosts.values():
            sysctls(h.ns, base)

        r = self._ipr_for(self.router.ns)
        r.link("set", index=r.link_lookup(ifname="lo")[0], state="up")
        for h in self.hosts.values():
            self._build_link(r, h)

        # Per-interface sysctls now that the interfaces exist.
        sysctls(self.router.ns, {
            f"net.ipv4.conf.{h.router_ifname}.rp_filter": 0
            for h in self.hosts.values()})
        for h in self.hosts.values():
            sysctls(h.ns, {f"net.ipv4.conf.{h.ifname}.rp_filter": 0,
                           "net.ipv4.conf.lo.rp_filter": 0})

        if self.offloads_off:
            for h in self.hosts.values():
                ethtool_offloads_off(h.ns, h.ifname)
                ethtool_offloads_off(self.router.ns, h.router_ifname)
        # XDP_TX / XDP_REDIRECT out of a veth only works when the peer runs
        # NAPI: an XDP program on the peer (or GRO, which is off).  Without
        # this, frames an SE's XDP program transmits are dropped silently
        # (tx_dropped on the SE's eth0).
        if self.router_xdp_pass:
            for h in self.ses:
                attach_xdp_pass(self.router.ns, h.router_ifname)

        # Links up (carrier on both ends), then default routes.
        wait_for(lambda: all(self.link_up(h) for h in self.hosts.values()),
                 self.link_timeout, "every link to be up")
        for h in self.hosts.values():
            default_routes(self._ipr_for(h.ns), h, self.link_timeout)
        # Extra client source ranges (add_client_sources) route to the client.
        r.route("replace", dst=CLIENT_SRC4_NET, gateway=self.client.ipv4)
        r.route("replace", dst=CLIENT_SRC6_NET, gateway=self.client.ipv6)
        return self

    def _build_link(self, r, h):
        r.link("add", ifname=h.router_ifname, kind="veth",
               peer={"ifname": h.ifname, "net_ns_fd": h.ns})
        ri = r.link_lookup(ifname=h.router_ifname)[0]
        hi = self._ipr_for(h.ns)
        hidx = hi.link_lookup(ifname=h.ifname)[0]
        r.link("set", index=ri, mtu=h.mtu)
        hi.link("set", index=hidx, mtu=h.mtu)
        r.addr("add", index=ri, address=h.gw4, prefixlen=h.prefix4)
        r.addr("add", index=ri, address=h.gw6, prefixlen=h.prefix6,
               flags=IFA_F_NODAD)
        hi.addr("add", index=hidx, address=h.ipv4, prefixlen=h.prefix4)
        hi.addr("add", index=hidx, address=h.ipv6, prefixlen=h.prefix6,
                flags=IFA_F_NODAD)
        hi.link("set", index=hi.link_lookup(ifname="lo")[0], state="up")
        r.link("set", index=ri, state="up")
        hi.link("set", index=hidx, state="up")

    def close(self):
        """Stop processes, close sockets, remove namespaces.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        errors = []
        try:
            kill_procs(reversed(self.procs))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        for ip in self._ipr.values():
            try:
                ip.close()
            except Exception:  # noqa: BLE001
                pass
        self._ipr.clear()
        for ns in reversed(self.namespaces):
            try:
                remove_namespace(ns)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        if self.prefix:
            leftovers = list_namespaces(self.prefix)
            for ns in leftovers:
                try:
                    remove_namespace(ns)
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)
            release_prefix(self.prefix)
        _LIVE_TOPOLOGIES.discard(self)
        if errors:
            raise RuntimeError(f"topology cleanup errors: {errors!r}")

    # -- lookup ------------------------------------------------------------

    def host(self, name):
        """Host (or the Router for 'router') by logical name; a Host passes
        through."""
        if isinstance(name, (Host, Router)):
            return name
        if name == "router":
            return self.router
        return self.hosts[name]

    def ns(self, name):
        """Namespace name of a logical host name."""
        return self.host(name).ns

    def _ipr_for(self, ns):
        ip = self._ipr.get(ns)
        if ip is None:
            ip = self._ipr[ns] = ipr(ns)
        return ip

    def ipr(self, name):
        """A cached IPRoute in the host's namespace (closed by close())."""
        return self._ipr_for(self.ns(name))

    # -- commands ----------------------------------------------------------

    def run(self, name, cmd, check=True, timeout=60, input=None, env=None):
        return run(self.ns(name), cmd, check=check, timeout=timeout,
                   input=input, env=env)

    def spawn(self, name, cmd, ready=None, ready_timeout=10.0, env=None,
              cwd=None):
        proc = spawn(self.ns(name), cmd, ready=ready,
                     ready_timeout=ready_timeout, env=env, cwd=cwd)
        self.procs.append(proc)
        return proc

    def sysctl(self, name, key, value):
        sysctl(self.ns(name), key, value)

    def sysctls(self, name, values):
        sysctls(self.ns(name), values)

    # -- links -------------------------------------------------------------

    def link_up(self, name, ifname=None):
        """True when the host's link is operationally up on both ends."""
        h = self.host(name)
        ends = [(h.ns, ifname or h.ifname)]
        if isinstance(h, Host) and ifname is None:
            ends.append((self.router.ns, h.router_ifname))
        for ns, ifn in ends:
            links = self._ipr_for(ns).get_links(ifname=ifn)
            if not links or links[0].get("IFLA_OPERSTATE") != "UP":
                return False
        return True

    def wait_link_up(self, name, timeout=10.0):
        wait_for(lambda: self.link_up(name), timeout,
                 f"link of {name} to be up")

    def link_stats(self, name, ifname=None):
        h = self.host(name)
        return link_stats(h.ns, ifname or h.ifname)

    def set_link(self, name, up, router_side=True):
        """Bring a host's link down/up (router side by default: like pulling
        the cable at the switch)."""
        h = self.host(name)
        if router_side:
            ip, ifn = self._ipr_for(self.router.ns), h.router_ifname
        else:
            ip, ifn = self._ipr_for(h.ns), h.ifname
        ip.link("set", index=ip.link_lookup(ifname=ifn)[0],
                state="up" if up else "down")

    # -- routing -----------------------------------------------------------

    def route_vip(self, vip, via):
        """Route ``vip`` (address -> /32 or /128, or a prefix) on the router
        via one host or ECMP across several (names or Hosts), replacing any
        previous route."""
        if isinstance(via, (str, Host)):
            via = [via]
        hosts = [self.host(v) for v in via]
        if not hosts:
            raise ValueError("route_vip needs at least one next hop")
        fam = _family(vip)
        dst = _host_net(vip)
        r = self._ipr_for(self.router.ns)
        if len(hosts) == 1:
            r.route("replace", dst=dst, gateway=hosts[0].addr(fam))
        else:
            r.route("replace", dst=dst,
                    multipath=[{"gateway": h.addr(fam)} for h in hosts])

    def unroute_vip(self, vip):
        r = self._ipr_for(self.router.ns)
        try:
            r.route("del", dst=_host_net(vip))
        except Exception as exc:  # noqa: BLE001
            if "No such process" not in str(exc) and "ESRCH" not in str(exc):
                raise

    def router_routes(self, family=4):
        return self.run("router", ["ip", f"-{family}", "route"]).stdout

    # -- members and clients -----------------------------------------------

    def add_lo_addresses(self, name, addrs):
        """Add addresses to ``lo`` in a host (v4 as /32, v6 as /128 nodad)."""
        ip = self.ipr(name)
        lo = ip.link_lookup(ifname="lo")[0]
        for a in addrs:
            net = ipaddress.ip_network(a, strict=False)
            if net.version == 4:
                ip.addr("add", index=lo, address=str(net.network_address),
                        prefixlen=32)
            else:
                ip.addr("add", index=lo, address=str(net.network_address),
                        prefixlen=128, flags=IFA_F_NODAD)

    def setup_member(self, name, vips=(VIP4, VIP6)):
        """VIPs on the member's lo; arp_ignore=1, arp_announce=2, rp_filter
        0: the member accepts VIP traffic and replies from the VIP straight
        to the client without answering ARP for it."""
        h = self.host(name)
        self.add_lo_addresses(name, vips)
        vals = {}
        for conf in ("all", h.ifname):
            vals[f"net.ipv4.conf.{conf}.arp_ignore"] = 1
            vals[f"net.ipv4.conf.{conf}.arp_announce"] = 2
        for conf in ("all", "default", "lo", h.ifname):
            vals[f"net.ipv4.conf.{conf}.rp_filter"] = 0
        self.sysctls(name, vals)

    def add_client_sources(self, count):
        """Add ``count`` extra source addresses on the client's lo, from
        198.51.100.0/24 and 2001:db8:d::/64 (routed to the client by the
        router).  Returns (list_v4, list_v6) of the new addresses."""
        start = len(self.client_sources4) + 1
        if start + count - 1 > 254:
            raise ValueError("at most 254 extra client sources")
        v4 = [f"198.51.100.{k}" for k in range(start, start + count)]
        v6 = [f"2001:db8:d::{k:x}" for k in range(start, start + count)]
        self.add_lo_addresses("client", v4 + v6)
        self.client_sources4 += v4
        self.client_sources6 += v6
        return v4, v6

    # -- test servers and clients (tools/lab/servers) ---------------

    def start_http_server(self, name, binds=(VIP4, VIP6), port=80,
                          timeout=10.0):
        """HTTP server in host ``name`` on every address of ``binds``;
        GET / answers ``member=<name>``.  Returns the Proc once READY."""
        cmd = SCRIPT_PYTHON + [SERVERS_DIR / "http_server.py", "--name", name,
                               "--port", port]
        for b in binds:
            cmd += ["--bind", b]
        return self.spawn(name, cmd, ready=r"^READY", ready_timeout=timeout)

    def start_udp_echo(self, name, binds=(VIP4, VIP6), port=5353,
                       timeout=10.0):
        """UDP echo in host ``name``: answers ``member=<name> <payload>``."""
        cmd = SCRIPT_PYTHON + [SERVERS_DIR / "udp_echo.py", "--name", name,
                               "--port", port]
        for b in binds:
            cmd += ["--bind", b]
        return self.spawn(name, cmd, ready=r"^READY", ready_timeout=timeout)

    def _client_cmd(self, *args):
        return (SCRIPT_PYTHON + [SERVERS_DIR / "client.py"]
                + [str(a) for a in args if a is not None])

    @staticmethod
    def _opt(flag, value):
        return [] if value is None else [flag, value]

    def http_get(self, vip, port=80, source_port=None, path="/",
                 source=None, timeout=10.0, host="client"):
        """GET http://vip:port/path from ``host`` (this process, with a
        socket of that host's namespace: socket_in); returns the body
        (str).  Raises CommandError on a failed request, as client.py's
        ``get`` does."""
        ns = self.ns(host)
        try:
            return client.http_get(
                vip, port, source_port, path, timeout, source,
                socket_factory=functools.partial(socket_in, ns)).strip()
        except (OSError, RuntimeError, http.client.HTTPException) as exc:
            raise CommandError(
                1, ["http_get", host, f"{vip}:{port}{path}"], "",
                f"client error: {exc!r}") from None

    def http_upload(self, vip, port=80, nbytes=4 << 20, source_port=None,
                    source=None, timeout=30.0, host="client"):
        """POST ``nbytes`` pseudo-random bytes to /upload from the client;
        returns ``(response_text, sha256_hex_sent)``."""
        args = (["upload", vip, port, nbytes, "--timeout", timeout]
                + self._opt("--source-port", source_port)
                + self._opt("--source", source))
        out = self.run(host, self._client_cmd(*args),
                       timeout=timeout + 10).stdout.strip().splitlines()
        sent = json.loads(out[-1])
        return sent["response"], sent["sha256"]

    def udp_probe_cmd(self, vip, port, duration, interval=0.01,
                      source_port=None, source=None, reply_timeout=0.5):
        return self._client_cmd(
            "udp-probe", vip, port, "--duration", duration,
            "--interval", interval, "--reply-timeout", reply_timeout,
            *self._opt("--source-port", source_port),
            *self._opt("--source", source))

    def udp_probe(self, vip, port, duration, interval=0.01,
                  source_port=None, source=None, host="client"):
        """Send a UDP probe every ``interval`` s for ``duration`` s; return
        the JSON summary (see servers/client.py)."""
        cmd = self.udp_probe_cmd(vip, port, duration, interval, source_port,
                                 source)
        out = self.run(host, cmd, timeout=duration + 30).stdout
        return json.loads(out.strip().splitlines()[-1])

    def start_udp_probe(self, vip, port, duration, interval=0.01,
                        source_port=None, source=None, host="client"):
        """Background prober (e.g. while failing an SE over).  Get the
        summary with :func:`probe_result`."""
        cmd = self.udp_probe_cmd(vip, port, duration, interval, source_port,
                                 source)
        return self.spawn(host, cmd, ready=r"^STARTED")

    # -- counters ----------------------------------------------------------

    def nft_counter(self, name, ifname=None, saddr=None, daddr=None,
                    expr=None, hook="ingress"):
        """nftables counter on ``hook`` of ``ifname`` (default: the host's
        eth0; for the router, give the r-<host> name)."""
        h = self.host(name)
        if ifname is None:
            if isinstance(h, Router):
                raise ValueError("give the router interface name")
            ifname = h.ifname
        return nft_counter_add(h.ns, ifname, saddr=saddr, daddr=daddr,
                               expr=expr, hook=hook)


def probe_result(proc, timeout=60.0):
    """Wait for a start_udp_probe() Proc and return its JSON summary."""
    rc, out = proc.wait_output(timeout)
    kill_proc(proc)
    if rc != 0:
        raise RuntimeError(f"udp prober failed ({rc}):\n{out[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])
