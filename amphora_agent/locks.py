"""Host-wide locks for tools that read, then write, shared host state (a
decap pin folder, a folder of member setups): the OpenStack external lock
(oslo.concurrency: a file lock per process under a semaphore per thread),
one lock file per resource in LOCK_DIR."""

import contextlib
import os

LOCK_DIR = '/run/octavia-dsr'


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
    with lockutils.lock(name, external=True, lock_path=lock_dir or LOCK_DIR,
                        do_log=False):
        yield
