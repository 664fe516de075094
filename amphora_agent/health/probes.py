"""The probes: one coroutine per probe, on non-blocking sockets.

Every probe runs on the checker's asyncio loop, opens its own socket from
the SE (bound to the configured source address, if any), and is bounded by
the monitor's ``timeout``.  A probe returns ``(ok, reason)``; ``reason`` is
a short text for logs ("connection refused", "HTTP 503", "timeout after
2s").  What counts as a success, per type (Octavia's amphora semantics):

TCP         the TCP handshake completes (the connection is then reset:
            no TIME_WAIT on the SE, as HAProxy does).
HTTP        connect, send ``<method> <url_path> HTTP/1.0`` (or 1.1 with
            ``http_version``), read the status line; success when the status
            code is in ``expected_codes``.
HTTPS       the same inside TLS, without certificate verification (as the
            amphora's ``check-ssl verify none``); SNI is ``domain_name``.
TLS-HELLO   a TLS handshake completes (certificate not verified).
PING        an ICMP / ICMPv6 echo reply comes back.  One shared socket per
            address family: a raw socket when we may open one (root), else
            an unprivileged ICMP datagram socket (net.ipv4.ping_group_range);
            replies are matched by source address and sequence number.
UDP-CONNECT send one datagram on a connected UDP socket; the member is down
            when an ICMP error (port / host unreachable) comes back within
            the timeout -- ECONNREFUSED on the socket -- and up otherwise,
            answer or not (Octavia's ``nc -uz`` / keepalived semantics).
            Linux members rate-limit ICMP errors per destination
            (net.ipv4.icmp_ratelimit: 1/s after a burst of 6): with a delay
            under ~1 s some probes of a closed port see no error.  Octavia
            refuses UDP-CONNECT delays under 3 s by default
            (udp_connect_min_interval_health_monitor).
"""

import asyncio
import errno
import os
import random
import re
import socket
import ssl
import struct

from oslo_log import log as logging

from amphora_agent.health import spec as hs

LOG = logging.getLogger(__name__)

IP_BIND_ADDRESS_NO_PORT = getattr(socket, 'IP_BIND_ADDRESS_NO_PORT', 24)
SOL_RAW = 255
ICMP_FILTER = 1
ICMP6_FILTER = 1
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129

_LINGER_RST = struct.pack('ii', 1, 0)
_STATUS_RE = re.compile(rb'^HTTP/\d(?:\.\d)?\s+(\d{3})(?:\s|$)')
MAX_STATUS_LINE = 8192
UDP_PAYLOAD = b'X'  # what `nc -uz` (Octavia's UDP-CONNECT check) sends
# asyncio.timeout (3.11+) is cheaper than wait_for (a task per probe).
_timeout = getattr(asyncio, 'timeout', None)


class ProbeFailed(Exception):
    """A probe's own verdict (bad status code, EOF, ...)."""


def _reason(exc):
    if isinstance(exc, ssl.SSLError):
        # Its errno is the TLS library's code, not an OS one.
        return f'TLS: {exc.reason or exc}'
    if isinstance(exc, OSError) and exc.errno:
        return (os.strerror(exc.errno).lower() if exc.errno in (
            errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH,
            errno.ENETUNREACH, errno.EPIPE) else
            f'{errno.errorcode.get(exc.errno, exc.errno)}: '
            f'{os.strerror(exc.errno)}')
    return str(exc) or type(exc).__name__


def _checksum(data):
    if len(data) % 2:
        data += b'\0'
    s = sum(struct.unpack(f'!{len(data) // 2}H', data))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff


