"""AgentEndpoint.get_config: the (signed) answer is built once per
generation and controller key, on a real SQLite store with real keys."""

import json
import time

from dsr_provider.controller import endpoints
from dsr_wire import auth


def test_get_config_answer_is_built_once_per_generation_and_key(
        store, tmp_path, monkeypatch):
    """Agents asking after one change, and every resync, get the answer
    built for the first; a new generation or a new controller key (after
    a rotation) builds it again."""
    key = str(tmp_path / 'controller.key')
    auth.generate_key(key)
    ep = endpoints.AgentEndpoint(store, signer=auth.Signer(key))
    builds = []
    real = store.snapshot
    monkeypatch.setattr(store, 'snapshot',
                        lambda g: builds.append(g) or real(g))
    store.create_loadbalancer({'loadbalancer_id': 'lb1',
                               'vip_address': '192.0.2.10'})
    first = ep.get_config({}, 'g1', 'se1')
    assert ep.get_config({}, 'g1', 'se2') is first
    assert builds == ['g1']
    store.create_loadbalancer({'loadbalancer_id': 'lb2',
                               'vip_address': '192.0.2.11'})
    second = ep.get_config({}, 'g1', 'se1')
    assert second is not first and len(builds) == 2
    assert json.loads(second['payload'])['generation'] == \
        json.loads(first['payload'])['generation'] + 1
    old_kid = second['key_id']
    time.sleep(0.01)    # a new mtime: the rotated key file
    auth.generate_key(key)
    third = ep.get_config({}, 'g1', 'se1')
    assert third['key_id'] != old_kid and len(builds) == 3
    assert third['payload'] == second['payload']
