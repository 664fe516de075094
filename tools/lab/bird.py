"""A BIRD 2 test router (or BFD responder) inside a topology namespace.

    bird = BirdRouter(topo, local_asn=65000)
    bird.add_ses(topo.ses, peer_asn=65001)     # one v4 + one v6 BGP protocol
    bird.start()                                # per SE, ECMP into the kernel
    bird.wait_established(timeout=10)
    bird.kernel_nexthops(VIP4)                  # -> ['198.18.1.2', ...]
    bird.stop()                                 # also done by topo.close()

BIRD runs in the foreground (``bird -f -c CONF -s CTL -P PID``) as a process
started through ``topo.spawn``, so it is tracked and stopped by PID (SIGTERM,
then SIGKILL) whatever happens to the test; its files live in a per-run
directory removed by :meth:`stop`.

What the configuration does (see FIELD-NOTES.md, section BGP):
- ``protocol kernel`` per family exports BGP routes with ``merge paths yes
  limit 16``: equal BGP paths from several SEs become one multipath route
  in the kernel (ECMP).  The router's fib_multipath_hash_policy=1 is set by
  the topology.
- every BGP protocol: ``error wait time 1, 10; connect retry time 2;`` so a
  restarted peer is accepted again at once (the defaults wait 60-300 s).
- optional BFD (``bfd=True``): ``protocol bfd`` with 100 ms x 3.

:class:`BfdResponder` is a BFD-only BIRD for an SE (ExaBGP has no BFD): the
router's BGP session to the SE then goes down when the SE's BFD stops
answering.
"""

import ipaddress
import os
import shutil
import socket
import tempfile
import time

from tools.lab import netns

BIRD = shutil.which("bird") or "/usr/sbin/bird"
BIRDC = shutil.which("birdc") or "/usr/sbin/birdc"

RTPROT_BIRD = 12


def _family(addr):
    return ipaddress.ip_address(addr).version


class BirdError(RuntimeError):
    pass


