"""Member statuses are those of the applied generation: a member of a
fetched generation whose apply failed is in no ring and is not reported
(test_service.py's fakes)."""

import pytest

from amphora_agent.dataplane import dataplane as dp_mod
from tests.unit.amphora_agent.test_service import document
from tests.unit.amphora_agent.test_service import http_monitor
from tests.unit.amphora_agent.test_service import lb
from tests.unit.amphora_agent.test_service import make_agent  # noqa: F401
from tests.unit.amphora_agent.test_service import member
from tests.unit.amphora_agent.test_service import step


def test_a_member_whose_generation_does_not_apply_is_not_reported(
        make_agent):  # noqa: F811 -- the fixture
    agent = make_agent()
    one = [member('a1', '198.19.1.2')]
    agent.controller.document = document(1, [
        lb(1, one, monitor=http_monitor('hm1'))])
    step(agent)
    assert agent.controller.statuses[-1] == {'a1': 'ONLINE'}

    agent.controller.document = document(2, [
        lb(1, one + [member('a2', '198.19.2.2')],
           monitor=http_monitor('hm1')),
        lb(2, [member('b1', '198.19.3.2')])])
    agent.dp.fail = dp_mod.DataplaneError('map update failed')
    with pytest.raises(dp_mod.DataplaneError):
        step(agent)
    with pytest.raises(dp_mod.DataplaneError):
        agent._reconcile()      # the worker's retry, failing again
    assert agent.snapshot.generation == 2
    assert agent.applied_generation == 1
    # resync sends the statuses again: generation 1's.
    agent.resync()
    assert agent.controller.statuses[-1] == {'a1': 'ONLINE'}
    assert agent.member_statuses() == {'a1': 'ONLINE'}

    agent.dp.fail = None
    agent._reconcile()
    assert agent.applied_generation == 2
    assert agent.controller.statuses[-1] == {
        'a1': 'ONLINE', 'a2': 'ONLINE', 'b1': 'NO_MONITOR'}


def test_nothing_is_reported_before_a_generation_applies(
        make_agent):  # noqa: F811 -- the fixture
    agent = make_agent()
    agent.controller.document = document(1, [
        lb(1, [member('a1', '198.19.1.2')], monitor=http_monitor('hm1'))])
    agent.dp.fail = dp_mod.DataplaneError('map update failed')
    with pytest.raises(dp_mod.DataplaneError):
        step(agent)
    assert agent.member_statuses() == {}
    agent.resync()
    assert agent.controller.statuses[-1] == {}
