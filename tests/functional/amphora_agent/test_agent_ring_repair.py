"""The agent on a real pinned dataplane: a generation whose ring write
failed is not reported applied until the retry wrote the ring, and its
new member is not reported before then.

The controller, BGP and the member next hops are faked at their
boundaries (test_agent_pinned.py's `pinned`); the maps are the kernel's.
"""

import os

import pytest

from amphora_agent.dataplane import dataplane as dp_mod
from amphora_agent.dataplane import structs
from tests.functional.amphora_agent import inject
from tests.functional.amphora_agent.test_agent_pinned import pinned  # noqa: F401,E501 -- the fixture
from tests.unit.amphora_agent.test_service import document
from tests.unit.amphora_agent.test_service import FakeHealth
from tests.unit.amphora_agent.test_service import http_monitor
from tests.unit.amphora_agent.test_service import lb
from tests.unit.amphora_agent.test_service import member

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason='needs root')


def ring_addresses(dp):
    """{listener: sorted member addresses its ring points at}."""
    rings = dp.maps['rings']
    slots = memoryview(rings.lookup_batch(rings.max_entries).values).cast(
        'I')
    result = {}
    for key, val in dp._live_listeners().items():
        found = set()
        for index in set(slots[val.ring_off:val.ring_off + val.ring_size]):
            real = structs.Real.from_bytes(dp.maps['reals'].lookup(
                index.to_bytes(4, 'little')))
            found.add(str(structs.unpack_addr(real.addr, real.family)))
        result[str(key)] = sorted(found)
    return result


def test_a_failed_ring_write_is_written_before_the_generation_applies(
        pinned, monkeypatch):  # noqa: F811 -- the fixture
    agent = pinned(FakeHealth())
    first = [member('a1', '198.19.1.1'), member('a2', '198.19.1.2')]
    agent.controller.document = document(1, [
        lb(1, first, monitor=http_monitor('hm1'))])
    assert agent._fetch()
    agent._reconcile()
    assert ring_addresses(agent.dp) == {
        '192.0.2.11:80/tcp': ['198.19.1.1', '198.19.1.2']}

    agent.controller.document = document(2, [
        lb(1, first + [member('a3', '198.19.1.3')],
           monitor=http_monitor('hm1'))])
    inject.fail_first_call(
        monkeypatch, agent.dp, '_write_ring',
        dp_mod.DataplaneError('injected: ring write failed'))
    assert agent._fetch()
    with pytest.raises(dp_mod.DataplaneError):
        agent._reconcile()
    assert agent.applied_generation == 1
    # Not in a ring: a3 is not reported (resync sends the statuses).
    agent.resync()
    assert agent.controller.statuses[-1] == {'a1': 'ONLINE',
                                             'a2': 'ONLINE'}

    agent._reconcile()      # the worker's retry
    assert agent.applied_generation == 2
    assert ring_addresses(agent.dp) == {
        '192.0.2.11:80/tcp': ['198.19.1.1', '198.19.1.2', '198.19.1.3']}
    assert agent.controller.statuses[-1] == {
        'a1': 'ONLINE', 'a2': 'ONLINE', 'a3': 'ONLINE'}
