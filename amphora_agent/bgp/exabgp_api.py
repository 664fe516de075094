"""ExaBGP API helper: relays commands from a unix socket to ExaBGP.

ExaBGP starts this script as a ``process`` of its configuration and talks to
it over the script's stdin/stdout (``encoder text``, ``api.ack true``: every
command is answered with its output lines and a final ``done`` or
``error``).  The script listens on a unix stream socket (path: argv[1]) and
serves one command per connection::

    client -> helper:  one command line, e.g. "show neighbor summary\\n"
    helper -> client:  ExaBGP's answer lines, ending with "done" or "error",
                       then the helper closes the connection

The helper belongs to ExaBGP, not to the agent: it lives exactly as long as
ExaBGP does, so an agent restart (even kill -9) leaves both running and the
restarted agent just connects to the socket again.  It exits when ExaBGP
closes its stdin (ExaBGP stopped or died), and removes its socket.

Commands are serialised (one at a time); an answer a client did not wait for
is still read to its end, so the next command never sees a stale answer.

Stdlib only and run with ``python -S``: it must start fast and must not
depend on the agent's packages (ExaBGP may respawn it at any time).
"""

import os
import select
import signal
import socket
import sys
import time

# How long a client may take to send its command line.
CLIENT_READ_TIMEOUT = 2.0
# How long ExaBGP may take to answer one command.
ANSWER_TIMEOUT = 30.0
# A command line larger than this is refused.
MAX_COMMAND = 64 * 1024
TERMINATORS = ('done', 'error')


def log(msg):
    # ExaBGP passes our stderr through to its own (the log file).
    try:
        sys.stderr.write(f'octavia-dsr-api[{os.getpid()}]: {msg}\n')
        sys.stderr.flush()
    except OSError:
        pass


class ExaBGPGone(Exception):
    """ExaBGP closed our stdin: time to go."""


class Relay:
    def __init__(self, sock_path, stdin_fd=0, stdout_fd=1):
        self.sock_path = sock_path
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.buf = b''
        self.listener = None
        self.sock_id = None

    # -- ExaBGP side ---------------------------------------------------

    def _fill(self, timeout):
        """Read what ExaBGP sent within ``timeout`` into self.buf; False on
        timeout.  Raises ExaBGPGone on EOF."""
        r, _, _ = select.select([self.stdin_fd], [], [], timeout)
        if not r:
            return False
        data = os.read(self.stdin_fd, 65536)
        if not data:
            raise ExaBGPGone()
        self.buf += data
        return True

    def _line(self, deadline):
        while b'\n' not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self._fill(left):
                return None
        line, self.buf = self.buf.split(b'\n', 1)
        return line.decode('utf-8', 'replace').rstrip('\r')

    def drain_unsolicited(self):
        """Discard what ExaBGP sent while no command was outstanding (e.g.
        the tail of an answer that timed out)."""
        while self._fill(0):
            pass
        if self.buf:
            if not self.buf.startswith(b'shutdown'):   # ExaBGP stopping
                log(f'discarding unsolicited output: {self.buf[:200]!r}')
            self.buf = b''

    def execute(self, command):
        """Send one command to ExaBGP; return its answer lines (the last
        one is 'done' or 'error', or 'timeout' when none came)."""
        self.drain_unsolicited()
        data = command.encode() + b'\n'
        try:
            while data:
                n = os.write(self.stdout_fd, data)
                data = data[n:]
        except BrokenPipeError:
            raise ExaBGPGone() from None
        lines = []
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while True:
            line = self._line(deadline)
            if line is None:
                log(f'no answer to {command!r} within {ANSWER_TIMEOUT}s')
                lines.append('timeout')
                return lines
            lines.append(line)
            if line in TERMINATORS:
                return lines

    # -- client side ---------------------------------------------------

    def bind(self):
        tmp = f'{self.sock_path}.{os.getpid()}.tmp'
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            s.bind(tmp)
        finally:
            os.umask(old)
        s.listen(16)
        # Atomic replace: a client never sees a missing or dead socket file
        # when a respawned helper takes over from its predecessor.
        os.rename(tmp, self.sock_path)
        st = os.stat(self.sock_path)
        self.sock_id = (st.st_dev, st.st_ino)
        self.listener = s

    def serve_client(self, conn):
        conn.settimeout(CLIENT_READ_TIMEOUT)
        data = b''
        try:
            while b'\n' not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_COMMAND:
                    conn.sendall(b'error\n')
                    return
        except (socket.timeout, OSError):
            return
        command = data.split(b'\n', 1)[0].decode('utf-8', 'replace').strip()
        if not command:
            return
        lines = self.execute(command)
        try:
            conn.sendall(('\n'.join(lines) + '\n').encode())
        except OSError:
            pass  # the client went away; the answer was consumed anyway

    def run(self):
        self.bind()
        try:
            while True:
                r, _, _ = select.select([self.listener, self.stdin_fd], [],
                                        [])
                if self.stdin_fd in r:
                    # Output with no command outstanding (or EOF).
                    self.drain_unsolicited()
                if self.listener in r:
                    conn, _ = self.listener.accept()
                    with conn:
                        self.serve_client(conn)
        except ExaBGPGone:
            return 0
        finally:
            self.close()

    def close(self):
        if self.listener is not None:
            try:
                # Only remove the socket file if it is still ours.
                st = os.stat(self.sock_path)
                if (st.st_dev, st.st_ino) == self.sock_id:
                    os.unlink(self.sock_path)
            except OSError:
                pass
            self.listener.close()
            self.listener = None


def send(sock_path, command, timeout=10.0):
    """Client side: send ``command``, return ExaBGP's answer lines (the
    last one is 'done', 'error' or 'timeout')."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall(command.encode() + b'\n')
        data = b''
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    return data.decode(errors='replace').splitlines()


USAGE = '''usage: exabgp_api.py SOCKET_PATH          (run by ExaBGP)
       exabgp_api.py --send SOCKET_PATH COMMAND...   (operator: e.g.
           exabgp_api.py --send /run/octavia-dsr/se1/bgp/api.sock \\
               show neighbor summary)
'''


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) >= 3 and argv[0] == '--send':
        lines = send(argv[1], ' '.join(argv[2:]))
        for line in lines:
            print(line)
        return 0 if lines and lines[-1] == 'done' else 1
    if len(argv) != 1 or argv[0].startswith('-'):
        sys.stderr.write(USAGE)
        return 2
    # ExaBGP signals its helpers with SIGTERM when it stops; leave quietly.
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    try:
        return Relay(argv[0]).run()
    except KeyboardInterrupt:
        return 0


if __name__ == '__main__':
    sys.exit(main())
