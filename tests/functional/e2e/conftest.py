import os

import pytest

from tools.lab import log_evidence
from tools.lab import product_lab


@pytest.fixture
def make_product(request, make_topology):
    labs = []
    # For the report of a failed test (pytest_runtest_makereport).
    request.node.dsr_product_labs = labs

    def factory(n_se=2, n_members=2):
        lab = product_lab.ProductLab(make_topology(n_se=n_se,
                                                   n_members=n_members))
        labs.append(lab)
        lab.start()
        return lab
    yield factory
    for lab in labs:
        lab.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries the warnings and errors of its labs'
    product logs (tools/lab/log_evidence.py): CI shows what was printed,
    not /tmp/dsr-e2e-logs."""
    outcome = yield
    report = outcome.get_result()
    labs = getattr(item, 'dsr_product_labs', None)
    if report.when != 'call' or not report.failed or not labs:
        return
    for lab in labs:
        root = lab.agents.root
        try:
            text = log_evidence.render(log_evidence.problems_under(root))
        except Exception as exc:  # noqa: BLE001 -- the report goes on
            text = f'(its logs could not be read: {exc})'
        if text:
            report.sections.append(
                (f'product logs of lab {os.path.basename(root)}', text))
