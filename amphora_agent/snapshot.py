"""The controller's configuration snapshot for one SE group (schema v1).

docs/agent-protocol.md describes the format; dsr_wire/schema.py
defines every object.  parse() validates object by object: an object the
SE cannot run is left out alone and named in Snapshot.rejected
({kind: {id: reason}}, kinds as Octavia's status document has them) while
everything else is kept.  Only a problem with the document itself
(not an object, schema_version, se_group, generation, load_balancers not a
list) raises InvalidSnapshot, and the agent keeps running what it had.

What a rejection means: a rejected load balancer is left out whole; a
rejected listener is left out; a rejected pool leaves its listener without
a pool; a rejected health monitor leaves its pool unmonitored; a rejected
member is left out of its pool.  An object without a usable id cannot be
named, so its closest parent with an id is rejected instead.
"""

import dataclasses
import ipaddress
import marshal
from typing import Optional

from amphora_agent import gcpause
from dsr_wire import auth
from dsr_wire import schema

SCHEMA_VERSION = schema.SCHEMA_VERSION
PROTOCOLS = schema.PROTOCOLS
ALGORITHMS = schema.ALGORITHMS
ENCAPS = schema.ENCAPS
MONITOR_TYPES = schema.MONITOR_TYPES
HTTP_METHODS = schema.HTTP_METHODS

KINDS = ('loadbalancers', 'listeners', 'pools', 'members', 'healthmonitors')


class InvalidSnapshot(ValueError):
    """The snapshot is rejected as a whole; the message names the field."""


@dataclasses.dataclass(frozen=True, slots=True)
class HealthMonitor:
    id: str
    type: str
    delay: int
    timeout: int
    max_retries: int
    max_retries_down: int
    http_method: str = 'GET'
    url_path: str = '/'
    expected_codes: str = '200'
    admin_state_up: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    id: str
    address: ipaddress._BaseAddress
    protocol_port: int
    weight: int = 1
    admin_state_up: bool = True
    backup: bool = False
    monitor_port: Optional[int] = None
    monitor_address: Optional[ipaddress._BaseAddress] = None


@dataclasses.dataclass(frozen=True, slots=True)
class Pool:
    id: str
    algorithm: str
    encap: str
    admin_state_up: bool
    members: tuple
    health_monitor: Optional[HealthMonitor]


@dataclasses.dataclass(frozen=True, slots=True)
class Listener:
    id: str
    protocol: str
    port: int
    admin_state_up: bool
    allowed_cidrs: Optional[tuple]  # ip_network tuple; None: anyone
    pool: Optional[Pool]
    connection_limit: int = -1      # -1: no limit (Octavia's default)
    timeout_client_data: int = 0    # ms; 0: no idle timeout


@dataclasses.dataclass(frozen=True, slots=True)
class LoadBalancer:
    id: str
    admin_state_up: bool
    vips: tuple
    listeners: tuple


@dataclasses.dataclass(frozen=True, eq=False)
class Snapshot:
    se_group: str
    generation: int
    load_balancers: tuple
    # {kind: {object id: reason}} of the objects left out.
    rejected: dict = dataclasses.field(default_factory=dict)

    def members(self):
        """Every member with its pool and monitor: (member, pool, lb)."""
        for lb in self.load_balancers:
            for listener in lb.listeners:
                if listener.pool:
                    for member in listener.pool.members:
                        yield member, listener.pool, lb

    def rejected_count(self):
        return sum(len(v) for v in self.rejected.values())


class _Rejected(dict):
    """{kind: {id: reason}}; the first reason for an object wins."""

    def add(self, kind, obj_id, reason):
        self.setdefault(kind, {}).setdefault(obj_id, reason)

    def merge(self, other):
        for kind, items in other.items():
            for obj_id, reason in items.items():
                self.add(kind, obj_id, reason)


class _Unnamed(schema.Invalid):
    """A child without a usable id: its parent is rejected."""


