#!/usr/bin/env python3
"""Client side of the functional tests, run inside the client namespace
(stdlib only).  Importable, and a command line:

    client.py get VIP PORT [--path /] [--source-port N] [--source ADDR]
        prints the response body; exits 1 on an error or a non-200 status.
    client.py upload VIP PORT NBYTES [--source-port N] [--source ADDR]
        POSTs NBYTES pseudo-random bytes to /upload; prints one JSON line
        {"response": "...", "sha256": "<of what was sent>", "bytes": N}.
    client.py udp-probe VIP PORT --duration D [--interval 0.01]
                         [--source-port N] [--source ADDR]
        prints "STARTED", sends "probe seq=<n>" every interval for D
        seconds, and prints a JSON summary on its last line:
        sent, received, lost, loss_ratio, duplicates, errors,
        members {name: replies}, switches (changes of answering member in
        sequence order), first_member, last_member, max_consecutive_lost,
        max_gap_ms, rtt_ms {avg, p50, p99, max}.
"""

import argparse
import hashlib
import http.client
import ipaddress
import json
import random
import select
import socket
import struct
import sys
import time


def _family(addr):
    return socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 \
        else socket.AF_INET


def _bound_socket(vip, kind, source=None, source_port=None,
                  socket_factory=socket.socket):
    fam = _family(vip)
    s = socket_factory(fam, kind)
    if source is not None or source_port is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((source or ("::" if fam == socket.AF_INET6 else "0.0.0.0"),
                source_port or 0))
    return s


class _Conn(http.client.HTTPConnection):
    def __init__(self, vip, port, timeout, source=None, source_port=None,
                 socket_factory=socket.socket):
        super().__init__(vip, port, timeout=timeout)
        self._src = (source, source_port)
        self._socket_factory = socket_factory

    def connect(self):
        s = _bound_socket(self.host, socket.SOCK_STREAM, *self._src,
                          socket_factory=self._socket_factory)
        s.settimeout(self.timeout)
        try:
            s.connect((self.host, self.port))
        except BaseException:
            s.close()
            raise
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._src[1]:
            # A fixed source port is reused by the next request to the
            # same VIP and port at once; had this side closed first, its
            # TIME_WAIT would hold that 4-tuple (connect: EADDRNOTAVAIL,
            # rehearsal 134).  The response is read whole before the
            # close, which then resets instead and leaves none.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack('ii', 1, 0))
        self.sock = s


def _request(vip, port, method, path, body=None, timeout=5.0, source=None,
             source_port=None, socket_factory=socket.socket):
    conn = _Conn(vip, port, timeout, source, source_port, socket_factory)
    try:
        headers = {"Connection": "close"}
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status}: "
                               f"{data[:200]!r}")
        return data
    finally:
        conn.close()


def http_get(vip, port, source_port=None, path="/", timeout=5.0,
             source=None, socket_factory=socket.socket):
    """GET and return the body as text.  socket_factory(family, kind): the
    connection's socket (a caller outside the client's namespace makes it
    there)."""
    return _request(vip, port, "GET", path, timeout=timeout, source=source,
                    source_port=source_port,
                    socket_factory=socket_factory).decode(errors="replace")


def http_upload(vip, port, nbytes, source_port=None, timeout=30.0,
                source=None, seed=None):
    """POST nbytes pseudo-random bytes to /upload.
    Returns (response_text, sha256_hex_of_sent_body)."""
    body = random.Random(seed).randbytes(nbytes)
    digest = hashlib.sha256(body).hexdigest()
    resp = _request(vip, port, "POST", "/upload", body=body, timeout=timeout,
                    source=source, source_port=source_port)
    return resp.decode(errors="replace"), digest


def _percentile(sorted_vals, q):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return sorted_vals[k]


