"""Control plane through the real Octavia API: how fast an API change
reaches packets, and whether a burst of API work converges.

Builds a ProductLab (tools/lab/product_lab.py): a real
octavia-api + octavia-driver-agent with the `dsr` provider, a real
dsr-controller, dsr-agents on 2 SEs, a BIRD router, 3 members and a client,
all in private network namespaces, and drives it with openstacksdk.

1. Member create -> first packet at the new member.  A TCP LB (VIP
   192.0.2.10), listener :80 and SOURCE_IP_PORT pool with m1 and m2; the
   client opens a new TCP connection (a fresh source port: the SEs'
   connection table pins known flows) every 2 ms.  Then, ITERATIONS times:
   create member m3 through the API, time the first tunnel packet that
   reaches m3 (AF_PACKET socket in m3's namespace, kernel receive
   timestamps), wait for ACTIVE, delete m3 and wait until it is gone.
   Also reported: create -> member ACTIVE and -> its load balancer ACTIVE
   (Octavia's rows, polled every 10 ms, then one API GET confirms it:
   polling the API itself costs octavia-api CPU that the status update
   being waited for competes with), create -> m3 fed by every
   SE, delete -> API 404, delete -> last packet at m3, the split of each
   create from the product's own logs (controller stored the change /
   each agent applied it), and octavia-driver-agent round-trip times.
2. LOAD_BALANCERS load balancers created concurrently (one thread and one
   openstacksdk connection each, VIPs 192.0.2.100...) -> all ACTIVE; any
   still PENDING_* or ERROR after the deadline count as stuck.  Then they
   are deleted concurrently (cascade) and must disappear.

    .venv/bin/python bench/api_bench.py      (root; about 2.5-3 minutes)

Targets: member create -> first packet p95 <= 1 s; member create -> ACTIVE
p95 <= 1 s (issue 15); no load balancer stuck.
Last line: one JSON object.  Everything (namespaces, processes, databases,
RabbitMQ vhost, pins, the run's Redis keys) is removed on exit, also on
failure or SIGTERM.  The lab's controller and agents use a private tooz
namespace in Redis, so labs of other test runs on this machine cannot take
its controller's leadership (see main()).
"""

import concurrent.futures
import ipaddress
import json
import os
import socket
import struct
import sys
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from _common import exit_on_sigterm  # noqa: E402
from _common import finish  # noqa: E402
from _common import keep_logs  # noqa: E402
from _common import log  # noqa: E402
from _common import setns  # noqa: E402

ITERATIONS = int(os.environ.get('DSR_BENCH_ITERATIONS', 10))
LOAD_BALANCERS = int(os.environ.get('DSR_BENCH_LBS', 50))
# The controller reports through dsr_provider.status_relay, as DevStack
# deploys it (OCTAVIA_DSR_STATUS_RELAY=True); DSR_BENCH_STATUS_RELAY=0:
# through octavia-driver-agent's own sockets.
STATUS_RELAY = os.environ.get('DSR_BENCH_STATUS_RELAY', '1') != '0'
CONN_INTERVAL = 0.002        # one new TCP connection every 2 ms
POLL = 0.02                  # API status polling interval (s)
DB_POLL = 0.01               # Octavia DB status polling interval (s)
PACKET_TIMEOUT = 10.0        # create -> first packet, per iteration
ALL_SES_TIMEOUT = 3.0        # extra wait for the second SE's first packet
LB_DEADLINE = 60.0           # concurrent creates -> all ACTIVE
DELETE_DEADLINE = 60.0
TARGET_P95_S = 1.0
# The agents' periodic work at its shipped defaults (amphora_agent/opts.py),
# not the agent lab's 1 s / 5 s / 5 s meant for tests that wait for a
# report: each stats report reads the member slot array and the connection
# table on the agent's worker thread (0.3-0.45 s on a host at load 10), and
# a change arriving meanwhile waits behind it (docs/benchmarks.md).
AGENT_CONFIG = {'agent': {'stats_interval': 10, 'resync_interval': 60,
                          'nexthop_refresh_interval': 30}}

ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4
TUNNEL_PROTOS = (4, 41, 47)  # IPIP, IPv6-in-IP, GRE


