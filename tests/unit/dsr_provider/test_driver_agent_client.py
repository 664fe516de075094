"""driver_agent_client: octavia-driver-agent's framing read as it comes,
without octavia-lib's 10 ms sleep per byte of the length prefix, against a
real unix-socket server that answers in pieces."""

import socketserver
import threading
import time
import types

from octavia_lib.api.drivers import driver_lib
from octavia_lib.api.drivers import exceptions as driver_exceptions
from oslo_serialization import jsonutils
import pytest

from dsr_provider import driver_agent_client


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        server = self.server
        size = b''
        while not size.endswith(b'\n'):
            size += self.request.recv(1)
        data = b''
        while len(data) < int(size):
            data += self.request.recv(int(size) - len(data))
        server.received.append(jsonutils.loads(data))
        for piece in server.pieces:
            self.request.sendall(piece)
            time.sleep(server.gap)


class FakeDriverAgent(socketserver.ThreadingMixIn,
                      socketserver.UnixStreamServer):
    """Answers every request with `pieces`, `gap` seconds apart."""
    daemon_threads = True

    def __init__(self, path, pieces, gap=0.0):
        super().__init__(path, _Handler)
        self.pieces = pieces
        self.gap = gap
        self.received = []


def framed(doc):
    body = jsonutils.dump_as_bytes(doc)
    return f'{len(body)}\n'.encode() + body


@pytest.fixture
def agent(tmp_path):
    servers = []

    def start(pieces, gap=0.0):
        path = str(tmp_path / f'status{len(servers)}.sock')
        server = FakeDriverAgent(path, pieces, gap)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        lib = driver_agent_client.DriverLibrary(
            status_socket=path, stats_socket=path, get_socket=path)
        return server, lib
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sleeps(monkeypatch):
    """Every time.sleep of octavia-lib's client (none must remain)."""
    calls = []
    monkeypatch.setattr(driver_lib, 'time', types.SimpleNamespace(
        sleep=calls.append, time=time.time))
    return calls


def test_a_status_update_is_read_without_polling_sleeps(agent, sleeps):
    ok = framed({'status_code': 200})
    # The length prefix byte by byte, then the payload in two pieces.
    server, lib = agent([ok[:1], ok[1:2], ok[2:3], ok[3:10], ok[10:]],
                        gap=0.005)
    status = {'members': [{'id': 'm1', 'provisioning_status': 'ACTIVE'}]}
    lib.update_loadbalancer_status(status)
    assert server.received == [status]
    # octavia-lib's own _recv sleeps 10 ms after each prefix byte and
    # each payload chunk (5 calls here).
    assert sleeps == []


def test_a_large_answer_in_one_piece(agent, sleeps):
    doc = {'pool_id': 'p1', 'name': 'x' * 100000}
    _server, lib = agent([framed(doc)])
    pool = lib.get_pool('p1')
    assert (pool.pool_id, pool.name) == ('p1', doc['name'])
    assert sleeps == []


def test_octavias_refusal_names_the_object(agent):
    _server, lib = agent([framed({
        'status_code': 500, 'fault_string': 'no row',
        'status_object': 'members', 'status_object_id': 'm9'})])
    with pytest.raises(driver_exceptions.UpdateStatusError) as err:
        lib.update_loadbalancer_status({'members': [{'id': 'm9'}]})
    assert (err.value.status_object, err.value.status_object_id) == (
        'members', 'm9')


def test_an_answer_cut_short_fails_at_once(agent):
    ok = framed({'status_code': 200})
    _server, lib = agent([ok[:-3]])     # then the child exits
    started = time.monotonic()
    with pytest.raises(driver_exceptions.UpdateStatusError,
                       match='closed before the message was complete'):
        lib.update_loadbalancer_status({})
    # Not octavia-lib's 30 s of polling an EOF.
    assert time.monotonic() - started < 5


def test_a_prefix_that_is_not_a_length_is_named(agent):
    _server, lib = agent([b'HTTP/1.1 200 OK\r\n\r\n'])
    with pytest.raises(driver_exceptions.UpdateStatusError,
                       match="length prefix is not a number: "
                             "b'HTTP/1.1 200 OK"):
        lib.update_loadbalancer_status({})
    _server, lib = agent([b'x' * 64])
    with pytest.raises(driver_exceptions.UpdateStatusError,
                       match='without a length prefix'):
        lib.update_loadbalancer_status({})


def test_a_silent_agent_times_out_at_octavia_libs_bound(agent, monkeypatch):
    monkeypatch.setattr(driver_lib, 'DRIVER_AGENT_TIMEOUT', 0.3)
    monkeypatch.setattr(driver_lib, 'SOCKET_TIMEOUT', 0.1)
    _server, lib = agent([b'2'], gap=2.0)
    started = time.monotonic()
    with pytest.raises(driver_exceptions.UpdateStatusError,
                       match='did not respond in 0.3 seconds'):
        lib.update_loadbalancer_status({})
    assert time.monotonic() - started < 1.5


def test_the_unpatched_client_does_sleep(agent, sleeps, monkeypatch):
    """The test above can fail: octavia-lib's own reader polls."""
    ok = framed({'status_code': 200})
    _server, lib = agent([ok])
    monkeypatch.setattr(lib, '_recv', lambda sock: driver_lib.DriverLibrary
                        ._recv(lib, sock))
    lib.update_loadbalancer_status({})
    assert len(sleeps) >= 3
