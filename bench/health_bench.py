#!/usr/bin/env python3
"""Benchmark the member health checker: 1,000 targets, delay 1 s.

Everything runs in a private network namespace (``dsrh<4 hex>-hc``, removed
on exit, also on failure or SIGTERM), so nothing touches the host's
network:

* a server process (forked into the namespace) accepts TCP, answers HTTP,
  keeps some UDP ports open and silent;
* the targets, all with delay 1 s and timeout 0.5 s (max_retries_down 3,
  max_retries 2), on 127.0.0.0/8 and ::1:
    400 TCP  (350 v4, 50 v6) that accept
    150 HTTP that answer 200
    100 PING to local addresses
     50 UDP-CONNECT to open silent ports (up), 50 to closed ports (down)
    100 TCP to closed ports (refused: down)
     50 TCP / PING to black-holed addresses (routed into a veth that drops
        every frame: no answer, every probe runs to its timeout)
    100 "flip" TCP targets: at t=3 s 60 of them start refusing (their
        listeners close) and 40 start timing out (an nft drop rule), at
        t=8 s both are undone;
* the checker runs ~12 s.

Figures: per-probe lateness against the schedule (start - scheduled; p50,
p99, max), the spread of the intervals between a target's probe starts,
skipped slots, probes/s, CPU, the time from a failure to ERROR (refusing
and timing-out members) and from the repair back to ONLINE, against the
bounds max_retries_down x delay + timeout and max_retries x delay + timeout,
and how long members dead from the start take to go ERROR (first probe).
The last line printed is one JSON object with every figure.
"""

import argparse
import json
import os
import secrets
import selectors
import shutil
import signal
import socket
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from _common import log  # noqa: E402
from _common import setns  # noqa: E402
from _common import sh  # noqa: E402
from amphora_agent.health import monitor as hm  # noqa: E402

DELAY = 1.0
TIMEOUT = 0.5
RISE = 2
FALL = 3
TARGET_LAG_P99 = 0.2
DETECT_BOUND = FALL * DELAY + TIMEOUT
RECOVER_BOUND = RISE * DELAY + TIMEOUT
FIRST_BOUND = DELAY + TIMEOUT
SLACK = 0.25  # notifier thread and callback latency allowed on the bounds

TCP_PORTS = range(20000, 20020)
HTTP_PORTS = range(21000, 21010)
FLIP_REFUSE_PORTS = range(22000, 22060)
FLIP_DROP_PORTS = range(23000, 23040)
REFUSED_PORTS = range(24000, 24100)
UDP_OPEN_PORTS = range(25000, 25050)
UDP_CLOSED_PORTS = range(26000, 26050)
BLACKHOLE_NET = '198.18.0'
BLACKHOLE_GW_NET = '198.18.1'


def pct(values, q):
    if not values:
        return None
    values = sorted(values)
    idx = min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))
    return values[idx]


# --------------------------------------------------------------------------
# The server process (single-threaded, selectors)

HTTP_RESPONSE = b'HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n'


def _listen(family, host, port):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, port))
    s.listen(4096)
    s.setblocking(False)
    return s