def percentile(values, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def summary_ms(values):
    if not values:
        return {'n': 0}
    ms = [x * 1000.0 for x in values]
    return {'n': len(ms), 'p50_ms': round(percentile(ms, 0.5), 1),
            'p95_ms': round(percentile(ms, 0.95), 1),
            'min_ms': round(min(ms), 1), 'max_ms': round(max(ms), 1)}


# ------------------------------------------------------------------ traffic
class NewFlows(threading.Thread):
    """In the client's namespace: a new TCP connection to vip:port every
    ``interval`` s, each from a source port never used before in this run
    (closed right after the SYN: the member's SYN-ACK gets a RST)."""

    def __init__(self, ns, sources, vip, port, interval):
        super().__init__(name='new-flows', daemon=True)
        self.ns, self.sources = ns, list(sources)
        self.vip, self.port, self.interval = vip, port, interval
        self.stop_event = threading.Event()
        self.sent = 0
        self.errors = 0
        self.exhausted = False
        self.error = None

    def run(self):
        try:
            setns(self.ns)
            for src in self.sources:
                for sport in range(1024, 65536):
                    if self.stop_event.is_set():
                        return
                    self._one(src, sport)
                    self.stop_event.wait(self.interval)
            self.exhausted = True
        except BaseException:  # noqa: BLE001 -- reported by the main thread
            self.error = traceback.format_exc()

    def _one(self, src, sport):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setblocking(False)
            s.bind((src, sport))
            s.connect_ex((self.vip, self.port))   # SYN goes out now
            self.sent += 1
        except OSError:
            self.errors += 1
        finally:
            s.close()

    def stop(self):
        self.stop_event.set()
        self.join(timeout=5)


class TunnelSniffer(threading.Thread):
    """In a member's namespace: every tunnel packet (IPIP/GRE, outer
    destination = the member) arriving on its link, as (time, outer
    source).  AF_PACKET taps run before tc ingress, so this sees the
    packets before the member's decap program strips them."""

    def __init__(self, ns, ifname, addresses):
        super().__init__(name='sniffer', daemon=True)
        self.ns, self.ifname = ns, ifname
        self.addresses = {ipaddress.ip_address(a).packed for a in addresses}
        self.events = []          # (realtime seconds, outer source)
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.kernel_ts = 0
        self.user_ts = 0
        self.error = None

    def run(self):
        try:
            setns(self.ns)
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                              socket.htons(ETH_P_ALL))
            s.bind((self.ifname, 0))
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.settimeout(0.1)
        except BaseException:  # noqa: BLE001
            self.error = traceback.format_exc()
            self.ready.set()
            return
        self.ready.set()
        with s:
            while not self.stop_event.is_set():
                try:
                    data, anc, _flags, addr = s.recvmsg(256, 64)
                except socket.timeout:
                    continue
                now = time.time()
                if addr[2] == PACKET_OUTGOING:
                    continue
                src = self._tunnel_source(data)
                if src is None:
                    continue
                ts = now
                for level, kind, value in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack('qq', value[:16])
                        kts = sec + nsec / 1e9
                        # Use the kernel's receive time when it is sane.
                        if 0 <= now - kts < 1.0:
                            ts = kts
                if ts is now:
                    self.user_ts += 1
                else:
                    self.kernel_ts += 1
                with self.lock:
                    self.events.append((ts, src))

    def _tunnel_source(self, frame):
        if len(frame) < 34:
            return None
        ethertype = struct.unpack('!H', frame[12:14])[0]
        if ethertype == 0x0800:
            if frame[23] in TUNNEL_PROTOS and frame[30:34] in self.addresses:
                return str(ipaddress.ip_address(frame[26:30]))
        elif ethertype == 0x86DD and len(frame) >= 54:
            if frame[20] in TUNNEL_PROTOS and frame[38:54] in self.addresses:
                return str(ipaddress.ip_address(frame[22:38]))
        return None

    def since(self, t0):
        with self.lock:
            return [e for e in self.events if e[0] >= t0]

    def stop(self):
        self.stop_event.set()
        self.join(timeout=5)


# ---------------------------------------------------------------- API helpers
def wait_until(predicate, timeout, what, interval=POLL):
    # Not tools.lab.netns.wait_for: that one keeps polling through a
    # predicate's exception, and an object in ERROR must end the wait.
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f'{what}: not within {timeout} s')
        time.sleep(interval)


