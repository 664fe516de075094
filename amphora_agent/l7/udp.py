"""UDP listeners on the L7 SE: nftables DNAT to a member, SNAT to the SE.

HAProxy 2.6 does not proxy UDP (an amphora serves UDP with keepalived/LVS,
and the L7 SE's kernel has no IPVS), so a UDP listener of the L7 document
becomes rules of an nftables table of its own load balancer
(``inet dsr_udp_<lb id>``), installed atomically with ``nft -f`` (the
table is created, deleted and defined again in one transaction) after
``nft -c -f`` accepted it -- a rejected rule set leaves that load
balancer's table as it was, the other load balancers go ahead.

Per listener, for packets to VIP:port/udp (arriving decapsulated):

* ``filter_in`` (prerouting, before DNAT): allowed_cidrs (others dropped),
  connection_limit (``ct count``), the persistence timeout (``ct timeout``)
  and the ``in_`` counter (bytes_in);
* ``nat_in`` (prerouting dstnat): the first packet of a flow is DNATed to
  a member chosen by the pool's algorithm -- ROUND_ROBIN ``numgen inc``,
  SOURCE_IP ``jhash`` of the source address (also for SOURCE_IP session
  persistence), SOURCE_IP_PORT ``jhash`` of source address and port, with
  a seed from the pool id so that every L7 SE and every re-install hash a
  client alike --
  from a map where a member appears ``weight`` times (divided by their
  common divisor); the ``new_`` counter counts flows (total_connections);
* ``nat_out`` (postrouting srcnat): SNAT to the L7 SE's address of the
  member's family ([l7] snat_source4/6, else its tunnel address; with
  neither, masquerade), as HAProxy's ``source``;
* ``reply`` (forward): the ``out_`` counter (bytes_out) of the members'
  replies, which leave by this host's routing table straight to the
  client.

A re-install (health change, update) of a table this service installed
flushes its rules and defines them again in one transaction, deleting
the chains and objects the new rule set no longer has: named counters
are objects, which a flush keeps and a declaration of an existing one
leaves as it is, so the statistics go on without a gap (re-creating the
table with the counters' values read just before loses what arrives
between the read and the replace -- a whole burst of flows on a loaded
host).  A conntrack timeout policy's name holds its seconds: an
existing object is never updated, so a new value is a new object.

Conntrack keeps a flow on its member while its entry lives, whatever the
map becomes; the flows of a member that leaves the map (health ERROR,
admin down, removed) are deleted from conntrack, so their next packet
picks a live member.  Only ONLINE / NO_MONITOR members are in the map;
backup members only when no primary is.  An IPv4 VIP is served by the
pool's IPv4 members, an IPv6 VIP by its IPv6 members (no NAT64): a
family without members drops.  LEAST_CONNECTIONS is not served (the
provider refuses it for UDP pools): a stateless per-flow choice has no
connection counts to pick by.
"""

import hashlib
import ipaddress
import json
import math
import re
import socket
import subprocess
import threading

from oslo_log import log as logging

from amphora_agent.health import monitor as hm

LOG = logging.getLogger(__name__)

PROTOCOL = 'UDP'
TABLE_PREFIX = 'dsr_udp_'
USABLE = hm.USABLE
SELECTORS = {
    'ROUND_ROBIN': {4: 'numgen inc', 6: 'numgen inc'},
    'SOURCE_IP': {4: 'jhash ip saddr', 6: 'jhash ip6 saddr'},
    'SOURCE_IP_PORT': {4: 'jhash ip saddr . udp sport',
                       6: 'jhash ip6 saddr . udp sport'},
}
NOT_SERVED = {
    'LEAST_CONNECTIONS': 'pool lb_algorithm LEAST_CONNECTIONS is not served '
                         'for UDP on the L7 tier (allowed: ROUND_ROBIN, '
                         'SOURCE_IP, SOURCE_IP_PORT): nftables picks a '
                         'member per flow without connection counts',
}
_NFPROTO = {4: 'ip', 6: 'ip6'}


class NftError(RuntimeError):
    """nft refused a rule set or a command; the message holds its error."""


def ident(prefix, object_id):
    """An nftables identifier for an object id (letters, digits, "_")."""
    name = prefix + re.sub(r'[^A-Za-z0-9_]', '_', object_id)
    if len(name) > 64:   # ids are UUIDs; keep long ones unique and short
        name = name[:48] + hashlib.sha256(object_id.encode()).hexdigest()[
            :16]
    return name