def udp_probe(vip, port, duration, interval=0.01, source_port=None,
              source=None, reply_timeout=0.5, on_start=None):
    """Probe vip:port over UDP; return the summary dict (see module doc)."""
    s = _bound_socket(vip, socket.SOCK_DGRAM, source, source_port)
    s.connect((vip, port))
    s.setblocking(False)
    sent_at = {}
    replies = {}  # seq -> member
    rtts = []
    dups = errors = 0
    seq = 0
    if on_start:
        on_start()
    start = time.monotonic()
    next_send = start
    end_send = start + duration
    deadline = end_send + reply_timeout

    def drain():
        nonlocal dups, errors
        while True:
            try:
                data = s.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                errors += 1
                continue
            now = time.monotonic()
            text = data.decode(errors="replace")
            member = text.split(" ", 1)[0].partition("=")[2] or "?"
            try:
                rseq = int(text.rsplit("seq=", 1)[1].split()[0])
            except (IndexError, ValueError):
                continue
            if rseq in replies:
                dups += 1
                continue
            replies[rseq] = member
            if rseq in sent_at:
                rtts.append((now - sent_at[rseq]) * 1000.0)

    while True:
        now = time.monotonic()
        if now >= deadline or (now >= end_send and len(replies) >= seq):
            break
        if now >= next_send and now < end_send:
            try:
                s.send(f"probe seq={seq}".encode())
                sent_at[seq] = now
            except (ConnectionRefusedError, BlockingIOError):
                errors += 1
                sent_at[seq] = now
            seq += 1
            next_send += interval
            if next_send < now - interval:  # fell behind: don't burst
                next_send = now + interval
            continue
        wake = deadline if now >= end_send else min(next_send, deadline)
        r, _, _ = select.select([s], [], [], max(0.0, wake - now))
        if r:
            drain()
    drain()
    s.close()

    members = {}
    switches = 0
    prev = None
    max_lost = run_lost = 0
    for n in range(seq):
        m = replies.get(n)
        if m is None:
            run_lost += 1
            max_lost = max(max_lost, run_lost)
            continue
        run_lost = 0
        members[m] = members.get(m, 0) + 1
        if prev is not None and m != prev:
            switches += 1
        prev = m
    ordered = [replies[n] for n in range(seq) if n in replies]
    rtts.sort()
    received = sum(1 for n in range(seq) if n in replies)
    return {
        "vip": vip,
        "port": port,
        "sent": seq,
        "received": received,
        "lost": seq - received,
        "loss_ratio": round((seq - received) / seq, 6) if seq else 0.0,
        "duplicates": dups,
        "errors": errors,
        "members": members,
        "switches": switches,
        "first_member": ordered[0] if ordered else None,
        "last_member": ordered[-1] if ordered else None,
        "max_consecutive_lost": max_lost,
        "max_gap_ms": round(max_lost * interval * 1000.0, 3),
        "rtt_ms": {
            "avg": round(sum(rtts) / len(rtts), 3) if rtts else None,
            "p50": _round(_percentile(rtts, 0.5)),
            "p99": _round(_percentile(rtts, 0.99)),
            "max": _round(rtts[-1] if rtts else None),
        },
    }


def _round(v):
    return None if v is None else round(v, 3)


def main(argv=None):
    ap = argparse.ArgumentParser(description="DSR functional-test client")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("vip")
        p.add_argument("port", type=int)
        p.add_argument("--source-port", type=int)
        p.add_argument("--source")
        p.add_argument("--timeout", type=float, default=10.0)

    g = sub.add_parser("get")
    common(g)
    g.add_argument("--path", default="/")
    u = sub.add_parser("upload")
    common(u)
    u.add_argument("nbytes", type=int)
    p = sub.add_parser("udp-probe")
    common(p)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--interval", type=float, default=0.01)
    p.add_argument("--reply-timeout", type=float, default=0.5)
    args = ap.parse_args(argv)

    try:
        if args.cmd == "get":
            sys.stdout.write(http_get(args.vip, args.port, args.source_port,
                                      args.path, args.timeout, args.source))
        elif args.cmd == "upload":
            resp, digest = http_upload(args.vip, args.port, args.nbytes,
                                       args.source_port, args.timeout,
                                       args.source)
            print(json.dumps({"response": resp.strip(), "sha256": digest,
                              "bytes": args.nbytes}))
        else:
            res = udp_probe(args.vip, args.port, args.duration,
                            args.interval, args.source_port, args.source,
                            args.reply_timeout,
                            on_start=lambda: print("STARTED", flush=True))
            print(json.dumps(res), flush=True)
    except (OSError, RuntimeError, http.client.HTTPException) as exc:
        print(f"client error: {exc!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
