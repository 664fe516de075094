#!/usr/bin/env python3
"""Test HTTP server run inside a member namespace (stdlib only).

    http_server.py --name m1 --port 80 --bind 192.0.2.10 --bind 2001:db8:f::10

GET /           -> "member=<name>\\n"
GET /bytes/N    -> N bytes (repeating pattern), header X-Member: <name>
POST /upload    -> reads the body -> "member=<name> bytes=N sha256=HEX\\n"

Every response carries "X-Member: <name>".  Prints "READY" (flushed) once
every address is bound, then serves until SIGTERM.
"""

import argparse
import hashlib
import http.server
import ipaddress
import signal
import socket
import socketserver
import sys
import threading


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "dsr-test/1"
    member = "?"

    def log_message(self, fmt, *args):  # quiet: stdout is the READY channel
        pass

    def _reply(self, code, body, ctype="text/plain"):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Member", self.member)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._reply(200, f"member={self.member}\n")
        elif path.startswith("/bytes/"):
            try:
                n = int(path[len("/bytes/"):])
            except ValueError:
                self._reply(400, "bad length\n")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.send_header("X-Member", self.member)
            self.end_headers()
            chunk = bytes(range(256)) * 256  # 64 KiB
            while n > 0:
                part = chunk[:min(n, len(chunk))]
                self.wfile.write(part)
                n -= len(part)
        else:
            self._reply(404, "not found\n")

    def do_POST(self):
        if self.path.split("?", 1)[0] != "/upload":
            self._reply(404, "not found\n")
            return
        length = int(self.headers.get("Content-Length") or 0)
        h = hashlib.sha256()
        got = 0
        while got < length:
            data = self.rfile.read(min(65536, length - got))
            if not data:
                break
            h.update(data)
            got += len(data)
        self._reply(200, f"member={self.member} bytes={got} "
                         f"sha256={h.hexdigest()}\n")


class Server4(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128

    def server_bind(self):
        # HTTPServer.server_bind() calls socket.getfqdn(), a DNS lookup that
        # hangs for seconds in a namespace without a resolver: skip it.
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port


class Server6(Server4):
    address_family = socket.AF_INET6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--bind", action="append", required=True,
                    help="address to listen on (repeatable)")
    args = ap.parse_args()

    handler = type("BoundHandler", (Handler,), {"member": args.name})
    servers = []
    for addr in args.bind:
        cls = Server6 if ipaddress.ip_address(addr).version == 6 else Server4
        servers.append(cls((addr, args.port), handler))
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    print("READY", flush=True)
    stop.wait()
    # No shutdown(): each waits for its serve_forever's next 0.5 s poll,
    # one server after the other (1-2 s of every lab's teardown).  The
    # serving threads are daemons and the sockets close with the process.
    return 0


if __name__ == "__main__":
    sys.exit(main())