class Pinger:
    """ICMP echo over one shared socket for an address family."""

    def __init__(self, loop, family, source=None):
        self.loop = loop
        self.family = family
        self.v6 = family == socket.AF_INET6
        self.proto = socket.IPPROTO_ICMPV6 if self.v6 else socket.IPPROTO_ICMP
        self.request_type = ICMP6_ECHO_REQUEST if self.v6 else \
            ICMP_ECHO_REQUEST
        self.reply_type = ICMP6_ECHO_REPLY if self.v6 else ICMP_ECHO_REPLY
        self.sock, self.raw = self._open()
        if source:
            self.sock.bind((source, 0))
        self.ident = random.getrandbits(16)
        self.seq = random.getrandbits(16)
        self.waiters = {}
        loop.add_reader(self.sock.fileno(), self._readable)

    def _open(self):
        kinds = [socket.SOCK_RAW, socket.SOCK_DGRAM]
        if os.geteuid() != 0:
            kinds.reverse()
        last = None
        for kind in kinds:
            try:
                sock = socket.socket(self.family, kind | socket.SOCK_NONBLOCK
                                     | socket.SOCK_CLOEXEC, self.proto)
            except OSError as exc:
                last = exc
                continue
            raw = kind == socket.SOCK_RAW
            if raw:
                self._filter(sock)
            return sock, raw
        raise OSError(last.errno if last else errno.EPERM,
                      'cannot open an ICMP socket (neither raw nor '
                      'datagram: not root and outside '
                      'net.ipv4.ping_group_range)')

    def _filter(self, sock):
        # Let only echo replies up to a raw socket: it sees every ICMP
        # packet of the namespace otherwise.  Bits set = types blocked.
        try:
            if self.v6:
                words = [0xffffffff] * 8
                words[self.reply_type >> 5] &= ~(1 << (self.reply_type & 31))
                sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER,
                                struct.pack('8I', *words))
            else:
                sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack(
                    'I', ~(1 << self.reply_type) & 0xffffffff))
        except OSError as exc:  # pragma: no cover - filters are optional
            LOG.debug('ICMP filter not set: %s', exc)

    def close(self):
        try:
            self.loop.remove_reader(self.sock.fileno())
        except Exception:  # noqa: BLE001 - loop already closed
            pass
        self.sock.close()
        for fut in self.waiters.values():
            if not fut.done():
                fut.cancel()
        self.waiters.clear()

    def _readable(self):
        while True:
            try:
                data, addr = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                LOG.debug('ICMP receive: %s', exc)
                return
            if self.raw and not self.v6:
                data = data[(data[0] & 0x0f) * 4:] if data else data
            if len(data) < 8:
                continue
            kind, _code, _csum, ident, seq = struct.unpack('!BBHHH',
                                                           data[:8])
            if kind != self.reply_type or (self.raw and ident != self.ident):
                continue
            source = addr[0].split('%', 1)[0]
            fut = self.waiters.get((source, seq))
            if fut is not None and not fut.done():
                fut.set_result(True)

    async def ping(self, address):
        """Wait for the echo reply of one request to ``address`` (the caller
        bounds the wait)."""
        self.seq = (self.seq + 1) & 0xffff
        seq = self.seq
        key = (address, seq)
        while key in self.waiters:  # 65536 requests in flight: unlikely
            self.seq = (self.seq + 1) & 0xffff
            seq = self.seq
            key = (address, seq)
        payload = b'octavia-dsr-hc\0\0'
        header = struct.pack('!BBHHH', self.request_type, 0, 0, self.ident,
                             seq)
        packet = header + payload
        if not self.v6:  # the kernel fills in the ICMPv6 checksum
            csum = _checksum(packet)
            packet = packet[:2] + struct.pack('!H', csum) + packet[4:]
        fut = self.loop.create_future()
        self.waiters[key] = fut
        try:
            while True:
                try:
                    self.sock.sendto(packet, (address, 0))
                    break
                except BlockingIOError:  # send buffer full: try again soon
                    await asyncio.sleep(0.001)
            await fut
        finally:
            self.waiters.pop(key, None)


