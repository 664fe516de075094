"""octavia-lib's DriverLibrary reading the driver agent's answers without
its polling sleeps.

DriverLibrary._recv reads the answer's length prefix one byte at a time
and sleeps 10 ms after every byte, and 10 ms again after every chunk of
the payload: a status update answered in 20 bytes ("20\\n" + JSON) waits
40 ms or more after the answer arrived, 60-100 ms on a loaded host where
each sleep overshoots.  Every provisioning status the controller sends
to Octavia pays it (docs/benchmarks.md, "API change -> ACTIVE").

FastRecv reads the same framing (ASCII length, newline, JSON payload)
with blocking reads under the socket's timeout, keeping octavia-lib's
overall bound (DRIVER_AGENT_TIMEOUT) and its exception for it.
"""

import json
import socket
import time

from octavia_lib.api.drivers import driver_lib
from octavia_lib.api.drivers import exceptions as driver_exceptions

# The length prefix is a decimal number: more digits than this is not the
# driver agent speaking.
_MAX_PREFIX = 20


class FastRecv:
    """Mixin for a driver_lib.DriverLibrary: answers read as they come."""

    def _recv(self, sock):
        return read_message(sock)


def read_message(sock):
    """One framed JSON document from sock (length, newline, payload)."""
    deadline = time.monotonic() + driver_lib.DRIVER_AGENT_TIMEOUT
    data = bytearray()
    while b'\n' not in data:
        if len(data) > _MAX_PREFIX:
            raise _protocol_error(
                f'a driver-agent message without a length prefix: '
                f'{bytes(data[:_MAX_PREFIX])!r}...')
        data += _chunk(sock, deadline, 4096)
    prefix, _, payload = bytes(data).partition(b'\n')
    try:
        size = int(prefix)
    except ValueError:
        raise _protocol_error(
            f'a driver-agent message whose length prefix is not a '
            f'number: {prefix!r}') from None
    body = bytearray(payload)
    while len(body) < size:
        body += _chunk(sock, deadline, size - len(body))
    return json.loads(bytes(body[:size]))


def write_message(sock, doc):
    """One framed JSON document to sock."""
    body = json.dumps(doc).encode()
    sock.sendall(f'{len(body)}\n'.encode() + body)


def _protocol_error(message):
    return driver_exceptions.DriverError(user_fault_string=message,
                                         operator_fault_string=message)


def _chunk(sock, deadline, limit):
    """Some bytes (at most limit); a socket timeout is retried until the
    deadline, as octavia-lib does (a busy database answers late)."""
    while True:
        try:
            chunk = sock.recv(limit)
        except socket.timeout:
            chunk = None
        if chunk:
            return chunk
        if chunk == b'':
            raise driver_exceptions.DriverAgentTimeout(
                fault_string='The connection to the driver agent closed '
                             'before the message was complete.')
        if time.monotonic() > deadline:
            raise driver_exceptions.DriverAgentTimeout(
                fault_string=(f'The driver agent did not respond in '
                              f'{driver_lib.DRIVER_AGENT_TIMEOUT} seconds.'))


class DriverLibrary(FastRecv, driver_lib.DriverLibrary):
    """driver_lib.DriverLibrary with FastRecv."""
