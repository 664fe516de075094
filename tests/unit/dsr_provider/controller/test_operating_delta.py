"""The operating round after member status reports computes only the load
balancers whose members moved, and sends what a full computation would."""

import json

from dsr_provider.controller import reporter as reporter_mod
from tests.unit.dsr_provider.controller.test_l4_snapshot import statements
from tests.unit.dsr_provider.controller.test_reporter import make
from tests.unit.dsr_provider.controller.test_reporter import reads_objects
from tests.unit.dsr_provider.controller.test_reporter import reported
from tests.unit.dsr_provider.controller.test_store import graph

LBS = 3


def graph_of(i):
    """graph() with its own ids (lb<i>, l<i>, p<i>, hm<i>, m<i>a, m<i>b)."""
    text = json.dumps(graph())
    for old, new in (('"lb1"', f'"lb{i}"'), ('"l1"', f'"l{i}"'),
                     ('"p1"', f'"p{i}"'), ('"hm1"', f'"hm{i}"'),
                     ('"m1"', f'"m{i}a"'), ('"m2"', f'"m{i}b"'),
                     ('192.0.2.10', f'192.0.2.{10 + i}'),
                     ('2001:db8:f::10', f'2001:db8:f::{10 + i}')):
        text = text.replace(old, new)
    return json.loads(text)


def statuses(se1=(), se2=()):
    """Member statuses: ONLINE but the ids given as ERROR."""
    out = []
    for errors in (se1, se2):
        out.append({f'm{i}{x}': 'ERROR' if f'm{i}{x}' in errors else 'ONLINE'
                    for i in range(1, LBS + 1) for x in 'ab'})
    return out


def deployment(store, live=('se1', 'se2')):
    lib, reporter = make(store, live)
    for i in range(1, LBS + 1):
        gen = store.create_loadbalancer(graph_of(i))
    one, two = statuses()
    store.record_agent('se1', 'g1', applied_generation=gen,
                       member_statuses=one)
    store.record_agent('se2', 'g1', applied_generation=gen,
                       member_statuses=two)
    reporter.run_once()
    reporter.run_once()
    return lib, reporter


def full_statuses(store, live=('se1', 'se2')):
    """Every operating status, as a new leader's first round (every object
    computed from every row) sends them."""
    lib, reporter = make(store, live)
    reporter.report_operating_status()
    return sent_last(lib)


def sent_last(lib):
    """The last operating status sent for each object."""
    last = {}
    for st in lib.statuses:
        for kind, items in st.items():
            for item in items:
                if 'operating_status' in item:
                    last[(kind, item['id'])] = item['operating_status']
    return last


def scans(sql, table):
    """Statements reading `table` whole (no WHERE)."""
    return [q for q in sql if f'FROM {table}' in q and 'WHERE' not in q]


def test_a_member_report_computes_only_its_load_balancer(store):
    lib, reporter = deployment(store)
    before = len(lib.statuses)
    one, two = statuses(se1={'m2a'}, se2={'m2a'})
    store.record_agent('se1', 'g1', member_statuses=one)
    store.record_agent('se2', 'g1', member_statuses=two)
    with statements(store) as sql:
        reporter.report_operating_status()
    assert reads_objects(sql)
    for table in ('loadbalancers', 'listeners', 'pools', 'members'):
        assert not scans(sql, table), scans(sql, table)
    (sent,) = lib.statuses[before:]
    assert {(k, i['id']) for k, items in sent.items() for i in items} == {
        ('members', 'm2a'), ('pools', 'p2'), ('listeners', 'l2'),
        ('loadbalancers', 'lb2')}
    assert reported(lib, 'loadbalancers', 'lb2',
                    'operating_status')[-1] == 'DEGRADED'
    assert sent_last(lib) == full_statuses(store)


