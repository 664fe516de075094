"""Fixtures for the functional tests (network namespaces; needs root).

    def test_x(topo):                  # 1 SE, 2 members, built and torn down
        topo.setup_member("m1")
        ...

    def test_y(make_topology):             # other shapes
        topo = make_topology(n_se=2, n_members=3)

See netns.py for the Topology API and the address plan.
"""

import os
from pathlib import Path
import signal

import pytest

from tools.lab import netns

_HERE = Path(__file__).resolve().parent


def _is_root():
    return os.geteuid() == 0


# Files whose setup or tests take minutes (pytest --durations, make test
# with 3 workers): started first, so that under pytest-xdist (make test runs
# -n 3 --dist loadfile) the long ones overlap the many short ones instead
# of running alone at the end.
LONG_FILES = (
    'amphora_agent/l7/test_tier2_path.py',    # 2 L7 SEs, HAProxy, TLS
    'amphora_agent/l7/test_udp_path.py',      # 2 L7 SEs, health checks
    'tools/test_demo_tier2.py',               # the product + 2 L7 SEs
    'dsr_provider/controller/test_neutron_ports.py',  # neutron venv, server
    'amphora_agent/test_least_privilege.py',  # the agent suite again
    'test_packaging.py',                      # wheel build + install
    'devstack/test_plugin.py',                # every DevStack phase
    'amphora_agent/test_agent.py',
    'amphora_agent/test_systemd_unit.py',
    'tools/lab/localstack/test_octavia_stack.py',
    'dsr_provider/controller/test_replay.py',
    'dsr_provider/test_status_relay.py',
    'amphora_agent/l7/test_l7_agent.py',
    'amphora_agent/dataplane/test_consistency.py',
    # make test-e2e (2 workers): 240 and 210 s of 1350 s serial
    'e2e/test_isolation.py',
    'e2e/test_lifecycle.py',
    'e2e/test_tier2_scale.py',                # 3 L7 SEs: 207 s at load 11
)


def _long_first(items):
    missing = [name for name in LONG_FILES if not (_HERE / name).exists()]
    if missing:
        raise pytest.UsageError(
            f'tests/functional/conftest.py LONG_FILES names {missing}, '
            'which do not exist: update the list')

    def rank(item):
        path = Path(str(item.fspath)).resolve()
        for i, name in enumerate(LONG_FILES):
            if path == _HERE / name:
                return i
        return len(LONG_FILES)
    # sort() is stable: within a file and among the rest, order is kept.
    items.sort(key=rank)


def pytest_collection_modifyitems(config, items):
    _long_first(items)
    if _is_root():
        return
    skip = pytest.mark.skip(reason="functional tests need root (netns, BPF)")
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


_MAIN_PID = os.getpid()


def _sigterm_to_interrupt(signum, frame):
    # Unwind (running every `with Topology()` exit and fixture teardown)
    # instead of dying with namespaces and servers left behind.  Only in
    # pytest's own process: a fork()ed helper (pyroute2 forks children and
    # stops them with SIGTERM) must just die, never unwind into pytest.
    if os.getpid() != _MAIN_PID:
        os._exit(128 + signum)
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session", autouse=True)
def _netns_session():
    if not _is_root():
        yield
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    netns.sweep_stale()
    yield


@pytest.fixture
def make_topology():
    """Factory: make_topology(**Topology kwargs) -> built Topology; every
    topology made is closed at teardown, whatever the test's outcome."""
    made = []

    def factory(**kwargs):
        topo = netns.Topology(**kwargs)
        made.append(topo)
        topo.__enter__()
        return topo

    yield factory
    errors = []
    for topo in reversed(made):
        try:
            topo.close()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def topo(make_topology):
    """The standard topology: client, router, se1, m1, m2."""
    return make_topology()