def table_name(lb_id):
    return ident(TABLE_PREFIX, lb_id)


def udp_listeners(lb_doc):
    return [li for li in lb_doc['listeners'] if li['protocol'] == PROTOCOL]


def udp_pools(lb_doc):
    """The pools UDP listeners use (by id)."""
    wanted = {li.get('default_pool_id') for li in udp_listeners(lb_doc)}
    return {p['id']: p for p in lb_doc['pools'] if p['id'] in wanted}


def health_targets(lb_doc):
    """{member id: health Target} for the members of the UDP pools."""
    targets = {}
    for pool in udp_pools(lb_doc).values():
        spec = hm.MonitorSpec.from_octavia(pool.get('healthmonitor'))
        for m in pool['members']:
            targets[m['id']] = hm.Target(
                address=m.get('monitor_address') or m['address'],
                port=m.get('monitor_port') or m['protocol_port'],
                monitor=spec,
                admin_state_up=bool(m.get('admin_state_up', True)
                                    and pool.get('admin_state_up', True)))
    return targets


def member_status(member, pool, statuses):
    """A member's operating status without a health checker's word:
    OFFLINE when it or its pool is admin down, NO_MONITOR without an
    enabled monitor, otherwise the checker's status (ONLINE before its
    first probe decides, as HAProxy starts servers UP)."""
    if not (member.get('admin_state_up', True)
            and pool.get('admin_state_up', True)):
        return hm.OFFLINE
    monitor = pool.get('healthmonitor')
    if not monitor or not monitor.get('admin_state_up', True):
        return hm.NO_MONITOR
    return statuses.get(member['id'], hm.ONLINE)


