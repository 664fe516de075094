"""tools.bench_targets: every shape a bench reports its targets in gives
rows with the verdict it carries; a row's null (a target that does not
apply to it) is left out, a bench's unjudged targets carry its reason."""

import json

from tools import bench_targets

# Shapes as the bench scripts print them (trimmed).
RESULTS = [
    {'bench': 'api', 'targets': {
        'member_create_to_first_packet_p95_s<=1': True,
        'lbs_concurrent_none_stuck': None}},
    {'bench': 'dataplane', 'targets': {
        'v4_hit_vs_pass': {'name': '4in4 conn-hit <= 5 x XDP_PASS',
                           'value': 42.7, 'limit': 112.0, 'ratio': 1.9,
                           'met': True},
        'miss_vs_hit': {'name': '4in4 new flow <= 3 x 4in4 conn-hit',
                        'value': 421.0, 'ratio': 9.5, 'met': False},
        'hit_vs_floor': [
            {'name': '4in4_hit <= 1.5 x encap floor', 'ratio': 2.4,
             'met': False},
            {'name': '6in6_hit <= 1.5 x encap floor', 'ratio': 2.9,
             'met': False}]}},
    {'bench': 'maglev',
     'results': [{'n': 10, 'targets': {'max_mean': True, 'moved': True,
                                       'build_ms': None}},
                 {'n': 100, 'targets': {'max_mean': True, 'moved': False,
                                        'build_ms': True}}],
     'targets': {'build_ms_n100': 10, 'max_mean_n_le_100': 1.01}},
    {'bench': 'health', 'targets': {'detect': {'tcp': True}}},
    {'bench': 'veth_rate_bench', 'not_measured': 'kernel says no',
     'target': {'name': 'SE/baseline >= 0.85', 'met': None},
     'target_new_flows': {'name': 'new flow/baseline >= 0.6', 'met': None},
     'all_targets_met': None},
    {'bench': 'idle_lab', 'targets': {}},
    {'bench': 'l7_bench', 'error': 'exit status 1'},
]


def test_every_shape_gives_its_verdicts():
    rows = {(b, n): (met, fig)
            for b, n, met, fig in bench_targets.verdicts(RESULTS)}
    assert rows == {
        ('api', 'member_create_to_first_packet_p95_s<=1'): (True, ''),
        ('api', 'lbs_concurrent_none_stuck'): (None, ''),
        ('dataplane', '4in4 conn-hit <= 5 x XDP_PASS'):
            (True, 'ratio 1.9, limit 112'),
        ('dataplane', '4in4 new flow <= 3 x 4in4 conn-hit'):
            (False, 'ratio 9.5'),
        ('dataplane', '4in4_hit <= 1.5 x encap floor'): (False, 'ratio 2.4'),
        ('dataplane', '6in6_hit <= 1.5 x encap floor'): (False, 'ratio 2.9'),
        ('maglev', 'results[n=10].max_mean'): (True, ''),
        ('maglev', 'results[n=10].moved'): (True, ''),
        ('maglev', 'results[n=100].max_mean'): (True, ''),
        ('maglev', 'results[n=100].moved'): (False, ''),
        ('maglev', 'results[n=100].build_ms'): (True, ''),
        ('health', 'detect.tcp'): (True, ''),
        ('veth_rate_bench', 'SE/baseline >= 0.85'): (None, 'kernel says no'),
        ('veth_rate_bench', 'new flow/baseline >= 0.6'):
            (None, 'kernel says no'),
        ('l7_bench', 'the bench ran'): (False, 'exit status 1'),
    }


def test_the_table_marks_each_row_and_counts_them(tmp_path, capsys):
    path = tmp_path / 'results.json'
    path.write_text(json.dumps(RESULTS))
    assert bench_targets.main([str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == 'targets of this run:'
    moved = next(line for line in out if 'results[n=100].moved' in line)
    assert 'NOT MET' in moved
    floor = next(line for line in out if '6in6_hit <= 1.5' in line)
    assert 'NOT MET' in floor and '(ratio 2.9)' in floor
    assert out[-1] == '7 met, 5 not met, 3 not measured'