class _BirdProcess:
    """Common part: a BIRD process with its own config, socket, pid file
    and log in a private directory."""

    def __init__(self, topo, host, router_id, tag):
        self.topo = topo
        self.host = host               # logical name of the namespace
        self.ns = topo.ns(host)
        self.router_id = router_id
        self.dir = tempfile.mkdtemp(prefix=f"bird-{topo.prefix}{tag}-")
        self.conf_path = os.path.join(self.dir, "bird.conf")
        self.ctl_path = os.path.join(self.dir, "bird.ctl")
        self.pid_path = os.path.join(self.dir, "bird.pid")
        self.log_path = os.path.join(self.dir, "bird.log")
        self.proc = None

    # -- config --------------------------------------------------------

    def render(self):
        raise NotImplementedError

    def _header(self):
        return [
            f'log "{self.log_path}" all;',
            f"router id {self.router_id};",
            "timeformat protocol iso long ms;",
            "protocol device { scan time 10; }",
        ]

    # -- lifecycle -----------------------------------------------------

    def start(self, timeout=10.0):
        """Write the config, start BIRD, wait until it answers.  On
        failure everything is stopped and removed again."""
        try:
            with open(self.conf_path, "w") as f:
                f.write(self.render())
            check = netns.run(None, [BIRD, "-p", "-c", self.conf_path],
                              check=False)
            if check.returncode != 0:
                raise BirdError(f"bad BIRD config:\n{check.stderr}\n"
                                f"{self.render()}")
            self.proc = self.topo.spawn(
                self.host, [BIRD, "-f", "-c", self.conf_path, "-s",
                            self.ctl_path, "-P", self.pid_path])
            netns.wait_for(self._ready, timeout,
                           f"BIRD in {self.host} to start")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise BirdError(f"BIRD exited ({self.proc.returncode}):\n"
                            f"{self.proc.output_tail()}\n{self.log_tail()}")
        return (os.path.exists(self.pid_path)
                and "Daemon is up" in self.birdc("show status", check=False))

    @property
    def pid(self):
        with open(self.pid_path) as f:
            return int(f.read().strip())

    def reconfigure(self):
        """Write the current config and have BIRD load it."""
        with open(self.conf_path, "w") as f:
            f.write(self.render())
        out = self.birdc("configure")
        if "Reconfigured" not in out and "Reconfiguration in progress" \
                not in out:
            raise BirdError(f"birdc configure: {out}")

    def stop(self, timeout=5.0):
        """Stop BIRD by its PID (SIGTERM, then SIGKILL) and remove its
        files.  Idempotent."""
        try:
            if self.proc is not None:
                netns.kill_proc(self.proc, timeout)
                if self.proc in self.topo.procs:
                    self.topo.procs.remove(self.proc)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n=40):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    # -- queries -------------------------------------------------------

    def birdc(self, command, check=True, timeout=10.0):
        """Run one birdc command (a string) against this BIRD; returns the
        output text.  The control socket is a file, so birdc needs no
        namespace."""
        out = self.ctl(command, timeout=timeout)
        if check and out.startswith("ERROR"):
            raise BirdError(f"birdc {command}: {out}")
        return out

    def ctl(self, command, timeout=10.0):
        """Talk to BIRD's control socket directly (faster than spawning
        birdc: ~0.3 ms instead of ~5 ms, which matters when polling)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(self.ctl_path)
            buf = b""
            # Greeting: "0001 BIRD 2.0.12 ready."
            while b"\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    return "ERROR: connection closed"
                buf += chunk
            s.sendall(command.encode() + b"\n")
            buf = b""
            lines = []
            while True:
                while b"\n" not in buf:
                    chunk = s.recv(65536)
                    if not chunk:
                        return "\n".join(lines)
                    buf += chunk
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                # Reply codes: "dddd-" continues, "dddd " ends; " " alone
                # continues the previous code.  0xxx ok, 8xxx/9xxx errors.
                if len(text) >= 5 and text[:4].isdigit():
                    code, sep, rest = text[:4], text[4], text[5:]
                    if code[0] in "89":
                        lines.append(f"ERROR {code} {rest}")
                    else:
                        lines.append(rest)
                    if sep == " ":
                        return "\n".join(lines)
                else:
                    lines.append(text[1:] if text.startswith(" ") else text)
        except OSError as exc:
            return f"ERROR: {exc}"
        finally:
            s.close()

    def protocols(self):
        """{protocol name: (state, info)} from ``show protocols``."""
        out = self.birdc("show protocols")
        result = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 4 or parts[0] == "Name":
                continue
            name, proto, _table, state = parts[:4]
            info = " ".join(parts[6:]) if len(parts) > 6 else ""
            result[name] = (proto, state, info)
        return result


class BirdRouter(_BirdProcess):
    """The test router: one BGP protocol per (SE, family), ECMP into the
    router namespace's kernel table."""

    def __init__(self, topo, local_asn=65000, router_id="192.0.2.254",
                 hold_time=None, bfd=False, bfd_interval_ms=100,
                 bfd_multiplier=3, passive=False):
        super().__init__(topo, "router", router_id, "router")
        self.local_asn = local_asn
        self.hold_time = hold_time
        self.bfd = bfd
        self.bfd_interval_ms = bfd_interval_ms
        self.bfd_multiplier = bfd_multiplier
        self.passive = passive
        self.neighbors = {}   # protocol name -> dict

    def add_neighbor(self, name, address, asn, local_address,
                     password=None, bfd=None, hold_time=None):
        fam = _family(address)
        self.neighbors[name] = dict(
            address=address, asn=asn, local_address=local_address,
            family=fam, password=password,
            bfd=self.bfd if bfd is None else bfd,
            hold_time=self.hold_time if hold_time is None else hold_time)
        return name

    def add_se(self, se, peer_asn, families=(4, 6), password=None,
               bfd=None, hold_time=None):
        """BGP protocols ``<se>_v4`` / ``<se>_v6`` for a topology SE."""
        se = self.topo.host(se)
        names = []
        for fam in families:
            names.append(self.add_neighbor(
                f"{se.name}_v{fam}", se.addr(fam), peer_asn, se.gw(fam),
                password=password, bfd=bfd, hold_time=hold_time))
        return names

    def add_ses(self, ses, peer_asn, **kwargs):
        names = []
        for se in ses:
            names += self.add_se(se, peer_asn, **kwargs)
        return names

    def render(self):
        lines = self._header()
        for fam, ch in ((4, "ipv4"), (6, "ipv6")):
            lines += [
                f"protocol kernel kernel{fam} {{",
                f"  {ch} {{ import none; export where source = RTS_BGP; }};",
                "  merge paths yes limit 16;",
                "}",
            ]
        if self.bfd or any(n["bfd"] for n in self.neighbors.values()):
            iv = self.bfd_interval_ms
            lines += [
                "protocol bfd {",
                '  interface "*" {',
                f"    min rx interval {iv} ms; min tx interval {iv} ms;",
                f"    idle tx interval {max(iv, 1000)} ms;",
                f"    multiplier {self.bfd_multiplier};",
                "  };",
                "}",
            ]
        for name, n in sorted(self.neighbors.items()):
            ch = "ipv4" if n["family"] == 4 else "ipv6"
            lines += [
                f"protocol bgp {name} {{",
                f"  local {n['local_address']} as {self.local_asn};",
                f"  neighbor {n['address']} as {n['asn']};",
                "  direct;",
                f"  {ch} {{ import all; export none; }};",
                "  error wait time 1, 10;",
                "  connect retry time 2;",
            ]
            if self.passive:
                lines.append("  passive on;")
            if n["hold_time"]:
                lines.append(f"  hold time {n['hold_time']};")
            if n["password"]:
                lines.append(f"  password \"{n['password']}\";")
            if n["bfd"]:
                lines.append("  bfd on;")
            lines.append("}")
        return "\n".join(lines) + "\n"

    # -- queries -------------------------------------------------------

    def established(self, names=None):
        """Names (of ``names``, default all neighbours) whose BGP session
        is Established."""
        protos = self.protocols()
        names = self.neighbors if names is None else names
        return {n for n in names
                if n in protos and protos[n][1] == "up"
                and "Established" in protos[n][2]}

    def wait_established(self, names=None, timeout=15.0):
        names = set(self.neighbors if names is None else names)

        def ok():
            return self.established(names) == names

        try:
            netns.wait_for(ok, timeout, f"BGP sessions {sorted(names)} "
                           "to be Established")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.birdc('show protocols')}\n"
                               f"{self.log_tail()}") from None

    def bird_routes(self, prefix):
        """``show route for <prefix> all`` as text ('' when none)."""
        net = str(ipaddress.ip_network(prefix, strict=False))
        out = self.birdc(f"show route {net} all", check=False)
        return "" if "Network not found" in out or out.startswith(
            "ERROR") else out

    def bird_nexthops(self, prefix):
        """Next hops (``via``) of the BGP routes BIRD holds for prefix."""
        hops = []
        for line in self.bird_routes(prefix).splitlines():
            words = line.split()
            if "via" in words:
                hops.append(words[words.index("via") + 1])
        return sorted(set(hops))

    def kernel_nexthops(self, prefix, ip=None):
        """Sorted gateways of the router kernel's route for ``prefix``
        (installed by BIRD): ``[]`` when absent, several for ECMP.  Pass an
        own IPRoute (``netns.ipr(ns)``) when polling from another thread."""
        return kernel_nexthops(ip or self.topo.ipr("router"), prefix)


