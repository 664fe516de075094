"""Fixtures for every test."""

import signal

import pytest

from tools.lab import lock_dir

# Signal dispositions a test must leave as it found them.  A pytest worker
# that inherits SIGPIPE = SIG_DFL from code run in-process (a CLI's main)
# is killed by the next write to a dead child's pipe -- in some later test
# of that worker, which xdist then reports as a crashed worker.
GUARDED_SIGNALS = (signal.SIGPIPE, signal.SIGTERM, signal.SIGINT)


@pytest.fixture(autouse=True)
def signal_dispositions_are_kept():
    before = {sig: signal.getsignal(sig) for sig in GUARDED_SIGNALS}
    yield
    changed = [sig.name for sig in GUARDED_SIGNALS
               if signal.getsignal(sig) is not before[sig]]
    for sig in GUARDED_SIGNALS:
        signal.signal(sig, before[sig])
    assert not changed, (
        f'the test left the disposition of {", ".join(changed)} changed '
        f'in the test process (restored)')


# The tools' external locks (amphora_agent/locks.py) go to a folder of this
# run, removed at its end, not to the host's /run/octavia-dsr: the suite
# makes a lock file for each of its many pin and state folders.  Set in the
# controller before pytest-xdist starts its workers, which inherit it (one
# folder for the run: tests of two workers sharing a resource share its
# lock); a run that found it set (a worker, or an outer run) keeps it.
def pytest_configure(config):
    lock_dir.use_private('dsr-locks-')