def wait_active(get, what, timeout=30.0):
    state = {}

    def ok():
        obj = get()
        state['last'] = obj.provisioning_status
        if obj.provisioning_status == 'ERROR':
            raise RuntimeError(f'{what} went to ERROR')
        return obj.provisioning_status == 'ACTIVE'
    try:
        wait_until(ok, timeout, what)
    except TimeoutError as exc:
        raise TimeoutError(f'{exc} (last {state.get("last")})') from None


# ----------------------------------------------------------- part 1: members
def member_to_packet(lab, conn, created_lbs, pl, netns):
    topo = lab.topo
    vip = netns.VIP4
    m1, m2, m3 = topo.members
    se_tunnels = {se.ipv4: se.name for se in topo.ses}
    lb = conn.load_balancer.create_load_balancer(
        name='bench-member-lb', vip_subnet_id=pl.VIP_SUBNET,
        vip_address=vip, provider='dsr')
    created_lbs.append(lb.id)
    lb_active = lambda what: wait_active(  # noqa: E731
        lambda: conn.load_balancer.get_load_balancer(lb.id), what)
    lb_active('load balancer')
    listener = conn.load_balancer.create_listener(
        name='bench-l1', loadbalancer_id=lb.id, protocol='TCP',
        protocol_port=80)
    lb_active('listener create')
    pool = conn.load_balancer.create_pool(
        name='bench-p1', listener_id=listener.id, protocol='TCP',
        lb_algorithm='SOURCE_IP_PORT')
    lb_active('pool create')
    for m in (m1, m2):
        conn.load_balancer.create_member(
            pool.id, name=m.name, address=m.ipv4, protocol_port=80,
            subnet_id=pl.MEMBER_SUBNET)
        lb_active(f'member {m.name} create')
    lab.agents.wait_route(f'{vip}/32', [se.name for se in topo.ses],
                          timeout=30)
    log(f'LB {lb.id} with m1, m2 ACTIVE; {vip}/32 routed via both SEs')

    # Decapsulated VIP traffic at each member, as a cross-check.
    decapped = {m.name: topo.nft_counter(m.name, daddr=vip)
                for m in (m1, m2, m3)}
    sniffer = TunnelSniffer(topo.ns(m3.name), m3.ifname, [m3.ipv4, m3.ipv6])
    sniffer.start()
    sniffer.ready.wait(5)
    if sniffer.error:
        raise RuntimeError(f'sniffer: {sniffer.error}')
    sources = [topo.client.ipv4] + topo.add_client_sources(3)[0]
    flows = NewFlows(topo.ns('client'), sources, vip, 80, CONN_INTERVAL)
    octavia_rows = OctaviaRows(lab.stack)
    flows.start()
    rows = []
    try:
        time.sleep(0.5)
        base = {k: c.packets() for k, c in decapped.items()}
        if not (base['m1'] and base['m2']):
            raise RuntimeError(f'no traffic at m1/m2 before the test: {base} '
                               f'(flows sent {flows.sent}, errors '
                               f'{flows.errors}, {flows.error})')
        if sniffer.since(0):
            raise RuntimeError('m3 gets tunnel packets before it is a member')
        for i in range(ITERATIONS):
            rows.append(one_iteration(i, conn, pool.id, m3, pl, sniffer,
                                      se_tunnels, lb_active, octavia_rows,
                                      lb.id))
            if flows.error or flows.exhausted:
                raise RuntimeError(f'traffic generator stopped: '
                                   f'{flows.error or "ports exhausted"}')
        final = {k: c.packets() for k, c in decapped.items()}
    finally:
        flows.stop()
        sniffer.stop()
        octavia_rows.close()
    breakdown = timeline(lab, rows)
    diag = roundtrips(lab, pool.id)
    first = [r['first_packet_s'] for r in rows
             if r['first_packet_s'] is not None]
    missed = sum(1 for r in rows if r['first_packet_s'] is None)
    p95 = percentile(first, 0.95) if first else None
    result = {
        'iterations': len(rows),
        'create_to_first_packet': summary_ms(first),
        'create_to_first_packet_every_se': summary_ms(
            [r['all_ses_s'] for r in rows if r['all_ses_s'] is not None]),
        'create_api_call': summary_ms([r['api_call_s'] for r in rows]),
        'create_to_active': summary_ms([r['active_s'] for r in rows]),
        'create_to_lb_active': summary_ms([r['lb_active_s'] for r in rows]),
        'create_to_active_api': summary_ms([r['active_api_s']
                                            for r in rows]),
        'delete_to_gone': summary_ms([r['gone_s'] for r in rows]),
        'delete_to_last_packet': summary_ms(
            [r['last_packet_s'] for r in rows
             if r['last_packet_s'] is not None]),
        'iterations_without_packet': missed,
        'packets_after_gone': sum(r['packets_after_gone'] for r in rows),
        'new_flows_sent': flows.sent, 'new_flow_errors': flows.errors,
        'new_flows_per_s': round(1 / CONN_INTERVAL),
        'tunnel_packets_at_m3': len(sniffer.events),
        'kernel_timestamps': sniffer.kernel_ts,
        'user_timestamps': sniffer.user_ts,
        'decapsulated_vip_packets': {k: final[k] - base[k] for k in final},
        'breakdown_from_product_logs': breakdown,
        'driver_agent_roundtrips': diag,
        'rows': [{k: v for k, v in r.items() if k != 't0'} for r in rows],
    }
    met = missed == 0 and p95 is not None and p95 <= TARGET_P95_S
    return result, met