def server_main(cmd_fd, ack_fd):
    sel = selectors.DefaultSelector()
    flip = []

    def add(sock, kind):
        sel.register(sock, selectors.EVENT_READ, kind)
        return sock

    for port in TCP_PORTS:
        add(_listen(socket.AF_INET, '0.0.0.0', port), 'tcp')
        add(_listen(socket.AF_INET6, '::', port), 'tcp')
    for port in HTTP_PORTS:
        add(_listen(socket.AF_INET, '0.0.0.0', port), 'http')
    for port in FLIP_DROP_PORTS:
        add(_listen(socket.AF_INET, '0.0.0.0', port), 'tcp')

    def open_flip():
        for port in FLIP_REFUSE_PORTS:
            flip.append(add(_listen(socket.AF_INET, '0.0.0.0', port), 'tcp'))

    def close_flip():
        while flip:
            s = flip.pop()
            sel.unregister(s)
            s.close()
    open_flip()
    for port in UDP_OPEN_PORTS:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(('0.0.0.0', port))
        u.setblocking(False)
        add(u, 'udp')
    cmd = os.fdopen(cmd_fd, 'rb', buffering=0)
    os.set_blocking(cmd_fd, False)
    sel.register(cmd, selectors.EVENT_READ, 'cmd')
    os.write(ack_fd, b'R')
    while True:
        for key, _ in sel.select():
            kind, sock = key.data, key.fileobj
            if kind == 'cmd':
                data = cmd.read(64) or b'Q'
                for c in data:
                    if c == ord('F'):
                        close_flip()
                    elif c == ord('U'):
                        open_flip()
                    elif c == ord('Q'):
                        return
                    os.write(ack_fd, bytes([c]))
            elif kind in ('tcp', 'http'):
                while True:
                    try:
                        conn, _ = sock.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    if kind == 'tcp':
                        conn.close()
                    else:
                        conn.setblocking(False)
                        sel.register(conn, selectors.EVENT_READ, 'conn')
            elif kind == 'conn':
                try:
                    data = sock.recv(4096)
                    if data:
                        sock.send(HTTP_RESPONSE)
                except OSError:
                    pass
                sel.unregister(sock)
                sock.close()
            elif kind == 'udp':
                try:
                    while sock.recv(2048):
                        pass
                except OSError:
                    pass


class Server:
    def __init__(self):
        cmd_r, self.cmd_w = os.pipe()
        self.ack_r, ack_w = os.pipe()
        sys.stdout.flush()
        self.pid = os.fork()
        if self.pid == 0:
            code = 0
            try:
                os.close(self.cmd_w)
                os.close(self.ack_r)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                server_main(cmd_r, ack_w)
            except BaseException:  # noqa: BLE001
                import traceback
                traceback.print_exc()
                code = 1
            os._exit(code)
        os.close(cmd_r)
        os.close(ack_w)
        self._expect(b'R')

    def _expect(self, what, timeout=10.0):
        sel = selectors.DefaultSelector()
        sel.register(self.ack_r, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise RuntimeError('server did not answer')
        got = os.read(self.ack_r, 1)
        if got != what:
            raise RuntimeError(f'server answered {got!r}, not {what!r}')

    def command(self, c):
        os.write(self.cmd_w, c)
        self._expect(c)

    def stop(self):
        if self.pid is None:
            return
        try:
            os.write(self.cmd_w, b'Q')
        except OSError:
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.02)
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        self.pid = None
        for fd in (self.cmd_w, self.ack_r):
            try:
                os.close(fd)
            except OSError:
                pass


# --------------------------------------------------------------------------
# Targets

def spec(kind):
    return hm.MonitorSpec(type=kind, delay=DELAY, timeout=TIMEOUT,
                          max_retries=RISE, max_retries_down=FALL)


def local4(i):
    return f'127.{1 + i // 250}.{(i // 250) % 250}.{i % 250 + 1}'


def build_targets():
    """{key: Target} and {key: group}."""
    targets, groups = {}, {}
    tcp, http, ping = spec('TCP'), spec('HTTP'), spec('PING')
    udp = spec('UDP-CONNECT')
    n = 0

    def put(group, target):
        nonlocal n
        key = f'{group}-{n:04d}'
        n += 1
        targets[key] = target
        groups[key] = group

    for i in range(350):
        put('tcp', hm.Target(local4(i), TCP_PORTS[i % len(TCP_PORTS)], tcp))
    for i in range(50):
        put('tcp', hm.Target('::1', TCP_PORTS[i % len(TCP_PORTS)], tcp))
    for i in range(150):
        put('http', hm.Target(local4(i), HTTP_PORTS[i % len(HTTP_PORTS)],
                              http))
    for i in range(100):
        put('ping', hm.Target(local4(400 + i), None, ping))
    for i in range(50):
        put('udp', hm.Target(local4(i), UDP_OPEN_PORTS[i], udp))
    for i in range(50):
        put('udp-refused', hm.Target(local4(i), UDP_CLOSED_PORTS[i], udp))
    for i in range(100):
        put('refused', hm.Target(local4(i), REFUSED_PORTS[i], tcp))
    for i in range(25):
        put('blackhole', hm.Target(f'{BLACKHOLE_NET}.{i + 2}', 80, tcp))
    for i in range(25):
        put('blackhole', hm.Target(f'{BLACKHOLE_NET}.{i + 30}', None, ping))
    for i, port in enumerate(FLIP_REFUSE_PORTS):
        put('flip-refuse', hm.Target(local4(600 + i), port, tcp))
    for i, port in enumerate(FLIP_DROP_PORTS):
        put('flip-drop', hm.Target(local4(700 + i), port, tcp))
    return targets, groups


