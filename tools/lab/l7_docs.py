"""Builders of L7 documents (dsr_wire/l7.py): the L7 engine's tests,
the tier-2 path kit (tools/lab/tier2_path.py) and bench/l7_bench.py."""

VIP4 = '192.0.2.10'


def member(id_, address, port=8080, **kw):
    return dict({'id': id_, 'address': address, 'protocol_port': port,
                 'weight': 1, 'admin_state_up': True, 'backup': False},
                **kw)


def monitor(type_='HTTP', **kw):
    return dict({'id': 'hm-' + type_.lower(), 'type': type_, 'delay': 2,
                 'timeout': 1, 'max_retries': 2, 'max_retries_down': 3,
                 'http_method': 'GET', 'url_path': '/healthz',
                 'expected_codes': '200-204', 'admin_state_up': True}, **kw)


def pool(id_, members, algorithm='ROUND_ROBIN', protocol='HTTP', **kw):
    return dict({'id': id_, 'protocol': protocol, 'lb_algorithm': algorithm,
                 'admin_state_up': True, 'session_persistence': None,
                 'members': list(members), 'healthmonitor': None}, **kw)


def policy(id_, pool_id, path, position=1):
    return {'id': id_, 'action': 'REDIRECT_TO_POOL', 'position': position,
            'redirect_pool_id': pool_id, 'admin_state_up': True,
            'rules': [{'id': id_ + '-r1', 'type': 'PATH',
                       'compare_type': 'STARTS_WITH', 'key': None,
                       'value': path, 'invert': False,
                       'admin_state_up': True}]}


def listener(id_, pool_id, protocol='HTTP', port=80, policies=(), **kw):
    return dict({'id': id_, 'protocol': protocol, 'protocol_port': port,
                 'admin_state_up': True, 'connection_limit': -1,
                 'default_pool_id': pool_id,
                 'insert_headers': {'X-Forwarded-For': 'true'},
                 'l7policies': list(policies)}, **kw)


def load_balancer(listeners, pools, id_='lb1', vips=(VIP4,)):
    return {'id': id_, 'admin_state_up': True,
            'vips': [{'address': v} for v in vips],
            'listeners': list(listeners), 'pools': list(pools)}


def document(*lbs, generation=1, se_group='g1-l7'):
    return {'schema_version': 1, 'role': 'tier2', 'se_group': se_group,
            'generation': generation, 'load_balancers': list(lbs)}
