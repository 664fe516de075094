"""The agent's options as oslo-config-generator sees them."""

from oslo_config import cfg

from amphora_agent.l7 import certs
from amphora_agent import opts


def test_every_registered_group_is_listed_for_the_generator():
    # A group registered but missing from list_opts() is absent from
    # etc/dsr-agent.conf.sample and from oslo-config-validator's view
    # ([l7] was, when it was added).
    conf = cfg.ConfigOpts()
    opts.register_agent_opts(conf)
    # The L7 engine registers Octavia's certificate manager options when
    # it loads the driver (amphora_agent/l7/certs.py).
    for group, group_opts in certs.list_opts():
        conf.register_opts(group_opts, group=group)
    registered = {(group.name, opt.name)
                  for group in conf._groups.values()
                  for opt in group._opts.values()
                  for opt in [opt['opt']]}
    listed = {(group, opt.name)
              for group, group_opts in opts.list_opts() + certs.list_opts()
              for opt in group_opts}
    assert registered == listed


def test_agents_and_controller_default_to_the_same_coordination():
    # Membership expiry bounds how fast a dead SE leaves the rings: an
    # agent default without membership_timeout stayed listed 30 s.
    from dsr_provider import opts as provider_opts
    agent = {o.name: o.default for o in opts.coordination_opts}
    provider = {o.name: o.default for o in provider_opts.controller_opts}
    assert agent['backend_url'] == provider['coordination_url']
    assert 'membership_timeout=1' in agent['backend_url']