class OctaviaRows:
    """Provisioning statuses straight from Octavia's database: what the
    API's next GET returns, read for a fraction of a GET's CPU (on this
    2-core host octavia-api's work for a GET every 20 ms competes with the
    driver-agent child whose update is being waited for)."""

    def __init__(self, stack):
        import pymysql
        from tools.lab.localstack import octavia as octavia_stack
        self.conn = pymysql.connect(
            host=octavia_stack.DB_HOST, port=octavia_stack.DB_PORT,
            user=octavia_stack.DB_USER, database=stack.db_name,
            autocommit=True)

    def status(self, table, obj_id):
        with self.conn.cursor() as cur:
            cur.execute(f'SELECT provisioning_status FROM {table} '
                        f'WHERE id = %s', (obj_id,))
            row = cur.fetchone()
        return row[0] if row else None

    def close(self):
        self.conn.close()


def one_iteration(i, conn, pool_id, m3, pl, sniffer, se_tunnels, lb_active,
                  rows, lb_id):
    t0 = time.time()
    member = conn.load_balancer.create_member(
        pool_id, name=m3.name, address=m3.ipv4, protocol_port=80,
        subnet_id=pl.MEMBER_SUBNET)
    api_call = time.time() - t0
    active = lb_done = None
    first = {}
    deadline = t0 + PACKET_TIMEOUT
    # Poll Octavia's rows while waiting for packets: both clocks run from
    # t0.  The member is ACTIVE first; the load balancer (back from
    # PENDING_UPDATE, open to the next change) last in the same update.
    while time.time() < deadline:
        if active is None:
            st = rows.status('member', member.id)
            if st == 'ACTIVE':
                active = time.time() - t0
            elif st == 'ERROR':
                raise RuntimeError(f'member create {i}: ERROR')
        if active is not None and lb_done is None and \
                rows.status('load_balancer', lb_id) == 'ACTIVE':
            lb_done = time.time() - t0
        for ts, src in sniffer.since(t0):
            first.setdefault(src, ts - t0)
        if lb_done is not None and first and (
                len(first) >= len(se_tunnels) or
                time.time() - t0 > min(first.values()) + ALL_SES_TIMEOUT):
            break
        time.sleep(DB_POLL)
    if active is None:
        wait_active(lambda: conn.load_balancer.get_member(member.id, pool_id),
                    f'member create {i}')
        active = time.time() - t0
    # The API agrees (one GET, issued once the row is ACTIVE).
    wait_active(lambda: conn.load_balancer.get_member(member.id, pool_id),
                f'member create {i} (API)')
    active_api = time.time() - t0
    lb_active(f'member create {i}')
    if lb_done is None:
        lb_done = time.time() - t0
    first_packet = min(first.values()) if first else None
    all_ses = (max(first.values()) if len(first) >= len(se_tunnels)
               else None)

    t1 = time.time()
    conn.load_balancer.delete_member(member.id, pool_id)
    wait_until(lambda: conn.load_balancer.find_member(
        member.id, pool_id, ignore_missing=True) is None, 30,
        f'member delete {i}')
    gone = time.time() - t1
    lb_active(f'member delete {i}')
    time.sleep(0.15)    # in-flight packets (RSTs of flows sent to m3)
    t_quiet = time.time()
    time.sleep(0.15)
    after = sniffer.since(t1)
    last_packet = max(ts for ts, _ in after) - t1 if after else None
    stray = len(sniffer.since(t_quiet))
    row = {'i': i, 't0': t0, 'api_call_s': round(api_call, 4),
           'first_packet_s': (round(first_packet, 4)
                              if first_packet is not None else None),
           'first_packet_by_se': {se_tunnels.get(k, k): round(v, 4)
                                  for k, v in sorted(first.items(),
                                                     key=lambda x: x[1])},
           'all_ses_s': round(all_ses, 4) if all_ses is not None else None,
           'active_s': round(active, 4),
           'active_api_s': round(active_api, 4),
           'lb_active_s': round(lb_done, 4), 'gone_s': round(gone, 4),
           'last_packet_s': (round(last_packet, 4)
                             if last_packet is not None else None),
           'packets_after_gone': stray}
    fp = f'{first_packet * 1000:.0f} ms' if first_packet is not None \
        else 'NONE'
    log(f'  #{i}: create call {api_call * 1000:.0f} ms, first packet at m3 '
        f'{fp} (by SE: {row["first_packet_by_se"]}), ACTIVE '
        f'{active * 1000:.0f} ms (load balancer {lb_done * 1000:.0f} ms, '
        f'API {active_api * 1000:.0f} ms); delete -> gone '
        f'{gone * 1000:.0f} ms, last packet {row["last_packet_s"]}, '
        f'later {stray}')
    return row


