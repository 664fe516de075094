"""The real `openstack` CLI, forked from a process that imported it once.

A call of the `openstack` command spends ~0.8 of its ~1.2 CPU-seconds
importing openstackclient, cliff, keystoneauth and openstacksdk before it
parses its arguments; the end-to-end tests make hundreds of calls.  This
zygote imports them once and forks a child per call, which runs the same
``openstackclient.shell.main(argv)`` the console script runs, in the
caller's environment, with its output captured: the CLI's own code from
argument parsing to the HTTP request, without the import.

    zygote = CliZygote(python, workdir)      # started on first use
    proc = zygote.run(['loadbalancer', 'list'], env, timeout=60)
    zygote.stop()

Protocol on a unix socket (0600, in the lab's workdir): one connection per
call; the request is a JSON object {"argv", "env", "timeout"} followed by
shutdown of the writing side, the answer {"returncode", "stdout",
"stderr"}.  A call past its timeout is killed (SIGALRM in the child) and
the caller gets subprocess.TimeoutExpired, as with subprocess.run.

Run as a script (``python cli_zygote.py SOCKET``) by CliZygote, with the
stack's interpreter.
"""

import json
import os
import signal
import socket
import socketserver
import subprocess
import sys

READY = 'READY'


def _recv_all(sock):
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b''.join(chunks)
        chunks.append(data)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):       # in a child forked for this request
        import io
        from openstackclient import shell
        request = json.loads(_recv_all(self.request))
        os.environ.clear()
        os.environ.update(request['env'])
        signal.alarm(max(1, int(request['timeout'])))
        out = io.TextIOWrapper(io.BytesIO(), encoding='utf-8')
        err = io.TextIOWrapper(io.BytesIO(), encoding='utf-8')
        sys.stdout, sys.stderr = out, err
        sys.argv = [sys.argv[0], *request['argv']]
        try:
            rc = shell.main(request['argv'])
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # noqa: BLE001 -- the caller gets it
            err.write(f'{type(exc).__name__}: {exc}\n')
            rc = 1
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        out.flush()
        err.flush()
        answer = {'returncode': rc or 0,
                  'stdout': out.buffer.getvalue().decode('utf-8', 'replace'),
                  'stderr': err.buffer.getvalue().decode('utf-8', 'replace')}
        self.request.sendall(json.dumps(answer).encode())


class _Server(socketserver.ForkingMixIn, socketserver.UnixStreamServer):
    # Children are reaped as they end; a call never waits on another.
    block_on_close = False


def serve(path):
    # cliff names the program from sys.argv[0] when it is imported.
    sys.argv = [os.path.join(os.path.dirname(sys.executable), 'openstack')]
    # What every call imports (the console script's own import chain and
    # the plugins `loadbalancer` commands load), done once here.
    import octaviaclient.osc.v2.load_balancer  # noqa: F401
    import openstack.connection  # noqa: F401
    import openstackclient.shell  # noqa: F401
    old = os.umask(0o177)
    try:
        server = _Server(path, _Handler)
    finally:
        os.umask(old)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(READY, flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


class CliZygote:
    """A zygote for one stack, started on the first call."""

    def __init__(self, python, workdir, start_timeout=60.0):
        self.python = python
        self.path = os.path.join(str(workdir), 'cli-zygote.sock')
        self.start_timeout = start_timeout
        self.proc = None

    def start(self):
        from tools.lab import netns
        if os.path.exists(self.path):
            os.unlink(self.path)
        proc = netns.Proc([self.python, os.path.abspath(__file__),
                           self.path])
        try:
            proc.wait_for_line(rf'^{READY}$', self.start_timeout)
        except BaseException:
            netns.kill_proc(proc)
            raise
        self.proc = proc

    def run(self, argv, env, timeout):
        """subprocess.run(['openstack', *argv], env=env, timeout=timeout,
        capture_output=True, text=True), answered by a forked child."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        request = json.dumps({'argv': list(argv), 'env': dict(env),
                              'timeout': timeout}).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout + 5)
            sock.connect(self.path)
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            try:
                data = _recv_all(sock)
            except socket.timeout:
                data = b''
        if not data:        # killed by its alarm (or the zygote died)
            raise subprocess.TimeoutExpired(['openstack', *argv], timeout)
        answer = json.loads(data)
        return subprocess.CompletedProcess(
            ['openstack', *argv], answer['returncode'], answer['stdout'],
            answer['stderr'])

    def stop(self):
        from tools.lab import netns
        if self.proc is not None:
            netns.kill_proc(self.proc)
            self.proc = None
        if os.path.exists(self.path):
            os.unlink(self.path)


if __name__ == '__main__':
    serve(sys.argv[1])
