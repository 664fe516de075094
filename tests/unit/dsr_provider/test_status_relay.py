"""status_relay's server on a real unix socket, Octavia's updater faked:
answers framed as octavia-driver-agent's, a failing request answered (not
dropped), the session closed after each request, the socket 0660."""

import os
import stat
import threading

from octavia_lib.api.drivers import exceptions as driver_exceptions
import pytest

from dsr_provider import driver_agent_client
from dsr_provider import status_relay


class FakeUpdater:
    closed = []

    def __init__(self):
        self.db_session = self

    def close(self):
        FakeUpdater.closed.append(self)

    def update_loadbalancer_status(self, status):
        if status.get('boom'):
            raise RuntimeError('database gone')
        return {'status_code': 200}


@pytest.fixture
def relay(tmp_path, monkeypatch):
    monkeypatch.setattr(status_relay, '_updater', FakeUpdater)
    FakeUpdater.closed = []
    path = str(tmp_path / 'dsr-status.sock')
    server = status_relay._Server(
        path, lambda doc: status_relay._apply('update_loadbalancer_status',
                                              doc))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield path, driver_agent_client.DriverLibrary(
        status_socket=path, stats_socket=path, get_socket=path)
    server.shutdown()
    server.server_close()


def test_an_update_is_answered_and_its_session_closed(relay):
    path, lib = relay
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    lib.update_loadbalancer_status({'members': [{'id': 'm1'}]})
    assert len(FakeUpdater.closed) == 1


def test_a_request_that_fails_is_answered_with_the_reason(relay):
    _path, lib = relay
    with pytest.raises(driver_exceptions.UpdateStatusError,
                       match='database gone'):
        lib.update_loadbalancer_status({'boom': True})
    assert len(FakeUpdater.closed) == 1
    lib.update_loadbalancer_status({})     # the relay still serves


def test_a_stale_socket_file_is_replaced(tmp_path):
    path = str(tmp_path / 'dsr-status.sock')
    open(path, 'w').close()
    server = status_relay._Server(path, lambda doc: {'status_code': 200})
    try:
        assert stat.S_ISSOCK(os.stat(path).st_mode)
    finally:
        server.server_close()
