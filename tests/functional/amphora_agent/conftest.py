import pytest

from tools.lab import agent_lab


@pytest.fixture
def make_lab(make_topology):
    labs = []

    def factory(n_se=3, n_members=2, bfd=False, **kwargs):
        lab = agent_lab.AgentLab(make_topology(n_se=n_se,
                                               n_members=n_members, **kwargs),
                                 bfd=bfd)
        labs.append(lab)
        lab.start()
        return lab
    yield factory
    for lab in labs:
        lab.close()
