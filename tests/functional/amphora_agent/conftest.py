import pytest

from tools.lab import agent_lab


@pytest.fixture
def make_lab(make_topology):
    """Factory of AgentLabs.  With DSR_AGENT_USER set (e.g. dsrtest) the
    agents run as that user with only DSR_AGENT_CAPS (default: the shipped
    unit's capabilities), inside their SE's namespace:
    test_least_privilege.py runs agent tests that way."""
    labs = []
    run_as = agent_lab.run_as_from_env()

    def factory(n_se=3, n_members=2, bfd=False, **kwargs):
        lab = agent_lab.AgentLab(make_topology(n_se=n_se,
                                               n_members=n_members, **kwargs),
                                 bfd=bfd, run_as=run_as)
        labs.append(lab)
        lab.start()
        return lab
    yield factory
    for lab in labs:
        lab.close()