UP_GROUPS = ('tcp', 'http', 'ping', 'udp')
DOWN_GROUPS = ('udp-refused', 'refused', 'blackhole')
FLIP_GROUPS = ('flip-refuse', 'flip-drop')


# --------------------------------------------------------------------------

def setup_netns(name):
    sh('ip', 'netns', 'add', name)
    nsx = ['ip', 'netns', 'exec', name]
    sh(*nsx, 'ip', 'link', 'set', 'lo', 'up')
    # Black hole: 198.18.0.0/24 is routed via a gateway on a veth whose
    # (permanent, bogus) MAC the peer end does not own, so the peer drops
    # every frame: no answer, no ICMP error, no ARP failure.
    sh(*nsx, 'ip', 'link', 'add', 'bh0', 'type', 'veth', 'peer', 'name',
       'bh1')
    sh(*nsx, 'ip', 'addr', 'add', f'{BLACKHOLE_GW_NET}.1/24', 'dev', 'bh0')
    sh(*nsx, 'ip', 'link', 'set', 'bh1', 'up')
    sh(*nsx, 'ip', 'link', 'set', 'bh0', 'up')
    sh(*nsx, 'ip', 'neigh', 'replace', f'{BLACKHOLE_GW_NET}.2', 'lladdr',
       '02:00:00:00:00:99', 'dev', 'bh0', 'nud', 'permanent')
    sh(*nsx, 'ip', 'route', 'add', f'{BLACKHOLE_NET}.0/24', 'via',
       f'{BLACKHOLE_GW_NET}.2', 'dev', 'bh0')
    for key, value in (('net.ipv4.icmp_ratelimit', 0),
                       ('net.ipv4.icmp_msgs_per_sec', 100000),
                       ('net.ipv4.icmp_msgs_burst', 100000),
                       ('net.ipv6.icmp.ratelimit', 0),
                       ('net.core.somaxconn', 4096),
                       ('net.ipv4.ip_local_port_range', '10000 65000')):
        sh(*nsx, 'sysctl', '-qw', f'{key}={value}', check=False)


def nft(script):
    sh('nft', '-f', '-', input=script)


def run(args):
    targets, groups = build_targets()
    assert len(targets) == 1000, len(targets)
    ns = f'dsrh{secrets.token_hex(2)}-hc'
    server = None
    checker = None
    try:
        setup_netns(ns)
        setns(ns)  # this process (still single-threaded) and its children
        server = Server()
        use_nft = shutil.which('nft') is not None
        if use_nft:
            nft('add table inet hcbench\n'
                'add chain inet hcbench input { type filter hook input '
                'priority 0; policy accept; }\n')

        probes = []
        changes = []
        cpu0 = time.process_time()

        def on_probe(key, scheduled, started, finished, ok):
            probes.append((key, scheduled, started, finished, ok))

        def on_change(key, old, new):
            changes.append((time.monotonic(), key, old, new))

        checker = hm.HealthChecker(on_change=on_change, on_probe=on_probe,
                                   seed=args.seed)
        checker.set_targets(targets)
        t_start = time.monotonic()
        checker.start()
        log(f'{len(targets)} targets, delay {DELAY:g}s, timeout '
            f'{TIMEOUT:g}s, max_retries_down {FALL}, max_retries {RISE}; '
            f'running {args.duration:g}s in netns {ns}')

        def sleep_until(t):
            left = t - time.monotonic()
            if left > 0:
                time.sleep(left)

        sleep_until(t_start + args.fail_at)
        server.command(b'F')  # flip-refuse listeners close
        if use_nft:
            ports = ', '.join(str(p) for p in FLIP_DROP_PORTS)
            nft(f'add rule inet hcbench input tcp dport {{ {ports} }} drop\n')
        t_fail = time.monotonic()
        sleep_until(t_start + args.repair_at)
        server.command(b'U')
        if use_nft:
            nft('flush chain inet hcbench input\n')
        t_repair = time.monotonic()
        sleep_until(t_start + args.duration)
        checker.stop()
        t_end = time.monotonic()
        cpu = time.process_time() - cpu0
        final = checker.statuses()
        stats = checker.stats()
    finally:
        if checker is not None:
            checker.stop()
        if server is not None:
            server.stop()
        sh('ip', 'netns', 'del', ns, check=False)

    return analyse(args, targets, groups, probes, changes, final, stats,
                   t_start, t_fail, t_repair, t_end, cpu, use_nft)