class Prober:
    """Runs probes on one asyncio loop (every method but close() must be
    called in the loop's thread)."""

    def __init__(self, source4=None, source6=None):
        self.source4 = source4 or None
        self.source6 = source6 or None
        self._pingers = {}
        self._tls = None

    # -- shared resources ----------------------------------------------------

    @property
    def tls_context(self):
        if self._tls is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self._tls = ctx
        return self._tls

    def _pinger(self, loop, family):
        pinger = self._pingers.get(family)
        if pinger is None or pinger.loop is not loop:
            source = self.source6 if family == socket.AF_INET6 \
                else self.source4
            pinger = self._pingers[family] = Pinger(loop, family, source)
        return pinger

    def close(self):
        for pinger in self._pingers.values():
            pinger.close()
        self._pingers.clear()

    # -- sockets -------------------------------------------------------------

    def _socket(self, family, kind):
        sock = socket.socket(family, kind | socket.SOCK_NONBLOCK |
                             socket.SOCK_CLOEXEC)
        try:
            source = self.source6 if family == socket.AF_INET6 \
                else self.source4
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                _LINGER_RST)
                if source:
                    # Pick the port at connect time, per destination.
                    sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            if source:
                sock.bind((source, 0))
        except BaseException:
            sock.close()
            raise
        return sock

    # -- the probe -----------------------------------------------------------

    async def probe(self, target):
        """Probe ``target`` once with its monitor; return (ok, reason)."""
        mon = target.monitor
        kind = mon.type
        try:
            if _timeout is not None:
                async with _timeout(mon.timeout):
                    return await self._dispatch(target)
            return await asyncio.wait_for(self._dispatch(target),
                                          mon.timeout)
        except asyncio.TimeoutError:
            if kind == hs.UDP_CONNECT:
                return True, 'no ICMP error'
            return False, f'timeout after {mon.timeout:g}s'
        except (OSError, ProbeFailed, ssl.SSLError, EOFError) as exc:
            return False, _reason(exc)

    def _dispatch(self, target):
        kind = target.monitor.type
        if kind == hs.TCP:
            return self._tcp(target)
        if kind in hs.HTTP_TYPES:
            return self._http(target, tls=kind == hs.HTTPS)
        if kind == hs.TLS_HELLO:
            return self._tls_hello(target)
        if kind == hs.PING:
            return self._ping(target)
        if kind == hs.UDP_CONNECT:
            return self._udp(target)
        raise ProbeFailed(f'unsupported monitor type {kind}')

    @staticmethod
    def _family(target):
        return socket.AF_INET6 if target.family == 6 else socket.AF_INET

    async def _connect(self, target):
        loop = asyncio.get_running_loop()
        sock = self._socket(self._family(target), socket.SOCK_STREAM)
        try:
            await loop.sock_connect(sock, (target.address, target.port))
        except BaseException:
            sock.close()
            raise
        return loop, sock

    async def _tcp(self, target):
        _loop, sock = await self._connect(target)
        sock.close()
        return True, 'connected'

    async def _http(self, target, tls):
        mon = target.monitor
        loop, sock = await self._connect(target)
        try:
            version = mon.http_version or 1.0
            lines = [f'{mon.http_method} {mon.url_path} HTTP/{version:.1f}']
            if version >= 1.1:
                # As the amphora's HAProxy: an HTTP/1.0 check names no
                # host (Octavia takes domain_name with 1.1 only).
                lines.append('Host: ' + (mon.domain_name or (
                    f'[{target.address}]' if target.family == 6
                    else target.address)))
            lines += ['User-Agent: octavia-dsr-health', 'Accept: */*',
                      'Connection: close']
            if mon.http_method in ('POST', 'PUT', 'PATCH'):
                lines.append('Content-Length: 0')
            # UTF-8, the bytes HAProxy sends from its configuration for a
            # url_path beyond ASCII (Octavia accepts one).
            request = ('\r\n'.join(lines) + '\r\n\r\n').encode('utf-8')
            if tls:
                stream = await _TlsStream.open(loop, sock, self.tls_context,
                                               mon.domain_name)
                await stream.send(request)
                line = await _status_line(stream.recv)
            else:
                await loop.sock_sendall(sock, request)
                line = await _status_line(
                    lambda: loop.sock_recv(sock, 4096))
        finally:
            sock.close()
        m = _STATUS_RE.match(line)
        if not m:
            raise ProbeFailed(f'not an HTTP status line: {line[:60]!r}')
        code = int(m.group(1))
        if code in mon.codes:
            return True, f'HTTP {code}'
        return False, f'HTTP {code} not in {mon.expected_codes}'

    async def _tls_hello(self, target):
        """Octavia's TLS-HELLO is HAProxy's ssl-hello-chk: a ClientHello
        answered by a TLS handshake or alert record (first byte 0x16 or
        0x15) is up.  No handshake is completed: a server that wants a
        client certificate (mutual TLS passthrough) is up too."""
        loop, sock = await self._connect(target)
        try:
            hello = self.tls_context.wrap_bio(
                ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(),
                server_hostname=target.monitor.domain_name or None)
            try:
                hello.do_handshake()
            except ssl.SSLWantReadError:
                pass
            await loop.sock_sendall(sock, outgoing.read())
            head = await loop.sock_recv(sock, 5)
        finally:
            sock.close()
        if not head:
            raise ProbeFailed('connection closed without a TLS record')
        if head[0] not in (0x15, 0x16):
            raise ProbeFailed(f'not a TLS record: {head!r}')
        return True, 'TLS ' + ('alert' if head[0] == 0x15 else 'handshake')

    async def _ping(self, target):
        loop = asyncio.get_running_loop()
        pinger = self._pinger(loop, self._family(target))
        await pinger.ping(target.address)
        return True, 'echo reply'

    async def _udp(self, target):
        loop = asyncio.get_running_loop()
        sock = self._socket(self._family(target), socket.SOCK_DGRAM)
        try:
            sock.connect((target.address, target.port))
            sock.send(UDP_PAYLOAD)
            # ECONNREFUSED (ICMP port unreachable) or another ICMP error
            # raises here; an answer means up; silence (the caller's
            # timeout) means up too.
            await loop.sock_recv(sock, 2048)
        finally:
            sock.close()
        return True, 'answered'


