"""Real servers on loopback for the health-check tests (threads in the test
process; every one is a context manager that closes its sockets and joins
its thread)."""

import http.server
import os
import socket
import ssl
import threading

CERT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data',
                    'selfsigned.pem')


def free_port(family=socket.AF_INET, kind=socket.SOCK_STREAM,
              host='127.0.0.1'):
    """A port nobody listens on (bound then closed: refused on connect)."""
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def has_ipv6():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(('::1', 0))
        return True
    except OSError:
        return False


class _Base:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class TcpAcceptor(_Base):
    """Accepts and closes every connection; counts them and records peers."""

    def __init__(self, host='127.0.0.1', port=0):
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.peers = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            if self._stop:
                conn.close()
                return
            self.peers.append(peer[0])
            conn.close()

    def close(self):
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(5)


class HangServer(_Base):
    """Accepts connections and never answers (a stuck application)."""

    def __init__(self, host='127.0.0.1'):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(5)
        for c in self.conns:
            c.close()


class _V6ThreadingServer(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


class HttpServer(_Base):
    """HTTP (or HTTPS with ``tls=True``) answering ``code`` to everything;
    records (method, path, Host header) of each request."""

    def __init__(self, host='127.0.0.1', code=200, tls=False, mtls=False):
        """mtls: TLS 1.2 wanting a client certificate (mutual TLS)."""
        outer = self
        self.code = code
        self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def handle_one_request(self):
                try:
                    super().handle_one_request()
                except (ConnectionError, ssl.SSLError):
                    self.close_connection = True

            def _any(self):
                outer.requests.append((self.command, self.path,
                                       self.headers.get('Host')))
                body = b'ok\n'
                self.send_response(outer.code)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                if self.command != 'HEAD':
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _any
            do_OPTIONS = do_PATCH = do_TRACE = _any

        cls = _V6ThreadingServer if ':' in host else \
            http.server.ThreadingHTTPServer
        cls = type('Server', (cls,), {'daemon_threads': True,
                                      'block_on_close': False})
        self.server = cls((host, 0), Handler)
        if tls or mtls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(CERT)
            if mtls:
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(CERT)
            self.server.socket = ctx.wrap_socket(self.server.socket,
                                                 server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={'poll_interval': 0.05},
            daemon=True)
        self._thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


class UdpServer(_Base):
    """UDP socket that answers (``echo=True``) or stays silent."""

    def __init__(self, host='127.0.0.1', echo=True):
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.echo = echo
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            self.received += 1
            if self.echo:
                self.sock.sendto(data, peer)

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
