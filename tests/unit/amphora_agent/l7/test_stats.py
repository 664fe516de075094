"""amphora_agent.l7.stats: HAProxy's view -> Octavia's statuses."""

import pytest

from amphora_agent.l7 import stats


@pytest.mark.parametrize('haproxy_status, octavia', [
    ('UP', 'ONLINE'), ('UP 1/3', 'ONLINE'), ('DOWN', 'ERROR'),
    ('DOWN 1/2', 'ERROR'), ('DRAIN', 'DRAINING'), ('MAINT', 'OFFLINE'),
    ('no check', 'NO_MONITOR'), ('NOLB', None)])
def test_member_status_mapping(haproxy_status, octavia):
    assert stats.member_operating_status(haproxy_status) == octavia


def test_summarize():
    rows = [
        {'pxname': 'li1', 'svname': 'FRONTEND', 'status': 'OPEN',
         'bin': '100', 'bout': '2000', 'scur': '3', 'stot': '40',
         'ereq': '1'},
        {'pxname': 'li2', 'svname': 'FRONTEND', 'status': 'FULL',
         'bin': '', 'bout': '0', 'scur': '0', 'stot': '0', 'ereq': '0'},
        {'pxname': 'p1:li1', 'svname': 'BACKEND', 'status': 'UP'}]
    pools = {'p1:li1': {'pool_uuid': 'p1', 'status': 'UP',
                        'members': {'m1': 'UP', 'm2': 'DOWN'}},
             'p1:li2': {'pool_uuid': 'p1', 'status': 'DOWN',
                        'members': {'m1': 'DOWN', 'm2': 'DOWN'}},
             'p2:li2': {'pool_uuid': 'p2', 'status': 'DOWN',
                        'members': {}}}
    out = stats.summarize(rows, pools)
    assert out['listeners']['li1'] == {
        'status': 'OPEN', 'operating_status': 'ONLINE',
        'stats': {'bytes_in': 100, 'bytes_out': 2000,
                  'active_connections': 3, 'total_connections': 40,
                  'request_errors': 1}}
    assert out['listeners']['li2']['operating_status'] == 'DEGRADED'
    assert out['listeners']['li2']['stats']['bytes_in'] == 0
    # A pool two listeners use: the first backend seen, as Octavia.
    assert out['pools']['p1']['operating_status'] == 'ONLINE'
    assert out['pools']['p1']['members']['m2'] == {
        'status': 'DOWN', 'operating_status': 'ERROR'}
    assert out['pools']['p2'] == {'status': 'DOWN',
                                  'operating_status': 'ERROR',
                                  'members': {}}
