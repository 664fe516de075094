"""Reports and documents of the project's scale target on the real
MariaDB: one SE group of 10,000 listeners x 16 members, 10,000 announced
VIPs.  MariaDB's TEXT holds 65,535 bytes and its strict mode (the
default) refuses a longer write whole, so such an SE's statistics, member
statuses and announced prefixes -- and a load balancer graph of a
thousand members, or a listener of thousands of allowed CIDRs -- were
never stored; a refused report_state also lost the generation the SE
applied, which Octavia's provisioning statuses wait for."""

import uuid

import pytest

from dsr_provider.controller import endpoints
from dsr_provider.controller import models
from dsr_provider.controller import store as store_mod

LISTENERS = 10_000
MEMBERS = LISTENERS * 16


@pytest.fixture
def store(mariadb_store):
    return mariadb_store


def _ids(count):
    return [str(uuid.uuid4()) for _ in range(count)]


def _announced():
    """10,000 VIPs, half of them IPv6 (the longer prefixes)."""
    half = LISTENERS // 2
    return sorted([f'10.{i // 250}.{i % 250}.1/32' for i in range(half)] +
                  [f'2001:db8:{i:x}::1/128' for i in range(half)])


def _stats(listeners, scale):
    """An SE's statistics of its listeners (counters of a long run)."""
    return {'listeners': {lid: {
        'bytes_in': 123_456_789_012 * scale, 'bytes_out': 0,
        'packets': 1_234_567_890 * scale,
        'total_connections': 12_345_678 * scale,
        'active_connections': 1234, 'request_errors': 12 * scale}
        for lid in listeners}, 'members': {}}


def _row(store, se_id):
    with store.db.session() as s:
        return s.get(models.AgentState, se_id)


def test_an_se_report_of_the_scale_target_is_stored_whole(store):
    listeners, members = _ids(LISTENERS), _ids(MEMBERS)
    statuses = {mid: 'NO_MONITOR' if i % 3 else 'ONLINE'
                for i, mid in enumerate(members)}
    # Capacity refusals of a few thousand members: reasons take room.
    rejected = {'members': {mid: 'member capacity reached (65536 members '
                            'per SE)' for mid in members[:4000]}}
    bgp = {'peers': {'198.18.0.254': 'established',
                     '2001:db8:ffff::fe': 'established'},
           'announced': _announced()}
    # The first report creates the SE's row, the next ones update it (the
    # statistics under the row lock, what was counted carried).
    store.record_agent('se1', 'g1', applied_generation=7,
                       member_statuses=statuses, rejected_objects=rejected,
                       bgp=bgp, stats=_stats(listeners, 1))
    stats = _stats(listeners, 2)
    store.record_agent('se1', 'g1', stats=stats)
    statuses[members[0]] = 'ERROR'
    store.record_agent('se1', 'g1', member_statuses=statuses,
                       applied_generation=8)

    row = _row(store, 'se1')
    assert row.applied_generation == 8
    assert row.stats == stats
    assert row.member_statuses == statuses
    assert row.rejected_objects == rejected
    assert row.bgp == bgp
    assert row.statuses_digest == store_mod.statuses_digest(row)


def test_report_state_announcing_10000_vips_stores_the_applied_generation(
        store):
    """The agent's heartbeat carries the generation it applied with its
    announced prefixes: refused for their size, provisioning waited for
    that SE until apply_timeout (ERROR)."""
    store.record_agent('se1', 'g1', applied_generation=3)
    endpoint = endpoints.AgentEndpoint(store)
    endpoint.report_state({}, 'se1', 'g1', {
        'applied_generation': 4, 'rejected_generation': None,
        'error': None, 'announced': _announced(),
        'bgp': {'peers': {'198.18.0.254': 'established'}}})
    row = _row(store, 'se1')
    assert row.applied_generation == 4
    assert row.bgp['announced'] == _announced()


def test_a_graph_of_a_thousand_members_and_its_status_are_stored(store):
    """A load balancer created whole (one listener with 4,000 allowed
    CIDRs, one pool of 1,000 members): its listener's document and the
    status owed to Octavia for the whole graph are each over 64 KB."""
    cidrs = [f'10.{i // 250}.{i % 250}.0/24' for i in range(4000)]
    members = [{'member_id': mid, 'pool_id': 'p1',
                'address': f'198.19.{i // 250}.{i % 250 + 2}',
                'protocol_port': 80, 'weight': 1, 'admin_state_up': True}
               for i, mid in enumerate(_ids(1000))]
    generation = store.create_loadbalancer({
        'loadbalancer_id': 'lb1', 'vip_address': '192.0.2.10',
        'admin_state_up': True,
        'listeners': [{'listener_id': 'l1', 'loadbalancer_id': 'lb1',
                       'protocol': 'TCP', 'protocol_port': 80,
                       'default_pool_id': 'p1', 'admin_state_up': True,
                       'allowed_cidrs': cidrs}],
        'pools': [{'pool_id': 'p1', 'loadbalancer_id': 'lb1',
                   'listener_id': 'l1', 'lb_algorithm': 'SOURCE_IP_PORT',
                   'protocol': 'TCP', 'admin_state_up': True,
                   'members': members}]})
    with store.db.session() as s:
        listener = s.get(models.Listener, 'l1')
        (owed,) = s.query(models.PendingStatus)
        assert listener.doc['allowed_cidrs'] == cidrs
        assert listener.rejected is None
        assert owed.generation == generation
        assert sorted(m['id'] for m in owed.status['members']) == \
            sorted(m['member_id'] for m in members)
        assert all(m['provisioning_status'] == 'ACTIVE'
                   for m in owed.status['members'])