def _usable_id(obj):
    if isinstance(obj, dict):
        value = obj.get('id')
        if isinstance(value, str) and 0 < len(value) <= 255:
            return value
    return None


def _require_id(obj, where):
    obj_id = _usable_id(obj)
    if obj_id is None:
        value = obj.get('id') if isinstance(obj, dict) else obj
        raise _Unnamed(where, message=(
            f'{where} has no usable id ({value!r}; allowed: '
            f'{schema.ID["description"]}), so it is rejected with it'))
    return obj_id


def _monitor(obj):
    schema.check_health_monitor(obj)
    return HealthMonitor(
        id=obj['id'], type=obj['type'], delay=obj['delay'],
        timeout=obj['timeout'], max_retries=obj['max_retries'],
        max_retries_down=obj.get('max_retries_down',
                                 schema.DEFAULT_MAX_RETRIES_DOWN),
        http_method=obj.get('http_method', schema.DEFAULT_HTTP_METHOD),
        url_path=obj.get('url_path', schema.DEFAULT_URL_PATH),
        expected_codes=obj.get('expected_codes',
                               schema.DEFAULT_EXPECTED_CODES),
        admin_state_up=obj.get('admin_state_up', True))


def _member(obj, vips):
    address, monitor_address = schema.check_member(obj, vips=vips)
    return Member(
        id=obj['id'], address=address,
        protocol_port=obj['protocol_port'], weight=obj.get('weight', 1),
        admin_state_up=obj.get('admin_state_up', True),
        backup=obj.get('backup', False),
        monitor_port=obj.get('monitor_port'),
        monitor_address=monitor_address)


def _pool(obj, vips, rejected):
    schema.check_pool(obj)
    monitor = None
    if obj.get('health_monitor') is not None:
        hm_id = _require_id(obj['health_monitor'], 'health_monitor')
        try:
            monitor = _monitor(obj['health_monitor'])
        except schema.Invalid as exc:
            rejected.add('healthmonitors', hm_id,
                         f'health monitor {hm_id}: {exc}')
    members, by_address = [], {}
    for i, mobj in enumerate(obj['members']):
        member_id = _require_id(mobj, f'members[{i}]')
        try:
            member = _member(mobj, vips)
        except schema.Invalid as exc:
            rejected.add('members', member_id, f'member {member_id}: {exc}')
            continue
        other = by_address.get(member.address)
        if other is not None:
            rejected.add('members', member_id, (
                f'member {member_id}: address {member.address} is also '
                f'member {other} of pool {obj["id"]} (DSR members are '
                'addresses: the port cannot differ)'))
            continue
        by_address[member.address] = member_id
        members.append(member)
    return Pool(id=obj['id'], algorithm=obj['algorithm'],
                encap=obj.get('encap', 'ipip'),
                admin_state_up=obj.get('admin_state_up', True),
                members=tuple(members), health_monitor=monitor)


def _listener(obj, vips, rejected):
    cidrs = schema.check_listener(obj)
    pool = None
    if obj.get('pool') is not None:
        pool_id = _require_id(obj['pool'], 'pool')
        local = _Rejected()
        try:
            pool = _pool(obj['pool'], vips, local)
        except schema.Invalid as exc:
            rejected.add('pools', pool_id, f'pool {pool_id}: {exc}')
        else:
            rejected.merge(local)
    return Listener(
        id=obj['id'], protocol=obj['protocol'], port=obj['port'],
        admin_state_up=obj.get('admin_state_up', True),
        allowed_cidrs=cidrs, pool=pool,
        connection_limit=(-1 if obj.get('connection_limit') is None
                          else obj['connection_limit']),
        timeout_client_data=obj.get('timeout_client_data') or 0)


