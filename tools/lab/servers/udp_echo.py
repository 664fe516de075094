#!/usr/bin/env python3
"""Test UDP echo server run inside a member namespace (stdlib only).

    udp_echo.py --name m1 --port 5353 --bind 192.0.2.10 --bind 2001:db8:f::10

Answers every datagram with "member=<name> <payload>" from the socket it
arrived on (so the reply's source is the bound VIP); with --show-peer
"member=<name> peer=<source address> <payload>" (what a proxy in front
of it looks like from here).  Prints "READY"
(flushed) once every address is bound; runs until SIGTERM.
"""

import argparse
import ipaddress
import selectors
import signal
import socket
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, default=5353)
    ap.add_argument("--bind", action="append", required=True)
    ap.add_argument("--show-peer", action="store_true")
    args = ap.parse_args()

    sel = selectors.DefaultSelector()
    socks = []
    for addr in args.bind:
        fam = socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 \
            else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((addr, args.port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)

    running = [True]

    def stop(*_):
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    prefix = f"member={args.name} ".encode()
    print("READY", flush=True)
    while running[0]:
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            while True:
                try:
                    data, peer = s.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                extra = f"peer={peer[0]} ".encode() if args.show_peer \
                    else b""
                try:
                    s.sendto(prefix + extra + data, peer)
                except OSError:
                    pass
    for s in socks:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