def test_one_se_of_two_seeing_an_error_is_voted_as_a_full_round_would(store):
    lib, reporter = deployment(store)
    for one, two in (statuses(se1={'m1a', 'm3b'}),
                     statuses(se1={'m1a'}, se2={'m1a', 'm3a', 'm3b'}),
                     statuses(se2={'m3a', 'm3b'}),
                     statuses()):
        store.record_agent('se1', 'g1', member_statuses=one)
        store.record_agent('se2', 'g1', member_statuses=two)
        reporter.report_operating_status()
        assert sent_last(lib) == full_statuses(store)


def test_anything_but_member_statuses_moving_computes_everything(store):
    lib, reporter = deployment(store)
    one, _two = statuses()
    store.record_agent('se1', 'g1', member_statuses=one,
                       rejected_objects={'members': {'m1a': 'no room'}})
    with statements(store) as sql:
        reporter.report_operating_status()
    assert scans(sql, 'members')
    assert reported(lib, 'members', 'm1a', 'operating_status')[-1] == 'ERROR'
    assert sent_last(lib) == full_statuses(store)


def bgp(v4, v6):
    return {'peers': {'198.18.0.1': v4, '2001:db8::1': v6},
            'announced': ['192.0.2.11/32']}


def test_bgp_sessions_decide_what_is_served(store):
    """The load balancers are dual stack: with no IPv4 session on any SE
    they are served on IPv6 only (DEGRADED); with none at all nothing is
    served (OFFLINE); one SE's session is enough.  Each change is news
    to the leader and computed as a full round would."""
    lib, reporter = deployment(store)
    up = bgp('established', 'established')
    # Every family routed, as before BGP was reported: no news.
    assert not store.record_agent('se1', 'g1', bgp=up)
    assert not store.record_agent('se2', 'g1', bgp=up)
    reporter.report_operating_status()
    assert reported(lib, 'loadbalancers', 'lb1',
                    'operating_status')[-1] == 'ONLINE'
    # The routes it announces are no news; a session is.
    assert not store.record_agent('se1', 'g1', bgp=dict(
        up, announced=['192.0.2.12/32']))
    assert store.record_agent('se1', 'g1', bgp=bgp('active', 'established'))
    store.record_agent('se1', 'g1', bgp=up)
    for se1, se2, lb, member in (
            (bgp('active', 'established'), up, 'ONLINE', 'ONLINE'),
            (bgp('active', 'established'), bgp('connect', 'established'),
             'DEGRADED', 'ONLINE'),
            (bgp('active', 'idle'), bgp('connect', 'not-running'),
             'OFFLINE', 'OFFLINE'),
            (bgp('active', 'idle'), bgp('established', 'idle'),
             'DEGRADED', 'ONLINE'),
            (up, up, 'ONLINE', 'ONLINE')):
        store.record_agent('se1', 'g1', bgp=se1)
        store.record_agent('se2', 'g1', bgp=se2)
        reporter.report_operating_status()
        for i in range(1, LBS + 1):
            assert reported(lib, 'loadbalancers', f'lb{i}',
                            'operating_status')[-1] == lb, (se1, se2)
            assert reported(lib, 'members', f'm{i}a',
                            'operating_status')[-1] == member, (se1, se2)
        assert sent_last(lib) == full_statuses(store)


def test_member_rounds_do_not_put_off_the_full_refresh(store, monkeypatch):
    lib, reporter = deployment(store)
    clock = [reporter_mod.time.monotonic()]
    monkeypatch.setattr(reporter_mod.time, 'monotonic', lambda: clock[0])
    for n in range(4):
        clock[0] += reporter_mod.OPERATING_REFRESH / 4 + 0.01
        one, two = statuses(se1={'m1a'} if n % 2 else ())
        store.record_agent('se1', 'g1', member_statuses=one)
        store.record_agent('se2', 'g1', member_statuses=two)
        with statements(store) as sql:
            reporter.report_operating_status()
        # The fourth round is past the refresh: everything again.
        assert bool(scans(sql, 'members')) == (n == 3), n