def backends(pool, statuses):
    """[(member id, address, port), ...] the pool sends new flows to, a
    member repeated per weight: usable primaries, else usable backups."""
    usable = [m for m in pool['members']
              if m.get('weight', 1) > 0
              and member_status(m, pool, statuses) in USABLE]
    chosen = [m for m in usable if not m.get('backup')] \
        or [m for m in usable if m.get('backup')]
    if not chosen:
        return []
    divisor = math.gcd(*(m.get('weight', 1) for m in chosen))
    return [(m['id'], m['address'], m['protocol_port'])
            for m in chosen for _ in range(m.get('weight', 1) // divisor)]


def _family(address):
    return ipaddress.ip_address(address).version


def _element(address, port):
    return f'{address} . {port}'


def _set(items):
    return '{ ' + ', '.join(items) + ' }'


class Ruleset:
    """One load balancer's UDP listeners as an nftables table."""

    def __init__(self, lb_doc, statuses=None, snat=None):
        self.lb = lb_doc
        self.statuses = dict(statuses or {})
        self.snat = {f: str(a) for f, a in (snat or {}).items() if a}
        self.not_served = {}
        self.backends = {}      # listener id -> [(member, address, port)]
        self.counters = {}      # listener id -> {'in', 'out', 'new'} names
        self.vips = {}          # listener id -> {family: [addresses]}
        self.timeouts = {}      # ct timeout name -> seconds
        # What render() declared, for the next re-install to delete what
        # it no longer declares.
        self.chain_names = set()
        self.counter_names = set()
        self.timeout_names = set()

    def served(self):
        """Listeners the table serves (enabled, with a pool nftables can
        balance), recording why the others are not."""
        if not self.lb.get('admin_state_up', True):
            return []
        pools = {p['id']: p for p in self.lb['pools']}
        out = []
        for li in udp_listeners(self.lb):
            if not li.get('admin_state_up', True):
                continue
            pool = pools.get(li.get('default_pool_id'))
            if pool is not None and pool['lb_algorithm'] in NOT_SERVED:
                self.not_served[li['id']] = NOT_SERVED[pool['lb_algorithm']]
                continue
            out.append((li, pool))
        return out

    def render(self, previous=None):
        """The nft script, one transaction: the table created, deleted and
        defined again; or, replacing ``previous`` (the Ruleset installed
        in it), its rules flushed and defined again and what ``previous``
        declared and this one does not deleted -- counters and timeout
        policies this one declares too are kept as they are."""
        table = table_name(self.lb['id'])
        objects, filter_in, nat_in, nat_out, reply = [], [], [], [], []
        chains = []
        vips = {}
        for v in self.lb['vips']:
            vips.setdefault(_family(v['address']), []).append(v['address'])
        for li, pool in self.served():
            lid, port = li['id'], li['protocol_port']
            names = {k: ident(f'{k}_', lid) for k in ('in', 'out', 'new')}
            self.counters[lid] = names
            self.vips[lid] = vips
            objects += [self._counter(n) for n in names.values()]
            chain = ident('l_', lid)
            body = self._filter_body(li, names)
            timeout = self._timeout(pool, objects)
            members = backends(pool, self.statuses) if pool else []
            self.backends[lid] = members
            for family, addresses in sorted(vips.items()):
                proto = _NFPROTO[family]
                match = f'{proto} daddr {_set(addresses)} udp dport {port}'
                if timeout:
                    # On the new, not yet confirmed entry (after conntrack,
                    # before it is confirmed: the kernel ignores others).
                    filter_in.append(f'{match} ct timeout set '
                                     f'"{timeout}_{family}"')
                filter_in.append(f'{match} jump {chain}')
                fam_members = [(a, p) for _, a, p in members
                               if _family(a) == family]
                if not fam_members:
                    body.append(f'meta nfproto ipv{family} drop')
                    continue
                nat_in.append(f'{match} counter name "{names["new"]}" '
                              + self._dnat(pool, family, fam_members))
                original = (f'ct original {proto} daddr {_set(addresses)} '
                            f'ct original proto-dst {port}')
                source = self.snat.get(family)
                nat_out.append(
                    f'meta l4proto udp ct status dnat {original} '
                    + (f'snat {proto} to {source}' if source
                       else 'masquerade'))
                reply.append(f'meta l4proto udp ct direction reply '
                             f'{original} counter name "{names["out"]}"')
            body.append(f'counter name "{names["in"]}"')
            chains.append((chain, body))
        self.chain_names = {name for name, _ in chains}
        if previous is None:
            lines = [f'table inet {table} {{', '}',
                     f'delete table inet {table}', f'table inet {table} {{']
        else:
            lines = [f'table inet {table} {{', '}',
                     f'flush table inet {table}', f'table inet {table} {{']
        lines += [f'    {o}' for o in objects]
        for name, hook, kind, priority, rules in (
                ('filter_in', 'prerouting', 'filter', 'mangle', filter_in),
                ('nat_in', 'prerouting', 'nat', 'dstnat', nat_in),
                ('nat_out', 'postrouting', 'nat', 'srcnat', nat_out),
                ('reply', 'forward', 'filter', 'filter', reply)):
            lines.append(f'    chain {name} {{')
            lines.append(f'        type {kind} hook {hook} priority '
                         f'{priority}; policy accept;')
            lines += [f'        {r}' for r in rules]
            lines.append('    }')
        for name, body in chains:
            lines.append(f'    chain {name} {{')
            lines += [f'        {r}' for r in body]
            lines.append('    }')
        lines.append('}')
        if previous is not None:
            # After the flush nothing refers to them any more.
            for kind, mine, theirs in (
                    ('chain', self.chain_names, previous.chain_names),
                    ('counter', self.counter_names, previous.counter_names),
                    ('ct timeout', self.timeout_names,
                     previous.timeout_names)):
                lines += [f'delete {kind} inet {table} {name}'
                          for name in sorted(theirs - mine)]
        return '\n'.join(lines) + '\n'

    def _counter(self, name):
        self.counter_names.add(name)
        return f'counter {name} {{ packets 0 bytes 0 }}'

    def _filter_body(self, li, names):
        body = []
        cidrs = li.get('allowed_cidrs') or []
        if cidrs:
            by_family = {4: [], 6: []}
            for c in cidrs:
                by_family[ipaddress.ip_network(c, strict=False).version] \
                    .append(c)
            for family, nets in by_family.items():
                proto = _NFPROTO[family]
                body.append(f'{proto} saddr != {_set(nets)} drop' if nets
                            else f'meta nfproto ipv{family} drop')
        limit = li.get('connection_limit')
        if limit is not None and limit >= 0:
            body.append(f'ct state new ct count over {limit} drop')
        return body

    def _timeout(self, pool, objects):
        """The name (without the family suffix) of the pool's conntrack
        timeout policy, declared once in ``objects``; None without one."""
        sp = (pool or {}).get('session_persistence') or {}
        if sp.get('type') != 'SOURCE_IP' or not sp.get('persistence_timeout'):
            return None
        seconds = sp['persistence_timeout']
        name = ident('pt_', f'{pool["id"]}_{seconds}')
        if name not in self.timeouts:
            self.timeouts[name] = seconds
            for family in (4, 6):
                self.timeout_names.add(f'{name}_{family}')
                objects.append(self._timeout_object(
                    f'{name}_{family}', family, seconds))
        return name

    @staticmethod
    def _timeout_object(name, family, seconds):
        # Both states: the kernel keeps a flow "unreplied" (its timeout)
        # until it lived two seconds, so a request and its answer never
        # reach the "replied" one.
        return (f'ct timeout {name} {{ protocol udp; l3proto '
                f'{_NFPROTO[family]}; policy = {{ unreplied : '
                f'{seconds}, replied : {seconds} '
                f'}}; }}')

    @staticmethod
    def _dnat(pool, family, members):
        sp = pool.get('session_persistence') or {}
        algorithm = 'SOURCE_IP' if sp.get('type') == 'SOURCE_IP' \
            else pool['lb_algorithm']
        selector = SELECTORS[algorithm][family]
        if family == 6:
            entries = [f'{i} : [{a}] . {p}'
                       for i, (a, p) in enumerate(members)]
        else:
            entries = [f'{i} : {_element(a, p)}'
                       for i, (a, p) in enumerate(members)]
        # Without a seed the kernel draws one per rule: every L7 SE, and
        # every re-install, would hash a client to another member.
        seed = '' if selector.startswith('numgen') else \
            f' seed 0x{hashlib.sha256(pool["id"].encode()).hexdigest()[:8]}'
        return (f'dnat {_NFPROTO[family]} to {selector} mod {len(members)}'
                f'{seed} map {_set(entries)}')


class Nft:
    """The nft command (a separate process per call, as kube-proxy's
    nftables mode does)."""

    def __init__(self, binary='nft', timeout=30.0):
        self.binary, self.timeout = binary, timeout

    def run(self, args, script=None):
        try:
            proc = subprocess.run([self.binary, *args], input=script,
                                  capture_output=True, text=True,
                                  timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NftError(f'{self.binary} {" ".join(args)}: {exc}') \
                from None
        if proc.returncode != 0:
            raise NftError('nft rejected the UDP rule set: '
                           + ' '.join(proc.stderr.split()))
        return proc.stdout

    def check(self, script):
        self.run(['-c', '-f', '-'], script)

    def install(self, script):
        self.run(['-f', '-'], script)

    def tables(self):
        """Names of this engine's tables (inet family, our prefix)."""
        data = json.loads(self.run(['-j', 'list', 'tables']) or '{}')
        return sorted(t['table']['name'] for t in data.get('nftables', ())
                      if 'table' in t and t['table']['family'] == 'inet'
                      and t['table']['name'].startswith(TABLE_PREFIX))

    def delete(self, table):
        self.run(['delete', 'table', 'inet', table])

    def counters(self, table):
        """{counter name: (packets, bytes)} of a table."""
        data = json.loads(self.run(['-j', 'list', 'counters', 'table',
                                    'inet', table]) or '{}')
        return {c['counter']['name']: (c['counter']['packets'],
                                       c['counter']['bytes'])
                for c in data.get('nftables', ()) if 'counter' in c}


class Conntrack:
    """Flows of a listener in the conntrack table (pyroute2's ctnetlink
    socket, one per family: a dump covers its nfgen family only).  The
    kernel filters by protocol; the address and port are compared here
    (pyroute2 0.9's IPv6 address filter is refused with EINVAL)."""

    def _each(self, vips, port, action):
        from pyroute2 import conntrack
        wanted = {ipaddress.ip_address(v) for v in vips}
        n = 0
        for family, af in ((4, socket.AF_INET), (6, socket.AF_INET6)):
            if not any(v.version == family for v in wanted):
                continue
            with conntrack.Conntrack(nfgen_family=af) as ct:
                for entry in list(ct.dump_entries(
                        tuple_orig=conntrack.NFCTAttrTuple(
                            family=af, proto=socket.IPPROTO_UDP))):
                    orig = entry.tuple_orig
                    if orig.dport == port and \
                            ipaddress.ip_address(orig.daddr) in wanted:
                        n += action(ct, entry)
        return n

    def count(self, vips, port):
        return self._each(vips, port, lambda ct, entry: 1)

    def forget(self, vips, port, members):
        """Delete the listener's flows whose reply comes from one of
        ``members`` ({(address, port)}); returns how many."""
        def drop(ct, entry):
            reply = entry.tuple_reply
            if (str(ipaddress.ip_address(reply.saddr)), reply.sport) \
                    not in members:
                return 0
            ct.delete(entry)
            return 1
        return self._each(vips, port, drop)


class UdpService:
    """The UDP listeners of every load balancer of the applied document:
    their tables, the health checker of their members, statistics.

    Health changes re-install the table of the member's load balancer at
    once (from the checker's notifier thread, under the service lock).
    ``adopt_tables``: tables of ours this service did not install (a
    previous engine's) are removed by the first apply and by stop();
    without it only the tables it installed are touched."""

    def __init__(self, nft=None, conntrack=None, snat=None, checker=None,
                 adopt_tables=True):
        self.nft = nft or Nft()
        self._sweep = adopt_tables
        self.conntrack = conntrack or Conntrack()
        self.snat = dict(snat or {})
        self.docs = {}            # lb id -> lb document (with UDP)
        self.rulesets = {}        # lb id -> installed Ruleset
        self._lock = threading.RLock()
        self._checker = checker
        self._started = False

    # -- health --------------------------------------------------------

    @property
    def checker(self):
        if self._checker is None:
            self._checker = hm.HealthChecker(
                on_change=self._health_changed,
                source4=self.snat.get(4), source6=self.snat.get(6))
        return self._checker

    def _health_changed(self, member_id, old, new):
        with self._lock:
            for lb_id, lb in self.docs.items():
                if any(m['id'] == member_id
                       for p in udp_pools(lb).values()
                       for m in p['members']):
                    LOG.info('UDP member %s of %s: %s -> %s', member_id,
                             lb_id, old, new)
                    try:
                        self._install(lb)
                    except NftError as exc:
                        LOG.error('UDP rules of %s: %s', lb_id, exc)

    def supervise(self):
        """Restart the health checker's threads if one died (the L7
        agent's worker calls this every round, as the SE agent does)."""
        return self._started and self._checker.supervise()

    def _sync_targets(self):
        targets = {}
        for lb_id, lb in self.docs.items():
            try:
                targets.update(health_targets(lb))
            except hm.InvalidMonitor as exc:
                # Its members stay in the maps, unchecked.
                LOG.error('UDP health checks of %s: %s', lb_id, exc)
        self.checker.set_targets(targets)
        if targets and not self._started:
            self.checker.start()
            self._started = True

    # -- apply ---------------------------------------------------------

    def apply(self, lb_docs, snat=None):
        """Serve the UDP listeners of ``lb_docs`` (the load balancers of
        the document); returns {lb id: {'error': reason or None,
        'listeners': {listener id: reason not served}}} for those with UDP
        listeners.  Tables of load balancers without any are removed."""
        with self._lock:
            if snat is not None:
                self.snat = {f: str(a) for f, a in snat.items() if a}
            wanted = {lb['id']: lb for lb in lb_docs if udp_listeners(lb)}
            previous = self.docs
            self.docs = dict(wanted)
            result = {}
            for lb_id, lb in wanted.items():
                try:
                    self._install(lb)
                    result[lb_id] = {'error': None, 'listeners': dict(
                        self.rulesets[lb_id].not_served)}
                except NftError as exc:
                    # Keep serving what was installed.
                    if lb_id in previous:
                        self.docs[lb_id] = previous[lb_id]
                    else:
                        self.docs.pop(lb_id)
                    result[lb_id] = {'error': str(exc), 'listeners': {}}
            self._sync_targets()
            stale = {table_name(i) for i in set(self.rulesets)
                     - set(self.docs)}
            if self._sweep:
                stale |= self._present()
                self._sweep = False
            for table in stale - {table_name(i) for i in self.docs}:
                try:
                    self.nft.delete(table)
                except NftError as exc:
                    LOG.error('UDP table %s not removed: %s', table, exc)
            for lb_id in set(self.rulesets) - set(self.docs):
                self.rulesets.pop(lb_id)
            return result

    def _install(self, lb):
        old = self.rulesets.get(lb['id'])
        ruleset = Ruleset(lb, self._statuses(), self.snat)
        script = ruleset.render(previous=old)
        try:
            self.nft.check(script)
            self.nft.install(script)
        except NftError as exc:
            if old is None:
                raise
            ruleset = Ruleset(lb, self._statuses(), self.snat)
            script = ruleset.render()
            self.nft.check(script)    # a refused rule set stops here
            # The table is not what ``old`` says (removed or changed by
            # hand): define it whole; its counters start again.
            LOG.warning('UDP table of %s not updated in place (%s): '
                        'replacing it', lb['id'], exc)
            self.nft.install(script)
        self.rulesets[lb['id']] = ruleset
        if old is not None:
            self._forget_departed(old, ruleset)

    def _forget_departed(self, old, new):
        """Flows of members that left a listener's map move on."""
        for lid, members in old.backends.items():
            kept = {(a, p) for _, a, p in new.backends.get(lid, ())}
            gone = {(a, p) for _, a, p in members} - kept
            vips = [a for addrs in old.vips.get(lid, {}).values()
                    for a in addrs]
            port = next(li['protocol_port'] for li in udp_listeners(old.lb)
                        if li['id'] == lid)
            if gone and vips:
                try:
                    n = self.conntrack.forget(vips, port, gone)
                    LOG.info('UDP listener %s: %d flow(s) of %s forgotten',
                             lid, n, sorted(gone))
                except Exception:  # noqa: BLE001 -- flows expire anyway
                    LOG.exception('UDP listener %s: conntrack cleanup',
                                  lid)

    def _statuses(self):
        return {} if self._checker is None else self._checker.statuses()

    # -- state ---------------------------------------------------------

    def _present(self):
        """Our tables in the kernel; none when nft cannot tell (an L7 SE
        without nftables serves HTTP alone)."""
        try:
            return set(self.nft.tables())
        except NftError as exc:
            LOG.warning('cannot list the UDP tables: %s', exc)
            return set()

    def installed(self, lb_id):
        return lb_id in self.rulesets and \
            table_name(lb_id) in self._present()

    def stats(self):
        """{lb id: {'listeners': {id: {...}}, 'pools': {id: {...}}}} in
        the shape of stats.summarize (HAProxy's)."""
        out = {}
        with self._lock:
            rulesets = dict(self.rulesets)
            statuses = self._statuses()
        for lb_id, ruleset in rulesets.items():
            try:
                counters = self.nft.counters(table_name(lb_id))
            except NftError as exc:
                out[lb_id] = {'error': str(exc)}
                continue
            listeners = {}
            for li in udp_listeners(ruleset.lb):
                names = ruleset.counters.get(li['id'])
                if names is None:
                    continue
                vips = [a for addrs in ruleset.vips[li['id']].values()
                        for a in addrs]
                try:
                    active = self.conntrack.count(vips, li['protocol_port'])
                except Exception:  # noqa: BLE001 -- counters still count
                    LOG.exception('conntrack count of %s', li['id'])
                    active = 0
                listeners[li['id']] = {
                    'status': 'OPEN', 'operating_status': 'ONLINE',
                    'stats': {
                        'bytes_in': counters.get(names['in'], (0, 0))[1],
                        'bytes_out': counters.get(names['out'], (0, 0))[1],
                        'active_connections': active,
                        'total_connections':
                            counters.get(names['new'], (0, 0))[0],
                        'request_errors': 0}}
            pools = {}
            for pool in udp_pools(ruleset.lb).values():
                members = {m['id']: member_status(m, pool, statuses)
                           for m in pool['members']}
                serving = any(s in USABLE for s in members.values())
                pools[pool['id']] = {
                    'status': 'UP' if serving else 'DOWN',
                    'operating_status': 'ONLINE' if serving else 'ERROR',
                    'members': {mid: {'status': s, 'operating_status': s}
                                for mid, s in members.items()}}
            out[lb_id] = {'listeners': listeners, 'pools': pools}
        return out

    def stop(self, remove=True):
        """Stop health checking; remove every table of ours (remove)."""
        if self._checker is not None and self._started:
            self._checker.stop()
            self._started = False
        if remove:
            with self._lock:
                ours = {table_name(i) for i in self.rulesets}
                if self._sweep or ours:
                    present = self._present()
                    for table in present if self._sweep else present & ours:
                        self.nft.delete(table)
                self.docs.clear()
                self.rulesets.clear()