# ------------------------------------------------- where the time goes
def timeline(lab, rows):
    """Split each member create with the product's own logs: the
    controller stores the change ('member_create -> generation N'), each
    agent applies it ('generation N applied')."""
    from tools.lab import oslo_logs
    root = lab.agents.root
    stored = [(ts, int(m.group(1))) for ts, m in oslo_logs.events(
        os.path.join(root, 'ctl1.log'), r'member_create -> generation (\d+)')]
    applied = {}
    for se in lab.topo.ses:
        for ts, m in oslo_logs.events(
                os.path.join(root, f'{se.name}.log'),
                r'generation (\d+) applied'):
            applied.setdefault(int(m.group(1)), {})[se.name] = ts
    parts = {'create_to_stored': [], 'stored_to_first_se_applied': [],
             'stored_to_every_se_applied': [],
             'first_applied_to_first_packet': [],
             'every_se_applied_to_active': [],
             'every_se_applied_to_lb_active': []}
    for r in rows:
        t0 = r['t0']
        after = [(ts, g) for ts, g in stored if ts >= t0 - 0.01]
        if not after:
            continue
        ts_stored, gen = after[0]
        ses = applied.get(gen, {})
        r['generation'] = gen
        r['stored_s'] = round(ts_stored - t0, 4)
        r['applied_s'] = {k: round(v - t0, 4) for k, v in sorted(ses.items())}
        parts['create_to_stored'].append(ts_stored - t0)
        if not ses:
            continue
        first_applied = min(ses.values()) - t0
        parts['stored_to_first_se_applied'].append(
            first_applied - (ts_stored - t0))
        if r['first_packet_s'] is not None:
            parts['first_applied_to_first_packet'].append(
                r['first_packet_s'] - first_applied)
        if len(ses) == len(lab.topo.ses):
            every = max(ses.values()) - t0
            parts['stored_to_every_se_applied'].append(
                every - (ts_stored - t0))
            parts['every_se_applied_to_active'].append(r['active_s'] - every)
            parts['every_se_applied_to_lb_active'].append(
                r['lb_active_s'] - every)
    return {k: summary_ms(v) for k, v in parts.items()}


