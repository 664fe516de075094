"""amphora_agent.l7.haproxy.Process with a real HAProxy master on
127.0.0.1: the reload handshake with the master."""

import logging
import os
import re
import shutil
import socket

import pytest

from amphora_agent.l7 import haproxy
from amphora_agent.l7 import render
from tools.lab import ports

HAPROXY = shutil.which('haproxy')
pytestmark = pytest.mark.skipif(HAPROXY is None,
                                reason='haproxy is not installed')


@pytest.fixture
def process(tmp_path):
    paths = render.Paths(str(tmp_path))
    os.makedirs(paths.lb_dir('lb'))
    with open(paths.config('lb'), 'w') as f:
        f.write(f'''global
    stats socket {paths.stats_socket('lb')} mode 0600 level user
defaults
    mode tcp
    timeout client 5s
    timeout server 5s
    timeout connect 5s
frontend fe
    bind 127.0.0.1:{ports.server_port()}
    default_backend be
backend be
    server s1 127.0.0.1:9
''')
    # Longer than RELOAD_RESEND: a lost reload is sent again in time.
    proc = haproxy.Process(HAPROXY, paths, 'lb', timeout=15)
    yield proc
    proc.stop()


def _log(process):
    with open(os.path.join(process.paths.lb_dir('lb'), 'haproxy.log')) as f:
        return f.read()


def test_a_reload_right_after_the_start_is_taken(process, caplog):
    """start() returns once the master's CLI knows its worker: a reload
    sent before then was lost (about two in three without the wait), and
    had to be sent again (before that was built: the whole timeout and an
    ERROR)."""
    with caplog.at_level(logging.WARNING, logger=haproxy.__name__):
        for _ in range(5):
            first = process.start()
            second = process.reload()
            assert second != first
            assert process.workers()['current'] == [second]
            process.stop()
    assert 'sent again' not in caplog.text


def test_a_reload_the_master_did_not_take_is_sent_again(
        process, monkeypatch, caplog):
    """Whatever loses a reload command (here: the first one is not sent),
    the master's silence ("Reloading HAProxy" is its first word) has it
    sent again after RELOAD_RESEND, not the whole timeout later."""
    process.start()
    real_query, dropped = haproxy.query, []

    def query(path, command, timeout=5.0):
        if command == 'reload' and not dropped:
            dropped.append(command)
            return ''
        return real_query(path, command, timeout)
    monkeypatch.setattr(haproxy, 'query', query)
    monkeypatch.setattr(haproxy, 'RELOAD_RESEND', 1.0)
    with caplog.at_level(logging.WARNING, logger=haproxy.__name__):
        new = process.reload()
    assert dropped == ['reload']
    assert process.workers()['current'] == [new]
    assert 'did not take the reload in 1.0 s; sent again' in caplog.text


def test_a_reload_the_master_took_is_not_sent_again(
        process, monkeypatch, caplog):
    """The master's "Reloading HAProxy" is the acknowledgement: a new
    worker slower than RELOAD_RESEND (here 0 s: any) is waited for, not
    asked for again."""
    process.start()
    monkeypatch.setattr(haproxy, 'RELOAD_RESEND', 0.0)
    with caplog.at_level(logging.WARNING, logger=haproxy.__name__):
        new = process.reload()
    assert process.workers()['current'] == [new]
    assert 'sent again' not in caplog.text
    assert _log(process).count('Reloading HAProxy') == 1


def test_a_reload_that_cannot_load_is_not_taken_for_the_old_worker(
        process, monkeypatch):
    """Success is a worker the master did not list before: the old worker
    answering on the stats socket is not it, even when the stats socket
    did not answer before the reload (a worker pid read as None there made
    any worker look new)."""
    old = process.start()
    holder = socket.socket()
    holder.bind(('127.0.0.1', ports.server_port()))
    holder.listen()
    try:
        config = process.paths.config('lb')
        with open(config) as f:
            text = f.read()
        port = holder.getsockname()[1]
        with open(config, 'w') as f:
            f.write(re.sub(r'bind 127\.0\.0\.1:\d+',
                           f'bind 127.0.0.1:{port}', text))
        real, calls = process.worker_pid, []
        monkeypatch.setattr(process, 'worker_pid', lambda: (
            calls.append(1), None if len(calls) == 1 else real())[1])
        with pytest.raises(haproxy.ReloadFailed) as exc:
            process.reload()
        assert 'Address already in use' in str(exc.value)
        # The old worker is listed again: it serves on.
        assert process.workers()['current'] == [old]
    finally:
        holder.close()


def test_the_masters_log_is_trimmed_and_still_read(process, monkeypatch):
    """Every reload adds to haproxy.log for as long as the load balancer
    lives: over LOG_MAX it keeps its last LOG_KEEP bytes (whole lines),
    and the reload after reads what the master says next."""
    monkeypatch.setattr(haproxy, 'LOG_MAX', 4096)
    monkeypatch.setattr(haproxy, 'LOG_KEEP', 1024)
    process.start()
    path = os.path.join(process.paths.lb_dir('lb'), 'haproxy.log')
    with open(path, 'ab') as f:
        f.write(b''.join(b'[NOTICE] old line %05d\n' % i
                         for i in range(1000)))
    assert os.path.getsize(path) > 4096
    monkeypatch.setattr(haproxy, 'RELOAD_RESEND', 0.0)
    new = process.reload()
    assert process.workers()['current'] == [new]
    text = _log(process)
    assert len(text) < 4096
    assert text.startswith('[NOTICE] old line ')     # a whole line
    assert 'old line 00999' in text and 'old line 00000' not in text
    assert text.count('Reloading HAProxy') == 1
