import pytest

from tools.lab import product_lab


@pytest.fixture
def make_product(make_topology):
    labs = []

    def factory(n_se=2, n_members=2):
        lab = product_lab.ProductLab(make_topology(n_se=n_se,
                                                   n_members=n_members))
        labs.append(lab)
        lab.start()
        return lab
    yield factory
    for lab in labs:
        lab.close()
