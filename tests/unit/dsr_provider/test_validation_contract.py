"""Anything the provider accepts, the agents accept.

A grid of boundary values for health monitors and members goes through
dsr_provider.validation exactly as the driver calls it; every accepted one
is stored by the controller's real Store (SQLite), turned into the agents'
snapshot document, parsed by the agent's parser and handed to the health
checker's MonitorSpec / Target: nothing may be rejected on the way.  The
refused ones must be refused for a reason the agent shares (checked by
feeding the same values to the parser directly).
"""

import itertools

from octavia_lib.api.drivers import exceptions
import pytest

from amphora_agent import service
from amphora_agent import snapshot
from dsr_provider.controller import db as db_mod
from dsr_provider.controller import store as store_mod
from dsr_provider import octavia_lookup
from dsr_provider import payloads
from dsr_provider import validation
from dsr_wire import schema
from tests.unit.dsr_provider import fakes

MONITOR_TYPES = ['TCP', 'HTTP', 'HTTPS', 'PING', 'UDP-CONNECT', 'TLS-HELLO',
                 'SCTP', 'http']
DELAY_TIMEOUT = [(0, 0), (1, 1), (1, 2), (2, 1), (86400, 86400),
                 (86401, 1), (5, 3), (3, 5), (1, 0)]
RETRIES = [(0, 3), (1, 1), (10, 10), (11, 3), (3, 0), (3, 11), (3, None)]
METHODS = list(schema.HTTP_METHODS) + ['FETCH', 'get', None]
PATHS = ['/', '/healthz', '/a?b=c', '/a%20b', '/a b', 'x', '/a\tb', '/\x7f',
         '/\u00fc', None]
CODES = ['200', '200,202', '200, 202', '200 ,202', '200-204', '100', '599',
         '100-599', '200-204,206', '999', '099', '600', '204-200', '20',
         '200,\t202', '2xx', '', None]

ADDRESSES = ['198.19.1.2', '2001:db8:2::2', '2001:DB8:2::3', '10.0.0.1',
             '1.2.3.4', '192.0.2.11', '127.0.0.1', '::1', '224.0.0.5',
             'ff02::1', '0.0.0.0', '::', '0.1.2.3', '169.254.0.1',
             'fe80::1', '255.255.255.255', '240.0.0.1', '::ffff:198.19.1.2',
             '192.0.2.10', '2001:db8:f::10', 'example.com']
WEIGHTS = [0, 1, 256, 257, -1, None]
MONITOR_PORTS = [None, 1, 65535, 0, 65536]
PORTS = [80, 0, 65536]


def _monitor_grid():
    base = dict(type='HTTP', delay=5, timeout=3, max_retries=3,
                max_retries_down=3, http_method='GET', url_path='/',
                expected_codes='200')
    for kind in MONITOR_TYPES:
        yield dict(base, type=kind)
        for delay, timeout in DELAY_TIMEOUT:
            yield dict(base, type=kind, delay=delay, timeout=timeout)
        for up, down in RETRIES:
            yield dict(base, type=kind, max_retries=up, max_retries_down=down)
        for method in METHODS:
            yield dict(base, type=kind, http_method=method)
        for path in PATHS:
            yield dict(base, type=kind, url_path=path)
        for codes in CODES:
            yield dict(base, type=kind, expected_codes=codes)


def _member_grid():
    for address in ADDRESSES:
        yield dict(address=address)
        yield dict(address='198.19.1.9', monitor_address=address)
    for weight, backup in itertools.product(WEIGHTS, (False, True)):
        yield dict(address='198.19.1.9', weight=weight, backup=backup)
    for port in MONITOR_PORTS:
        yield dict(address='198.19.1.9', monitor_port=port)
    for port in PORTS:
        yield dict(address='198.19.1.9', protocol_port=port)


def _accepted(func, *args):
    try:
        func(*args)
    except exceptions.UnsupportedOptionError:
        return False
    return True


VIPS = ('192.0.2.10', '2001:db8:f::10')


