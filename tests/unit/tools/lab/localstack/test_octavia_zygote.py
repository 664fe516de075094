"""octavia_zygote.Forked: a child's exit as the zygote tells it -- on the
request's connection, possibly in the same read as the pid (a child that
ended at once), or never (the zygote died: -1)."""

import json
import socket

from tools.lab.localstack import octavia_zygote


def _pair():
    ours, zygote = socket.socketpair()
    return ours, zygote


def test_running_until_the_exit_line_arrives():
    ours, zygote = _pair()
    forked = octavia_zygote.Forked(42, ours)
    assert forked.poll() is None
    zygote.sendall(json.dumps({'exit': 0})[:5].encode())     # part of it
    assert forked.poll() is None
    zygote.sendall(json.dumps({'exit': 0})[5:].encode() + b'\n')
    assert forked.poll() == 0 and forked.returncode == 0
    zygote.close()


def test_an_exit_read_with_the_pid_is_kept():
    ours, zygote = _pair()
    forked = octavia_zygote.Forked(42, ours, b'{"exit": 3}\n')
    assert forked.poll() == 3
    zygote.close()


def test_a_zygote_gone_before_telling_is_minus_one():
    ours, zygote = _pair()
    forked = octavia_zygote.Forked(42, ours)
    zygote.close()
    assert forked.poll() == -1