def roundtrips(lab, pool_id, n=5):
    """octavia-driver-agent round trips as the provider makes them.  Its
    unix sockets fork a child per request (socketserver.ForkingMixIn) that
    opens a fresh DB session; octavia-lib's client reads the length
    prefix one byte at a time with a 10 ms sleep after each byte."""
    import uuid

    from dsr_provider import octavia_lookup
    lib = lab.stack.driver_library()
    lookup = octavia_lookup.OctaviaLookup(
        lab.stack.driver_agent_sockets['get'])
    calls = {
        'get_missing_lb': lambda: lib.get_loadbalancer(str(uuid.uuid4())),
        'get_pool': lambda: lib.get_pool(pool_id),
        'status_update_empty': lambda: lib.update_loadbalancer_status({}),
        'provider_member_check_lookup': lambda:
            lookup.pool_listener_port(pool_id),
    }
    out = {}
    for name, call in calls.items():
        times = []
        for _ in range(n):
            t = time.monotonic()
            call()
            times.append(time.monotonic() - t)
        out[name] = summary_ms(times)
    return out


# ------------------------------------------------- part 2: concurrent creates
def _spacing_ms(times):
    t = sorted(times)
    gaps = [b - a for a, b in zip(t, t[1:])]
    return round(percentile(gaps, 0.5) * 1000, 1) if gaps else None


def concurrent_lbs(lab, created_lbs, pl, n=LOAD_BALANCERS, graph=None,
                   name='bench-c', first_vip='192.0.2.100',
                   deadline_s=LB_DEADLINE, after_delete=None,
                   delete_deadline_s=DELETE_DEADLINE):
    """n load balancers created at once (one thread and connection each),
    then deleted at once (cascade).  graph(k) -> keyword arguments added
    to load balancer k's create (e.g. listeners: Octavia's single-call
    graph create).  after_delete(lab) -> dict of extra checks, run once
    they are gone.  Returns (result dict, target met)."""
    vips = [str(ipaddress.ip_address(first_vip) + k) for k in range(n)]
    conns = [lab.stack.sdk() for _ in range(n)]
    watcher = lab.stack.sdk()
    mine = {}
    api_errors = []
    call_s = []
    lock = threading.Lock()
    barrier = threading.Barrier(n)

    def create(k):
        barrier.wait(30)
        t = time.monotonic()
        try:
            lb = conns[k].load_balancer.create_load_balancer(
                name=f'{name}{k:02d}', vip_subnet_id=pl.VIP_SUBNET,
                vip_address=vips[k], provider='dsr',
                **(graph(k) if graph else {}))
        except Exception as exc:  # noqa: BLE001 -- counted
            with lock:
                api_errors.append(f'{vips[k]}: {exc}'[:300])
            return
        with lock:
            call_s.append(time.monotonic() - t)
            mine[lb.id] = k
            created_lbs.append(lb.id)

    log(f'creating {n} load balancers concurrently ({n} threads)')
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        t0 = time.monotonic()
        futures = [pool.submit(create, k) for k in range(n)]
        concurrent.futures.wait(futures)
        for f in futures:
            f.result()
    calls_done = time.monotonic() - t0
    active_at = {}
    states = {}
    deadline = t0 + deadline_s
    while True:
        now = time.monotonic()
        states = {lb.id: lb.provisioning_status
                  for lb in watcher.load_balancer.load_balancers()
                  if lb.id in mine}
        for lb_id, st in states.items():
            if st == 'ACTIVE':
                active_at.setdefault(lb_id, now - t0)
        if len(active_at) == len(mine) or now > deadline:
            break
        time.sleep(0.1)
    all_active = (max(active_at.values())
                  if active_at and len(active_at) == len(mine) else None)
    stuck = {lb_id: st for lb_id, st in states.items() if st != 'ACTIVE'}
    errors = sum(1 for st in states.values() if st == 'ERROR')
    missing = [lb_id for lb_id in mine if lb_id not in states]
    log(f'  API calls: {len(call_s)} ok, {len(api_errors)} failed, all '
        f'returned after {calls_done:.2f} s; ACTIVE: {len(active_at)}/'
        f'{len(mine)}' + (f', all after {all_active:.2f} s'
                          if all_active is not None else '') +
        f'; stuck {len(stuck)} {sorted(set(stuck.values()))}')
    for e in api_errors[:5]:
        log(f'  API error: {e}')

    # Delete (cascade), concurrently, and wait until they are gone.
    del_errors = []

    def delete(lb_id, k):
        try:
            conns[k].load_balancer.delete_load_balancer(lb_id, cascade=True)
        except Exception as exc:  # noqa: BLE001
            with lock:
                del_errors.append(f'{lb_id}: {exc}'[:300])
    t1 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        for f in [pool.submit(delete, lb_id, k)
                  for lb_id, k in mine.items()]:
            f.result()
    gone_at = {}
    while True:
        now = time.monotonic()
        left = {lb.id: lb.provisioning_status
                for lb in watcher.load_balancer.load_balancers()
                if lb.id in mine}
        for lb_id in mine:
            if lb_id not in left:
                gone_at.setdefault(lb_id, now - t1)
        if not left or now - t1 > delete_deadline_s:
            break
        time.sleep(0.1)
    gone = time.monotonic() - t1 if not left else None
    for lb_id in mine:
        if lb_id not in left and lb_id in created_lbs:
            created_lbs.remove(lb_id)
    log(f'  ACTIVE one after the other: median spacing '
        f'{_spacing_ms(active_at.values())} ms; gone: median spacing '
        f'{_spacing_ms(gone_at.values())} ms')
    log(f'  cascade delete: {len(del_errors)} API errors; '
        + (f'all gone after {gone:.2f} s' if gone is not None else
           f'{len(left)} left after {delete_deadline_s:.0f} s: '
           f'{sorted(set(left.values()))}'))
    for e in del_errors[:5]:
        log(f'  delete error: {e}')
    result = {
        'load_balancers': n,
        'api_create_ok': len(call_s), 'api_create_errors': len(api_errors),
        'api_create_error_samples': api_errors[:3],
        'api_create_call': summary_ms(call_s),
        'all_create_calls_returned_s': round(calls_done, 3),
        'active': len(active_at),
        'create_to_active_each': summary_ms(list(active_at.values())),
        'all_active_s': round(all_active, 3) if all_active is not None
        else None,
        # One after the other, this far apart: the controller's reporter
        # reports each pending status in turn, each with two round trips
        # to octavia-driver-agent.
        'active_spacing_ms_median': _spacing_ms(active_at.values()),
        'stuck_after_deadline': len(stuck) + len(missing),
        'error_after_deadline': errors,
        'stuck_states': sorted(set(stuck.values())),
        'deadline_s': deadline_s,
        'delete_api_errors': len(del_errors),
        'delete_deadline_s': delete_deadline_s,
        'delete_all_gone_s': round(gone, 3) if gone is not None else None,
        'gone_spacing_ms_median': _spacing_ms(gone_at.values()),
        'left_after_delete': len(left),
    }
    met = (not api_errors and not stuck and not missing and
           len(active_at) == n and not left and not del_errors)
    if after_delete is not None and not left:
        extra = after_delete(lab)
        result.update(extra)
        met = met and extra.get('clean', False)
    return result, met