@pytest.fixture
def store(tmp_path):
    url = f'sqlite:///{tmp_path}/controller.db'
    db_mod.upgrade(url)
    return store_mod.Store(db_mod.Database(url), 'g1')


def _store_graph(store, pools):
    """One load balancer (the VIPs above) with a listener per pool, stored
    through the controller's real Store as the driver casts it.  Each
    listener is on its members' port (the controller rejects a member on
    another port), which differs from pool to pool (the agents refuse two
    listeners on one port)."""
    listeners = [fakes.listener(f'l-{i}', port=pool.members[0].protocol_port,
                                default_pool=pool)
                 for i, pool in enumerate(pools)]
    lb = fakes.loadbalancer(listeners=listeners, pools=pools,
                            additional_vips=[{'ip_address': VIPS[1],
                                              'subnet_id': 'subnet-6'}])
    assert octavia_lookup.vip_addresses(lb) == VIPS
    store.create_loadbalancer(payloads.loadbalancer(lb))


def _agent_view(store):
    """What an agent makes of the controller's snapshot."""
    snap = snapshot.Parser().parse(store.snapshot('g1'))
    targets, rejected = service.health_targets(snap)
    return snap, targets, rejected


def test_every_monitor_the_provider_accepts_the_agent_runs(store):
    pools, types, refused = [], {}, 0
    for i, values in enumerate(_monitor_grid()):
        hm = fakes.health_monitor(healthmonitor_id=f'hm-{i}',
                                  pool_id=f'pool-{i}', **values)
        if not _accepted(validation.check_health_monitor, hm):
            refused += 1
            continue
        types[f'm-{i}'] = values['type']
        pools.append(fakes.pool(
            f'pool-{i}', listener_id=f'l-{len(pools)}', healthmonitor=hm,
            members=[fakes.member(f'm-{i}', pool_id=f'pool-{i}',
                                  port=1000 + len(pools))]))
    # The grid has both sides of every edge.
    assert len(pools) > 100 and refused > 100, (len(pools), refused)
    _store_graph(store, pools)
    snap, targets, rejected = _agent_view(store)
    assert snap.rejected == {} and rejected == {}, (snap.rejected, rejected)
    assert len(targets) == len(pools)
    for member_id, target in targets.items():
        assert target.monitor is not None
        assert target.monitor.type == types[member_id]


def test_refused_monitor_values_are_what_the_agent_rejects():
    """The other direction, for the values the snapshot can carry: what
    the provider refuses, the parser refuses too (same definition)."""
    for values in _monitor_grid():
        hm = fakes.health_monitor(**values)
        provider = _accepted(validation.check_health_monitor, hm)
        doc = {k: v for k, v in dict(values, id='hm').items()
               if v is not None}
        if 'expected_codes' in doc:
            doc['expected_codes'] = doc['expected_codes'].replace(' ', '')
        try:
            schema.check_health_monitor(doc)
            agent = True
        except schema.Invalid:
            agent = False
        assert provider == agent, values


def test_every_member_the_provider_accepts_the_agent_programs(store):
    pools, refused = [], 0
    for i, values in enumerate(_member_grid()):
        # Its own port unless the grid sets one (its listener's, below).
        member = fakes.member(f'm-{i}', pool_id=f'pool-{i}', port=1000 + i,
                              **values)
        if not (_accepted(validation.check_member, member, VIPS) and
                _accepted(validation.check_member_port, member,
                          member.protocol_port)):
            refused += 1
            continue
        # One pool each: the grid repeats addresses.
        pools.append(fakes.pool(f'pool-{i}', listener_id=f'l-{len(pools)}',
                                members=[member]))
    assert len(pools) > 15 and refused > 30, (len(pools), refused)
    _store_graph(store, pools)
    snap, targets, rejected = _agent_view(store)
    assert snap.rejected == {} and rejected == {}, (snap.rejected, rejected)
    assert sorted(m.id for m, _, _ in snap.members()) == sorted(targets)
    assert len(targets) == len(pools)