async def _status_line(recv):
    buf = b''
    while b'\n' not in buf:
        chunk = await recv()
        if not chunk:
            if not buf:
                raise ProbeFailed('connection closed without a response')
            break
        buf += chunk
        if len(buf) > MAX_STATUS_LINE:
            break
    return buf.split(b'\n', 1)[0].rstrip(b'\r')


class _TlsStream:
    """TLS on a connected non-blocking socket with memory BIOs (no
    transports: a probe needs a handshake, one write and a few reads)."""

    def __init__(self, loop, sock, obj, incoming, outgoing):
        self.loop = loop
        self.sock = sock
        self.obj = obj
        self.incoming = incoming
        self.outgoing = outgoing

    @classmethod
    async def open(cls, loop, sock, context, server_hostname=None):
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = context.wrap_bio(incoming, outgoing,
                               server_hostname=server_hostname or None)
        stream = cls(loop, sock, obj, incoming, outgoing)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await stream._flush()
                await stream._fill()
        await stream._flush()
        return stream

    async def _flush(self):
        data = self.outgoing.read()
        if data:
            await self.loop.sock_sendall(self.sock, data)

    async def _fill(self):
        data = await self.loop.sock_recv(self.sock, 16384)
        if not data:
            self.incoming.write_eof()
            raise EOFError('connection closed during TLS')
        self.incoming.write(data)

    async def send(self, data):
        self.obj.write(data)
        await self._flush()

    async def recv(self):
        while True:
            try:
                return self.obj.read(4096)
            except ssl.SSLWantReadError:
                await self._flush()
                try:
                    await self._fill()
                except EOFError:
                    return b''
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b''
