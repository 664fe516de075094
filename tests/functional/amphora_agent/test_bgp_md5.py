"""TCP-MD5 (RFC 2385) on the SE <-> router BGP sessions, as the demo and
the local stack run them: the agent's [bgp] md5_password against BIRD's
`password`.  A wrong key must keep the session down."""

import pytest

from tests.functional.amphora_agent.test_agent import basic_lb
from tools.lab import agent_lab
from tools.lab import netns

P4 = f'{netns.VIP4}/32'


@pytest.fixture
def md5_lab(make_topology):
    lab = agent_lab.AgentLab(make_topology(n_se=1, n_members=1),
                             bgp_md5_password='s3cret-md5-key')
    try:
        lab.start()
        yield lab
    finally:
        lab.close()


def test_md5_session_announces_and_a_wrong_key_is_refused(md5_lab):
    lab = md5_lab
    assert 'password "s3cret-md5-key"' in lab.bird.render()
    lab.start_agents()
    gen = lab.publish(basic_lb(lab, monitor=False))
    lab.wait_applied(gen)
    lab.wait_route(P4, ['se1'])

    lab.kill_agent('se1')
    lab.bgp_md5_password = 'wrong-key'   # the agent's side only
    lab.start_agent('se1')
    lab.wait_applied(gen)
    # The session cannot come up: the router drops the segments whose MD5
    # does not match, so the VIP goes when the hold timer (3 s) expires and
    # stays gone.
    lab.wait_route(P4, [], timeout=15)
    assert not lab.bird.established()