# ---------------------------------------------------------------------- main
def delete_leftovers(lab, created_lbs):
    """Best effort: cascade-delete what this run created and still sees."""
    if not created_lbs or getattr(lab.stack, 'api_url', None) is None:
        return
    try:
        conn = lab.stack.sdk()
        for lb_id in list(created_lbs):
            try:
                conn.load_balancer.delete_load_balancer(lb_id, cascade=True)
            except Exception:  # noqa: BLE001 -- e.g. still PENDING
                pass
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ids = {lb.id for lb in conn.load_balancer.load_balancers()}
            if not ids & set(created_lbs):
                created_lbs.clear()
                return
            time.sleep(0.2)
        log(f'  {len(ids & set(created_lbs))} load balancers still listed; '
            'the stack (and its database) is dropped anyway')
    except Exception as exc:  # noqa: BLE001
        log(f'  cleanup through the API failed: {exc}')


def drop_redis_namespace(namespace):
    """Remove the tooz keys (groups, heartbeats) of this run."""
    try:
        import redis
        client = redis.Redis(host='127.0.0.1', port=6379,
                             socket_timeout=5)
        for key in list(client.scan_iter(f'{namespace}*')):
            client.delete(key)
        client.close()
    except Exception as exc:  # noqa: BLE001
        log(f'  could not remove Redis keys {namespace}*: {exc}')