def _load_balancer(obj):
    """(LoadBalancer, rejected); raises schema.Invalid when the load
    balancer itself is rejected."""
    rejected = _Rejected()
    vips = schema.check_load_balancer(obj)
    listeners, by_port = [], {}
    for i, lobj in enumerate(obj['listeners']):
        listener_id = _require_id(lobj, f'listeners[{i}]')
        local = _Rejected()
        try:
            listener = _listener(lobj, vips, local)
        except schema.Invalid as exc:
            rejected.add('listeners', listener_id,
                         f'listener {listener_id}: {exc}')
            continue
        rejected.merge(local)
        key = (listener.protocol, listener.port)
        if key in by_port:
            rejected.add('listeners', listener_id, (
                f'listener {listener_id}: {listener.protocol} port '
                f'{listener.port} is also listener {by_port[key]} of load '
                f'balancer {obj["id"]}'))
            continue
        by_port[key] = listener_id
        listeners.append(listener)
    lb = LoadBalancer(id=obj['id'],
                      admin_state_up=obj.get('admin_state_up', True),
                      vips=vips, listeners=tuple(listeners))
    return lb, rejected


def _checked_load_balancer(obj, index):
    """(LoadBalancer or None, rejected) -- never raises."""
    lb_id = _usable_id(obj)
    try:
        if lb_id is None:
            _require_id(obj, f'load_balancers[{index}]')
        return _load_balancer(obj)
    except schema.Invalid as exc:
        rejected = _Rejected()
        name = lb_id or f'load_balancers[{index}]'
        rejected.add('loadbalancers', name, f'load balancer {name}: {exc}')
        return None, rejected


def without(snap, rejections, _drop=None):
    """The snapshot with the objects of rejections ({kind: {id: reason}})
    left out and named in its rejected map.  Unchanged load balancers keep
    their identity (the planner's memo relies on it).  _drop: the parsed
    objects to leave out instead of matching ids (for duplicate ids)."""
    if not any(rejections.values()):
        return snap
    if _drop is None:
        rej = {kind: rejections.get(kind, {}) for kind in KINDS}

        def gone(kind, obj):
            return obj.id in rej[kind]
    else:
        def gone(kind, obj):
            return id(obj) in _drop
    lbs = []
    for lb in snap.load_balancers:
        if gone('loadbalancers', lb):
            continue
        listeners = []
        for lst in lb.listeners:
            if gone('listeners', lst):
                continue
            pool = lst.pool
            if pool is not None and gone('pools', pool):
                pool = None
            if pool is not None:
                members = tuple(m for m in pool.members
                                if not gone('members', m))
                monitor = pool.health_monitor
                if monitor is not None and gone('healthmonitors', monitor):
                    monitor = None
                if len(members) != len(pool.members) or monitor is not \
                        pool.health_monitor:
                    pool = dataclasses.replace(pool, members=members,
                                               health_monitor=monitor)
            listeners.append(lst if pool is lst.pool
                             else dataclasses.replace(lst, pool=pool))
        listeners = tuple(listeners)
        same = len(listeners) == len(lb.listeners) and all(
            a is b for a, b in zip(listeners, lb.listeners))
        lbs.append(lb if same
                   else dataclasses.replace(lb, listeners=listeners))
    merged = _Rejected()
    merged.merge(snap.rejected)
    merged.merge(rejections)
    return Snapshot(se_group=snap.se_group, generation=snap.generation,
                    load_balancers=tuple(lbs), rejected=dict(merged))