def kernel_nexthops(ip, prefix):
    """Gateways of the BIRD-installed kernel route for ``prefix`` read with
    pyroute2 IPRoute ``ip``; sorted, [] when there is none."""
    net = ipaddress.ip_network(prefix, strict=False)
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    hops = []
    for r in ip.get_routes(family=family, table=254):
        if r.get("dst_len") != net.prefixlen:
            continue
        if r.get("RTA_DST") != str(net.network_address):
            continue
        if r.get("proto") != RTPROT_BIRD:
            continue
        gw = r.get("RTA_GATEWAY")
        if gw:
            hops.append(gw)
        for nh in r.get("RTA_MULTIPATH") or ():
            g = nh.get("RTA_GATEWAY")
            if g:
                hops.append(g)
    return sorted(str(ipaddress.ip_address(h)) for h in hops)


class BfdResponder(_BirdProcess):
    """BFD-only BIRD on an SE: answers the router's BFD sessions (ExaBGP
    has none), so the router drops the SE's BGP routes within
    interval x multiplier when the SE vanishes."""

    def __init__(self, topo, se, interval_ms=100, multiplier=3):
        se_host = topo.host(se)
        super().__init__(topo, se_host.name, se_host.ipv4, se_host.name)
        self.se = se_host
        self.interval_ms = interval_ms
        self.multiplier = multiplier

    def render(self):
        iv = self.interval_ms
        lines = self._header() + [
            "protocol bfd {",
            f'  interface "{self.se.ifname}" {{',
            f"    min rx interval {iv} ms; min tx interval {iv} ms;",
            f"    idle tx interval {max(iv, 1000)} ms;",
            f"    multiplier {self.multiplier};",
            "    passive on;",
            "  };",
            f"  neighbor {self.se.gw4} local {self.se.ipv4};",
            f"  neighbor {self.se.gw6} local {self.se.ipv6};",
            "}",
        ]
        return "\n".join(lines) + "\n"

    def sessions_up(self):
        """Number of BFD sessions in state Up."""
        out = self.birdc("show bfd sessions", check=False)
        return sum(1 for line in out.splitlines() if " Up " in f" {line} ")


def wait_route(bird, prefix, expected, timeout=10.0, ip=None,
               interval=0.001):
    """Poll the router kernel until ``kernel_nexthops(prefix)`` equals
    ``sorted(expected)``; return the seconds it took."""
    want = sorted(str(ipaddress.ip_address(e)) for e in expected)
    t0 = time.monotonic()
    last = []

    def ok():
        nonlocal last
        last = bird.kernel_nexthops(prefix, ip=ip)
        return last == want

    try:
        netns.wait_for(ok, timeout, f"{prefix} via {want} in the router "
                       "kernel", interval=interval)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; last seen {last}\n"
                           f"{bird.bird_routes(prefix)}\n"
                           f"{bird.birdc('show protocols', check=False)}"
                           ) from None
    return time.monotonic() - t0