def main():
    exit_on_sigterm()
    sys.setswitchinterval(0.001)
    if os.geteuid() != 0:
        print(json.dumps({'bench': 'api', 'error': 'needs root'}))
        return 1

    from tools.lab import netns
    from tools.lab import product_lab as pl

    # The lab's agents and controller use a tooz namespace and leader group
    # private to the lab (agent_lab.AgentLab.redis_url, product_lab), so
    # other labs on the same Redis do not interfere.

    out = {'bench': 'api', 'targets': {
        'member_create_to_first_packet_p95_s<=1': None,
        'member_create_to_active_p95_s<=1': None,
        'lbs_concurrent_none_stuck': None}}
    out['loadavg_at_start'] = os.getloadavg()[0]
    created_lbs = []
    t_start = time.monotonic()
    netns.sweep_stale()
    try:
        with netns.Topology(n_se=2, n_members=3) as topo:
            lab = pl.ProductLab(topo, agent_config=AGENT_CONFIG,
                                status_relay=STATUS_RELAY)
            out['status_relay'] = STATUS_RELAY
            try:
                lab.start()
                out['lab_start_s'] = round(time.monotonic() - t_start, 1)
                log(f'lab up in {out["lab_start_s"]} s (octavia-api '
                    f'{lab.stack.api_url})')
                conn = lab.stack.sdk()
                log(f'1. member create -> first packet at the new member, '
                    f'{ITERATIONS} times')
                res1, met1 = member_to_packet(lab, conn, created_lbs, pl,
                                              netns)
                out['member_create_to_first_packet'] = res1
                out['targets']['member_create_to_first_packet_p95_s<=1'] = \
                    met1
                f = res1['create_to_first_packet']
                log(f'   create -> first packet: p50 {f.get("p50_ms")} ms, '
                    f'p95 {f.get("p95_ms")} ms, max {f.get("max_ms")} ms '
                    f'(n={f["n"]}); target p95 <= '
                    f'{TARGET_P95_S * 1000:.0f} ms: '
                    f'{"met" if met1 else "NOT met"}')
                a = res1['create_to_active']
                la = res1['create_to_lb_active']
                e = res1['create_to_first_packet_every_se']
                out['targets']['member_create_to_active_p95_s<=1'] = (
                    a.get('p95_ms') is not None and
                    a['p95_ms'] <= TARGET_P95_S * 1000)
                log(f'   create -> every SE feeds m3: p50 {e.get("p50_ms")} '
                    f'ms, p95 {e.get("p95_ms")} ms; create -> member ACTIVE: '
                    f'p50 {a.get("p50_ms")} ms, p95 {a.get("p95_ms")} ms; '
                    f'load balancer ACTIVE: p50 {la.get("p50_ms")} ms, p95 '
                    f'{la.get("p95_ms")} ms')
                b = res1['breakdown_from_product_logs']
                log('   where it goes (p50 ms, from the product logs): '
                    + ', '.join(f'{k} {v.get("p50_ms")}'
                                for k, v in b.items()))
                d = res1['driver_agent_roundtrips']
                log('   octavia-driver-agent round trips (p50 ms): '
                    + ', '.join(f'{k} {v.get("p50_ms")}'
                                for k, v in d.items()))
                delete_leftovers(lab, created_lbs)

                log(f'2. {LOAD_BALANCERS} load balancers created '
                    'concurrently')
                res2, met2 = concurrent_lbs(lab, created_lbs, pl)
                out['concurrent_load_balancers'] = res2
                out['targets']['lbs_concurrent_none_stuck'] = met2
                log(f'   all ACTIVE after {res2["all_active_s"]} s, stuck '
                    f'{res2["stuck_after_deadline"]}; deleted in '
                    f'{res2["delete_all_gone_s"]} s; target none stuck: '
                    f'{"met" if met2 else "NOT met"}')
            finally:
                delete_leftovers(lab, created_lbs)
                out['loadavg_at_end'] = os.getloadavg()[0]
                keep_logs(lab)
                lab.close()
    except BaseException as exc:  # noqa: BLE001 -- reported in the JSON
        return finish(out, t_start, exc)
    return finish(out, t_start)


if __name__ == '__main__':
    sys.exit(main())
