"""Host-wide locks for tools that read, then write, shared host state (a
decap pin folder, a folder of member setups): the OpenStack external lock
(oslo.concurrency: a file lock per process under a semaphore per thread),
one lock file per resource in the lock folder: $DSR_LOCK_DIR, else
LOCK_DIR.  Lock files are never deleted (deleting one a process may wait
on would let two hold "the" lock); a host has one per pin or state folder,
and /run is emptied at boot."""

import contextlib
import os

LOCK_DIR = '/run/octavia-dsr'
# Every process that shares a resource must see the same folder: a test
# session points its tools at a private one (tests/conftest.py).
LOCK_DIR_ENV = 'DSR_LOCK_DIR'


def default_lock_dir():
    return os.environ.get(LOCK_DIR_ENV) or LOCK_DIR


@contextlib.contextmanager
def held(kind, path, lock_dir=None):
    """Hold the lock of ``path`` (a file or folder; its real path names
    the lock) for ``kind`` of use."""
    # Imported here, not at the top: dsrctl's read path imports this
    # module's users and must not pay for oslo.concurrency (≈ 100 ms, with
    # oslo.config) or OpenSSL's hashlib.
    import hashlib

    from oslo_concurrency import lockutils
    name = f'{kind}-' + hashlib.sha256(
        os.path.realpath(path).encode()).hexdigest()[:16]
    with lockutils.lock(name, external=True,
                        lock_path=lock_dir or default_lock_dir(),
                        do_log=False):
        yield
