"""The API helper (exabgp_api.py) with the test playing ExaBGP on its
stdin/stdout."""

import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from amphora_agent.bgp import exabgp_api

HELPER = exabgp_api.__file__


class Helper:
    """The helper as ExaBGP runs it; the test reads its commands from
    ``self.proc.stdout`` and answers on ``self.proc.stdin``."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='bgp-api-')
        self.sock = os.path.join(self.dir, 'api.sock')
        self.proc = subprocess.Popen(
            [sys.executable, '-S', HELPER, self.sock],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.sock):
            assert self.proc.poll() is None, self.proc.stderr.read()
            assert time.monotonic() < deadline, 'helper socket not created'
            time.sleep(0.005)

    def read_command(self, timeout=5):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert r, 'no command relayed'
        return self.proc.stdout.readline().decode().rstrip('\n')

    def answer(self, *lines):
        self.proc.stdin.write(''.join(f'{x}\n' for x in lines).encode())
        self.proc.stdin.flush()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            f.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def helper():
    h = Helper()
    try:
        yield h
    finally:
        h.close()


def ask(h, command, result):
    result.append(exabgp_api.send(h.sock, command))


def test_relays_one_command_and_its_answer(helper):
    out = []
    t = threading.Thread(target=ask, args=(helper, 'show adj-rib out', out))
    t.start()
    assert helper.read_command() == 'show adj-rib out'
    helper.answer('198.18.1.1 ipv4 unicast 192.0.2.10/32 next-hop x', 'done')
    t.join(5)
    assert out == [['198.18.1.1 ipv4 unicast 192.0.2.10/32 next-hop x',
                    'done']]
    assert os.stat(helper.sock).st_mode & 0o077 == 0


def test_answer_of_a_vanished_client_is_not_given_to_the_next(helper):
    s = socket.socket(socket.AF_UNIX)
    s.connect(helper.sock)
    s.sendall(b'first\n')
    assert helper.read_command() == 'first'
    s.close()                          # the agent died mid-command
    helper.answer('stale line', 'done')
    out = []
    t = threading.Thread(target=ask, args=(helper, 'second', out))
    t.start()
    assert helper.read_command() == 'second'
    helper.answer('error')
    t.join(5)
    assert out == [['error']]


def test_unsolicited_output_is_discarded(helper):
    helper.answer('shutdown 1 2', '')
    helper.answer('something else')
    out = []
    t = threading.Thread(target=ask, args=(helper, 'version', out))
    t.start()
    assert helper.read_command() == 'version'
    helper.answer('exabgp 5.0.15', 'done')
    t.join(5)
    assert out == [['exabgp 5.0.15', 'done']]


def test_exits_and_removes_its_socket_when_exabgp_goes(helper):
    helper.proc.stdin.close()
    assert helper.proc.wait(5) == 0
    assert not os.path.exists(helper.sock)


def test_respawned_helper_takes_the_socket_over(helper):
    second = subprocess.Popen([sys.executable, '-S', HELPER, helper.sock],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        # The new helper renames its socket over the old one.
        old = os.stat(helper.sock).st_ino
        while os.stat(helper.sock).st_ino == old:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        # The old helper leaving must not remove the new one's socket.
        helper.proc.stdin.close()
        helper.proc.wait(5)
        assert os.path.exists(helper.sock)
        out = []
        t = threading.Thread(
            target=lambda: out.append(exabgp_api.send(helper.sock, 'x')))
        t.start()
        r, _, _ = select.select([second.stdout], [], [], 5)
        assert r and second.stdout.readline() == b'x\n'
        second.stdin.write(b'done\n')
        second.stdin.flush()
        t.join(5)
        assert out == [['done']]
    finally:
        second.kill()
        second.wait(5)
        second.stdin.close()
        second.stdout.close()


def test_cli_send(helper):
    cli = subprocess.Popen([sys.executable, '-S', HELPER, '--send',
                            helper.sock, 'show', 'neighbor', 'summary'],
                           stdout=subprocess.PIPE, text=True)
    assert helper.read_command() == 'show neighbor summary'
    helper.answer('Peer AS', 'done')
    out, _ = cli.communicate(timeout=5)
    assert cli.returncode == 0 and out.splitlines() == ['Peer AS', 'done']


def test_usage():
    assert exabgp_api.main([]) == 2
    assert exabgp_api.main(['-x']) == 2
