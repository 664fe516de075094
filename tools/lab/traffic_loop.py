#!/usr/bin/env python3
"""Traffic that must keep flowing while the control plane suffers; run in
the client namespace (stdlib only):

    traffic_loop.py VIP PORT [--interval 0.05] [--established N]

Prints "ESTABLISHED <client port>" for each long-lived connection,
"STARTED" once every flow runs, "MEMBER <name>" when a new connection
first reaches that member ("OK <n>" after each with --progress: the
n-th served); on SIGUSR1 the uploads send the rest of their
body at once and complete (new connections go on); on SIGTERM (or SIGINT)
it stops and prints one JSON line:
    new:   {"ok": n, "failed": n, "errors": [first few], "members": {...},
            "attempts": [[wall time, client port, member|null,
                          error|null], ...]}
           -- one new TCP connection (GET /) every interval;
    established: {"ok": bool, "sent": bytes, "error": str|null,
                  "response": str, "max_stall_ms": float, "port": int}
           -- one TCP connection open throughout: a POST /upload whose body
           trickles (1 KiB every interval); the server's byte count and
           sha256 must match what was sent;
    established_all: [the same, one per long-lived connection (N)].
The client ports tell, with a record of the SYNs each server side saw,
which connection went where.
"""

import argparse
import hashlib
import json
import signal
import socket
import sys
import threading
import time

CHUNK = 1024
# Content-Length is sent first: room for 5 minutes of trickling at 0.05 s.
MAX_CHUNKS = 6000

_OUT = threading.Lock()


def say(line):
    """Print one line in one write: print() writes the text and its
    newline apart, so a line of another thread could land between them
    ("MEMBER m1STARTED", and a reader waiting for ^STARTED times out)."""
    with _OUT:
        sys.stdout.write(line + '\n')
        sys.stdout.flush()


def _socket(vip, timeout):
    """A socket bound to its ephemeral port before connecting: the port is
    known even when the connection fails."""
    fam = socket.AF_INET6 if ':' in vip else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind(('::' if fam == socket.AF_INET6 else '0.0.0.0', 0))
    return s, s.getsockname()[1]


def _read_all(s):
    data = b''
    while True:
        part = s.recv(65536)
        if not part:
            return data
        data += part


def new_connections(vip, port, interval, stop, result, progress=False):
    while not stop.is_set():
        t0 = time.monotonic()
        wall = time.time()
        s, local = _socket(vip, 2.0)
        member = error = None
        try:
            try:
                s.connect((vip, port))
                s.sendall(f'GET / HTTP/1.0\r\nHost: {vip}\r\n\r\n'.encode())
                data = _read_all(s).decode(errors='replace')
            finally:
                s.close()
            head, _, body = data.partition('\r\n\r\n')
            if ' 200 ' not in head.split('\r\n', 1)[0]:
                raise RuntimeError(f'bad answer {head[:80]!r}')
            member = body.strip().partition('=')[2] or '?'
            if member not in result['members']:
                say(f'MEMBER {member}')
            result['ok'] += 1
            result['members'][member] = result['members'].get(member, 0) + 1
            if progress:
                say(f'OK {result["ok"]}')
        except (OSError, RuntimeError) as exc:
            member, error = None, repr(exc)
            result['failed'] += 1
            if len(result['errors']) < 5:
                result['errors'].append(f'{time.time():.3f} {exc!r}')
        result['attempts'].append([round(wall, 3), local, member, error])
        stop.wait(max(0.0, interval - (time.monotonic() - t0)))


def established(vip, port, interval, stop, finish, started, result):
    digest = hashlib.sha256()
    chunk = bytes(range(256)) * (CHUNK // 256)
    sent = 0
    last = time.monotonic()
    try:
        s, result['port'] = _socket(vip, 5.0)
        s.connect((vip, port))
        say(f'ESTABLISHED {result["port"]}')
        s.sendall(f'POST /upload HTTP/1.0\r\nHost: {vip}\r\n'
                  f'Content-Type: application/octet-stream\r\n'
                  f'Content-Length: {CHUNK * MAX_CHUNKS}\r\n\r\n'.encode())
        started.set()
        for i in range(MAX_CHUNKS):
            s.sendall(chunk)
            digest.update(chunk)
            sent += CHUNK
            now = time.monotonic()
            result['max_stall_ms'] = max(result['max_stall_ms'],
                                         (now - last) * 1000.0)
            last = now
            if not (stop.is_set() or finish.is_set()):
                stop.wait(interval)
        answer = _read_all(s).decode(errors='replace')
        s.close()
        result['response'] = answer.partition('\r\n\r\n')[2].strip()
        result['ok'] = (f'bytes={sent} ' in result['response'] and
                        f'sha256={digest.hexdigest()}' in result['response'])
    except OSError as exc:
        result['error'] = repr(exc)
    finally:
        result['sent'] = sent
        started.set()


def main():
    p = argparse.ArgumentParser()
    p.add_argument('vip')
    p.add_argument('port', type=int)
    p.add_argument('--interval', type=float, default=0.05)
    p.add_argument('--established', type=int, default=1,
                   help='long-lived connections (uploads) open throughout')
    p.add_argument('--progress', action='store_true',
                   help='print "OK <n>" after each new connection served')
    args = p.parse_args()
    stop = threading.Event()
    # SIGUSR1: finish the uploads now (as a client whose transfer ends
    # while an L7 SE drains), new connections go on until SIGTERM.
    finish = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *a: finish.set())
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    new = {'ok': 0, 'failed': 0, 'errors': [], 'members': {},
           'attempts': []}
    ests = [{'ok': False, 'sent': 0, 'error': None, 'response': '',
             'max_stall_ms': 0.0, 'port': None}
            for _ in range(args.established)]
    threads = []
    for est in ests:
        started = threading.Event()
        threads.append(threading.Thread(target=established, args=(
            args.vip, args.port, args.interval, stop, finish, started,
            est)))
        threads[-1].start()
        started.wait(10)
    threads.append(threading.Thread(target=new_connections, args=(
        args.vip, args.port, args.interval, stop, new, args.progress)))
    threads[-1].start()
    say('STARTED')
    while not stop.is_set():
        stop.wait(0.5)
    for t in threads:
        t.join(60)
    say(json.dumps({'new': new, 'established': ests[0],
                    'established_all': ests}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