def _cross_checks(lbs):
    """Conflicts between load balancers and duplicate ids: the later
    object (in snapshot order) is rejected."""
    rejected, drop = _Rejected(), set()
    owners, seen = {}, {kind: set() for kind in KINDS}

    def reject(kind, obj, reason):
        rejected.add(kind, obj.id, reason)
        drop.add(id(obj))
    for lb in lbs:
        if lb.id in seen['loadbalancers']:
            reject('loadbalancers', lb,
                   f'load balancer {lb.id}: the id is used twice')
            continue
        seen['loadbalancers'].add(lb.id)
        for lst in lb.listeners:
            if lst.id in seen['listeners']:
                reject('listeners', lst,
                       f'listener {lst.id}: the id is used twice')
                continue
            clash = next(((vip, owners[(vip, lst.protocol, lst.port)])
                          for vip in lb.vips
                          if (vip, lst.protocol, lst.port) in owners), None)
            if clash:
                vip, (other, other_lb) = clash
                reject('listeners', lst, (
                    f'listener {lst.id}: {lst.protocol} {vip} port '
                    f'{lst.port} is also served by listener {other} of '
                    f'load balancer {other_lb}'))
                continue
            seen['listeners'].add(lst.id)
            for vip in lb.vips:
                owners[(vip, lst.protocol, lst.port)] = (lst.id, lb.id)
            pool = lst.pool
            if pool is None:
                continue
            if pool.id in seen['pools']:
                reject('pools', pool, f'pool {pool.id}: the id is used twice')
                continue
            seen['pools'].add(pool.id)
            monitor = pool.health_monitor
            if monitor is not None:
                if monitor.id in seen['healthmonitors']:
                    reject('healthmonitors', monitor,
                           f'health monitor {monitor.id}: the id is used '
                           'twice')
                seen['healthmonitors'].add(monitor.id)
            for member in pool.members:
                if member.id in seen['members']:
                    reject('members', member,
                           f'member {member.id}: the id is used twice')
                seen['members'].add(member.id)
    return rejected, drop


def _claims(lb):
    """What a parsed load balancer claims snapshot-wide, as (kind, key):
    its objects' ids and its (VIP, protocol, port) pairs; a claim made
    twice is what _cross_checks rejects."""
    claims = [('loadbalancers', lb.id)]
    for lst in lb.listeners:
        claims.append(('listeners', lst.id))
        claims.extend(('vips', (vip, lst.protocol, lst.port))
                      for vip in lb.vips)
        pool = lst.pool
        if pool is not None:
            claims.append(('pools', pool.id))
            if pool.health_monitor is not None:
                claims.append(('healthmonitors', pool.health_monitor.id))
            claims.extend(('members', m.id) for m in pool.members)
    return tuple(claims)


def _digest(obj):
    """A load balancer's document as bytes, equal for equal documents (of
    one controller: the same key order): a sixth of the memory of the
    dicts, so the received document is not kept.  Unlike ==, it tells 1
    from True and 1.0.

    marshal version 4 writes a repeated object (the member dicts' keys,
    shared by the JSON decoder) once and refers back to it: 40 % less CPU
    than version 0 at 10,000 load balancers.  Its bytes also depend on the
    objects (which are shared, which interned), so equal documents built
    differently may differ -- a needless re-parse, never a missed change:
    equal bytes load as equal values."""
    try:
        return marshal.dumps(obj, 4)
    except ValueError:      # not JSON data: never equal, parsed each time
        return None


class _Entry:
    """What parsing a load balancer's document gave, and its digest."""
    __slots__ = ('digest', 'lb', 'rejected')

    def __init__(self, obj, index, digest):
        self.digest = digest
        self.lb, self.rejected = _checked_load_balancer(obj, index)

    def claims(self):
        return _claims(self.lb) if self.lb is not None else ()


