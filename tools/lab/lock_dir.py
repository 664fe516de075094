"""A lock folder private to this process tree, for a lab run outside a
test session (tests/conftest.py makes its own): the member setups and
decaps a lab makes lock their folders there (amphora_agent/locks.py), not
in the host's /run/octavia-dsr, which would keep a lock file for every
lab's pin folders."""

import atexit
import os
import shutil
import tempfile

from amphora_agent import locks


def use_private(prefix='dsr-locks-'):
    """Point $DSR_LOCK_DIR at a new folder, removed when this process
    exits, unless it is set already (a test session, an outer run: keep
    what the other processes sharing these resources use).  Returns the
    new folder, or None when it was set."""
    if os.environ.get(locks.LOCK_DIR_ENV):
        return None
    path = tempfile.mkdtemp(prefix=prefix)
    os.environ[locks.LOCK_DIR_ENV] = path
    owner = os.getpid()

    def remove():
        # Not from a forked child (pyroute2 forks helpers) that exits
        # through atexit while this process still holds locks there.
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)
    atexit.register(remove)
    return path
