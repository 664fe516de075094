"""Ports for the servers tests start on the host's loopback (HAProxy, an
agent's metrics endpoint)."""

import itertools
import os
import socket

# Below ip_local_port_range (32768-60999 by default): neither another
# process's bind(0) nor its connect() hands these out, so a port chosen
# here is still free a moment later, when the server the test started
# binds it (a port from bind(0), released, went to another test's socket
# in between).  One slice per pytest-xdist worker: workers never pick the
# same port.
FIRST, SLICE, SLICES = 21000, 1500, 7
_counter = itertools.count()


def _slice_start():
    worker = os.environ.get('PYTEST_XDIST_WORKER')
    try:
        index = int(worker.removeprefix('gw'))
    except (AttributeError, ValueError):
        # Not an xdist worker: a slice by process, apart from another
        # such run's most of the time (the bind check does the rest).
        index = os.getpid()
    return FIRST + (index % SLICES) * SLICE


def server_port(host='127.0.0.1', kind=socket.SOCK_STREAM):
    """A port of this worker's slice that nothing holds on host now."""
    start = _slice_start()
    for _ in range(SLICE):
        port = start + next(_counter) % SLICE
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f'no free port in {start}-{start + SLICE - 1}')