def analyse(args, targets, groups, probes, changes, final, stats, t_start,
            t_fail, t_repair, t_end, cpu, use_nft):
    lags = [started - scheduled for _, scheduled, started, _, _ in probes]
    starts = {}
    for key, _, started, _, _ in probes:
        starts.setdefault(key, []).append(started)
    intervals = [b - a for s in starts.values() for a, b in zip(s, s[1:])]
    durations = {}
    for key, _, started, finished, _ in probes:
        durations.setdefault(groups[key], []).append(finished - started)
    elapsed = t_end - t_start
    # Every slot (first + k x delay) up to a cutoff that leaves the last
    # probes time to finish before stop() must have had its probe.
    cutoff = t_end - TIMEOUT - 0.05
    firsts = {}
    for key, scheduled, _, _, _ in probes:
        firsts.setdefault(key, scheduled)
    expected = sum(int((cutoff - f) // DELAY) + 1
                   for f in firsts.values() if f <= cutoff)
    done = sum(1 for _, scheduled, _, _, _ in probes if scheduled <= cutoff)
    never_probed = len(targets) - len(firsts)

    def first_change(group, new, after):
        out = []
        for key in (k for k, g in groups.items() if g == group):
            ts = [t for t, k, _o, n in changes
                  if k == key and n == new and t >= after]
            out.append(ts[0] - after if ts else None)
        return out

    def summary(values):
        got = [v for v in values if v is not None]
        return {'n': len(values), 'missing': len(values) - len(got),
                'min_s': round(min(got), 3) if got else None,
                'p50_s': round(statistics.median(got), 3) if got else None,
                'max_s': round(max(got), 3) if got else None}

    detect = {'flip-refuse': summary(first_change('flip-refuse', hm.ERROR,
                                                  t_fail))}
    recover = {'flip-refuse': summary(first_change('flip-refuse', hm.ONLINE,
                                                   t_repair))}
    if use_nft:
        detect['flip-drop'] = summary(first_change('flip-drop', hm.ERROR,
                                                   t_fail))
        recover['flip-drop'] = summary(first_change('flip-drop', hm.ONLINE,
                                                    t_repair))
    first_down = {g: summary(first_change(g, hm.ERROR, t_start))
                  for g in DOWN_GROUPS}
    false_errors = sum(1 for _, k, _o, n in changes
                       if n == hm.ERROR and groups[k] in UP_GROUPS)
    wrong_final = sorted(
        k for k, s in final.items()
        if s != (hm.ERROR if groups[k] in DOWN_GROUPS else hm.ONLINE))

    lag_p50, lag_p99, lag_max = pct(lags, 50), pct(lags, 99), max(lags)
    iv_p1, iv_p99 = pct(intervals, 1), pct(intervals, 99)

    def worst(d, key):
        vals = [v[key] for v in d.values() if v[key] is not None]
        return max(vals) if vals else None
    detect_max = worst(detect, 'max_s')
    recover_max = worst(recover, 'max_s')
    first_max = worst(first_down, 'max_s')
    complete = all(v['missing'] == 0 for d in (detect, recover, first_down)
                   for v in d.values())

    met = {
        f'no target falls behind: p99 lag < {TARGET_LAG_P99:g} s':
            lag_p99 < TARGET_LAG_P99 and stats['skipped_slots'] == 0 and
            done >= expected and never_probed == 0,
        f'failure -> ERROR within max_retries_down x delay + timeout '
        f'({DETECT_BOUND:g} s)':
            complete and detect_max is not None and
            detect_max <= DETECT_BOUND + SLACK,
        f'repair -> ONLINE within max_retries x delay + timeout '
        f'({RECOVER_BOUND:g} s)':
            complete and recover_max is not None and
            recover_max <= RECOVER_BOUND + SLACK,
        f'dead at start -> ERROR after the first probe (delay + timeout, '
        f'{FIRST_BOUND:g} s)':
            complete and first_max is not None and
            first_max <= FIRST_BOUND + SLACK,
        'no healthy target ever ERROR, every final status right':
            false_errors == 0 and not wrong_final,
    }

    ms = 1e3
    log(f'probes: {len(probes)} in {elapsed:.1f}s '
        f'({len(probes) / elapsed:.0f}/s; {done} of {expected} slots due '
        f'by t_end - timeout probed, {never_probed} targets never probed), '
        f'skipped slots {stats["skipped_slots"]}, CPU {cpu:.2f}s '
        f'({100 * cpu / elapsed:.0f}% of one core)')
    log(f'lag vs schedule: p50 {lag_p50 * ms:.2f} ms, p99 '
        f'{lag_p99 * ms:.2f} ms, max {lag_max * ms:.2f} ms '
        f'(target p99 < {TARGET_LAG_P99 * ms:.0f} ms)')
    log(f'interval between a target\'s probes: p1 {iv_p1:.3f}s, p99 '
        f'{iv_p99:.3f}s (delay {DELAY:g}s)')
    for g, d in sorted(durations.items()):
        log(f'  probe duration {g:12s} p50 {pct(d, 50) * ms:7.2f} ms, '
            f'max {max(d) * ms:7.2f} ms ({len(d)} probes)')
    for name, d, bound in (('failure -> ERROR', detect, DETECT_BOUND),
                           ('repair -> ONLINE', recover, RECOVER_BOUND),
                           ('dead at start -> ERROR', first_down,
                            FIRST_BOUND)):
        for g, v in d.items():
            log(f'{name:24s} {g:12s} n={v["n"]:3d} min {v["min_s"]}s '
                f'p50 {v["p50_s"]}s max {v["max_s"]}s (bound {bound:g}s'
                f'{", missing %d" % v["missing"] if v["missing"] else ""})')
    if not use_nft:
        log('nft not found: the timing-out flip group was not failed')
    log(f'false ERRORs of healthy targets: {false_errors}; wrong final '
        f'statuses: {len(wrong_final)} {wrong_final[:5]}')
    for name, ok in met.items():
        log(f'target: {name}: {"met" if ok else "MISSED"}')

    return {
        'bench': 'health',
        'targets_n': len(targets),
        'delay_s': DELAY, 'timeout_s': TIMEOUT,
        'max_retries_down': FALL, 'max_retries': RISE,
        'duration_s': round(elapsed, 2),
        'probes': len(probes), 'slots_due': expected, 'slots_probed': done,
        'never_probed': never_probed,
        'probes_per_s': round(len(probes) / elapsed, 1),
        'skipped_slots': stats['skipped_slots'],
        'cpu_s': round(cpu, 2),
        'cpu_percent_of_core': round(100 * cpu / elapsed, 1),
        'lag_p50_ms': round(lag_p50 * ms, 3),
        'lag_p99_ms': round(lag_p99 * ms, 3),
        'lag_max_ms': round(lag_max * ms, 3),
        'interval_p1_s': round(iv_p1, 4), 'interval_p99_s': round(iv_p99, 4),
        'detect': detect, 'recover': recover, 'dead_at_start': first_down,
        'detect_bound_s': DETECT_BOUND, 'recover_bound_s': RECOVER_BOUND,
        'first_probe_bound_s': FIRST_BOUND,
        'false_errors': false_errors, 'wrong_final': len(wrong_final),
        'targets': met,
        'targets_met': all(met.values()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--duration', type=float, default=12.0)
    ap.add_argument('--fail-at', type=float, default=3.0)
    ap.add_argument('--repair-at', type=float, default=8.0)
    ap.add_argument('--seed', type=int, default=1)
    args = ap.parse_args()

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)

    if os.geteuid() != 0:
        log('health bench needs root (a private network namespace)')
        print(json.dumps({'bench': 'health', 'skipped': 'needs root'}))
        return 0
    try:
        result = run(args)
    except Exception as exc:  # noqa: BLE001 - reported in the JSON line
        import traceback
        traceback.print_exc()
        print(json.dumps({'bench': 'health', 'error': str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
