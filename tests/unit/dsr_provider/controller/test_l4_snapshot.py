"""The L4 group's document, built with one query per table."""

import contextlib

import sqlalchemy as sa

from amphora_agent import snapshot as snapshot_mod
from tests.unit.dsr_provider.controller.test_capacity import lb
from tests.unit.dsr_provider.controller.test_capacity import listener
from tests.unit.dsr_provider.controller.test_capacity import member
from tests.unit.dsr_provider.controller.test_capacity import pool


def add(store, first, count, members=3):
    for i in range(first, first + count):
        store.create_loadbalancer(lb(
            i, vips=2, listeners=[listener(i, 0, pool=f'p{i}'),
                                  listener(i, 1)],
            pools=[pool(i, f'p{i}', f'l{i}-0', members)]))
        store.put_healthmonitor({
            'healthmonitor_id': f'hm{i}', 'pool_id': f'p{i}',
            'type': 'HTTP', 'delay': 5, 'timeout': 3, 'max_retries': 2,
            'url_path': '/', 'expected_codes': '200, 202'})


@contextlib.contextmanager
def statements(store):
    seen = []

    def count(conn, cursor, statement, *args):
        seen.append(statement)
    engine = store.db.engine
    sa.event.listen(engine, 'before_cursor_execute', count)
    try:
        yield seen
    finally:
        sa.event.remove(engine, 'before_cursor_execute', count)


def test_the_number_of_queries_does_not_grow_with_the_load_balancers(store):
    """Every agent of the group asks for the document after every change:
    per-object queries made it seconds per ask at 10,000 load balancers."""
    add(store, 1, 3)
    with statements(store) as few:
        small = store.snapshot('g1')
    add(store, 4, 27)
    with statements(store) as many:
        large = store.snapshot('g1')
    assert len(small['load_balancers']) == 3
    assert len(large['load_balancers']) == 30
    assert len(many) == len(few) <= 8, many


def test_the_document_is_in_id_order_and_leaves_out_what_was_rejected(
        store):
    store.record_agent('se1', 'g1', limits={
        'max_listeners': 100, 'max_members': 18, 'ring_size': 128021,
        'conn_table_size': 262144})
    store.live_agents = lambda group: {'se1'}
    add(store, 1, 2, members=4)            # 2 x 2 VIPs x 4 members = 16
    store.put_member(member('p2', 9))      # 18: fits
    store.put_member(member('p1', 8))      # 20: rejected alone
    doc = store.snapshot('g1')
    snapshot_mod.parse(doc)                # the agent's own validation
    lb1, lb2 = doc['load_balancers']
    assert [lb1['id'], lb2['id']] == ['lb1', 'lb2']
    assert [v['address'] for v in lb1['vips']] == ['192.0.2.1',
                                                   '2001:db8:f::1']
    assert [lst['id'] for lst in lb1['listeners']] == ['l1-0', 'l1-1']
    assert 'pool' not in lb1['listeners'][1]
    p1, p2 = lb1['listeners'][0]['pool'], lb2['listeners'][0]['pool']
    assert [m['id'] for m in p1['members']] == [
        'p1-m0', 'p1-m1', 'p1-m2', 'p1-m3']
    assert [m['id'] for m in p2['members']] == [
        'p2-m0', 'p2-m1', 'p2-m2', 'p2-m3', 'p2-m9']
    assert p1['health_monitor'] == {
        'id': 'hm1', 'type': 'HTTP', 'delay': 5, 'timeout': 3,
        'max_retries': 2, 'max_retries_down': 3, 'admin_state_up': True,
        'url_path': '/', 'expected_codes': '200,202'}