class Parser:
    """parse() that re-does only the load balancers that changed.

    A new generation usually changes one object among thousands; comparing
    a load balancer's document with the previous one is far cheaper than
    validating it again.  The snapshot-wide checks (duplicate ids, a VIP
    port served twice) keep a count of every claim: while no claim is
    made twice, a generation moves only the counts of the load balancers
    it changed; otherwise the checks run in full, in snapshot order.
    """

    def __init__(self):
        self._memo = {}              # load balancer id -> _Entry
        # A packed load balancer's line (dsr_wire.auth.pack) -> (id,
        # _Entry): an unchanged one is found without decoding it.
        self._texts = {}
        # {kind: {key: number of claims}}, and the claims made twice.
        self._counts = {kind: {} for kind in KINDS + ('vips',)}
        self._twice = set()

    def _count(self, claims, step):
        counts, twice = self._counts, self._twice
        for kind, key in claims:
            of_kind = counts[kind]
            n = of_kind.get(key, 0) + step
            if n > 0:
                of_kind[key] = n
            else:
                del of_kind[key]
            if n > 1:
                twice.add((kind, key))
            else:
                twice.discard((kind, key))

    def parse(self, document):
        try:
            with gcpause.paused():
                return self._parse(document)
        except InvalidSnapshot:
            raise
        except BaseException:
            # The counts may be half moved: start again from nothing.
            self.__init__()
            raise

    def _parse(self, document):
        try:
            schema.check_document(document)
        except schema.Invalid as exc:
            raise InvalidSnapshot(str(exc)) from None
        memo, fresh = self._memo, {}
        texts, fresh_texts = self._texts, {}
        rejected, lbs, repeated = _Rejected(), [], False
        for i, obj in enumerate(document['load_balancers']):
            text = None
            if isinstance(obj, str):
                # Packed: the line is its own digest.
                text, hit = obj, texts.get(obj)
                if hit is not None and hit[0] not in fresh:
                    key, entry = hit
                    fresh[key], fresh_texts[text] = entry, hit
                    if entry.rejected:
                        rejected.merge(entry.rejected)
                    if entry.lb is not None:
                        lbs.append(entry.lb)
                    continue
                try:
                    obj = auth.unpack_line(text)
                except ValueError:
                    pass        # a string: rejected as not an object
            key = _usable_id(obj)
            if key is None:
                # Rejected whole (no id to name it by): claims nothing.
                entry = _Entry(obj, i, None)
            elif key in fresh:
                # A second load balancer with this id: not counted, the
                # full checks reject it.
                entry, repeated = _Entry(obj, i, None), True
            else:
                entry = memo.get(key)
                digest = text if text is not None else _digest(obj)
                if entry is None or digest is None \
                        or entry.digest != digest:
                    if entry is not None:
                        self._count(entry.claims(), -1)
                    entry = _Entry(obj, i, digest)
                    self._count(entry.claims(), 1)
                fresh[key] = entry
                if text is not None:
                    fresh_texts[text] = (key, entry)
            if entry.rejected:
                rejected.merge(entry.rejected)
            if entry.lb is not None:
                lbs.append(entry.lb)
        for key in memo.keys() - fresh.keys():
            self._count(memo[key].claims(), -1)
        self._memo, self._texts = fresh, fresh_texts
        snap = Snapshot(se_group=document['se_group'],
                        generation=document['generation'],
                        load_balancers=tuple(lbs), rejected=dict(rejected))
        if not repeated and not self._twice:
            return snap
        rejected, drop = _cross_checks(snap.load_balancers)
        return without(snap, rejected, _drop=drop)


def parse(document, _lb=None):
    """Validate a snapshot document (dict); returns a Snapshot whose
    rejected map names what was left out.  InvalidSnapshot only for the
    document's own fields."""
    _lb = _lb or _checked_load_balancer
    try:
        schema.check_document(document)
    except schema.Invalid as exc:
        raise InvalidSnapshot(str(exc)) from None
    rejected = _Rejected()
    lbs = []
    for i, obj in enumerate(document['load_balancers']):
        lb, local = _lb(obj, i)
        rejected.merge(local)
        if lb is not None:
            lbs.append(lb)
    snap = Snapshot(se_group=document['se_group'],
                    generation=document['generation'],
                    load_balancers=tuple(lbs), rejected=dict(rejected))
    rejected, drop = _cross_checks(snap.load_balancers)
    return without(snap, rejected, _drop=drop)
