"""octavia-api and octavia-driver-agent, forked from a process that
imported Octavia once.

Each of them spends ~3 CPU-seconds importing Octavia before it reads its
configuration (1.6 s of it building the API's WSME types), and every lab
starts both: ~6 CPU-seconds a lab, on a 2-core host that runs a few dozen
labs a CI run.  This zygote imports them once per test process, configures
the SQLAlchemy mappers (the driver agent forks a child per request, which
otherwise configures them again: 0.09 -> 0.04 CPU-s a status update) and
forks a child per process a stack asks for.  The child is what the command
would have been: its own session, the stack's environment, working
directory and log file, then octavia_api.main(argv) or
octavia.cmd.driver_agent.main() with the stack's arguments.

    zygote = shared(python, pythonpath)       # started on first use
    proc = zygote.spawn('driver_agent', ['--config-file', conf], env, cwd,
                        log_path)             # a Forked (poll, returncode)
    zygote.spawn('api', [...], env, cwd, log, fds=[listener.fileno()])

Lifetimes: the test process holds the write end of a pipe whose read end
only the zygote has; when the test process ends (even by SIGKILL) the
zygote reads EOF and exits, and each child, which asked for SIGTERM when
its parent dies (prctl PR_SET_PDEATHSIG, right after the fork, in the
zygote's only thread), gets it.

Protocol on a unix socket (0600): one connection per child; the request is
one JSON line {"kind", "argv", "env", "cwd", "log"} sent with the fds the
child needs (SCM_RIGHTS; the API's listening socket: the child gets
``--fd N`` appended); the answer is a line {"pid": N}, then, when the child
ends, a line {"exit": code} (negative: killed by that signal).

Run as a script (``python octavia_zygote.py SOCKET LIFELINE_FD``) with the
stack's interpreter; like octavia_api.py its folder is taken off sys.path
(octavia.py beside it would shadow the `octavia` package).
"""

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path
               if os.path.abspath(p or os.curdir) != _HERE]

KINDS = ('api', 'driver_agent')
PR_SET_PDEATHSIG = 1
MAX_REQUEST = 1 << 20


# -- the zygote -------------------------------------------------------------

def _api_runner():
    """octavia_api.py, imported by path (its folder is off sys.path)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'octavia_lab_api', os.path.join(_HERE, 'octavia_api.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read_request(conn):
    """(request dict, [fds]) of one connection: a JSON line, the fds come
    with its first bytes."""
    data, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 4)
    while not data.endswith(b'\n'):
        more = conn.recv(MAX_REQUEST)
        if not more:
            break
        data += more
    return json.loads(data), fds


def _child(request, fds, runners, zygote_pid):
    """In the forked child: become the process the stack asked for."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != zygote_pid:
        os._exit(1)         # the zygote died before the prctl
    os.setsid()
    # Undo what the zygote set for itself (SIGCHLD, its wake-up pipe).
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    rc = 1
    try:
        os.chdir(request['cwd'])
        os.environ.clear()
        os.environ.update(request['env'])
        log = os.open(request['log'], os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                      0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        for fd in fds:
            os.set_inheritable(fd, True)
        argv = list(request['argv'])
        if request['kind'] == 'api':
            if fds:
                argv += ['--fd', str(fds[0])]
            sys.argv = ['octavia-api', *argv]     # names it in its logs
            rc = runners['api'].main(argv)
        else:
            sys.argv = ['octavia-driver-agent', *argv]
            rc = runners['driver_agent'].main()
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None
                                                         else 1)
    except BaseException:  # noqa: BLE001 -- told in the log, exit code 1
        import traceback
        traceback.print_exc()
        rc = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc or 0)


def _reap(children):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            try:
                conn.sendall(json.dumps(
                    {'exit': os.waitstatus_to_exitcode(status)}).encode()
                    + b'\n')
            except OSError:
                pass
            conn.close()


def serve(path, lifeline):
    runners = {'api': _api_runner()}
    from amphora_agent.l7 import class_sources
    # Octavia's API types: a module parse per class without it (about
    # 4 of 6 CPU-seconds here; amphora_agent/l7/class_sources.py).
    with class_sources.cached():
        import octavia.api.app  # noqa: F401 -- what octavia-api imports
        from octavia.api.drivers.driver_agent import driver_get  # noqa
        from octavia.api.drivers.driver_agent import driver_updater  # noqa
        from octavia.cmd import driver_agent
        from octavia.db import models  # noqa: F401
    import sqlalchemy.orm
    sqlalchemy.orm.configure_mappers()
    runners['driver_agent'] = driver_agent

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    old = os.umask(0o177)
    try:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(16)
    finally:
        os.umask(old)
    children = {}
    zygote_pid = os.getpid()
    while True:
        try:
            ready, _, _ = select.select([server, wake_r, lifeline], [], [])
        except InterruptedError:
            continue
        if lifeline in ready and not os.read(lifeline, 1):
            # The test process is gone (or stopped us): the children
            # follow, by their PDEATHSIG.
            import shutil
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
            return
        if wake_r in ready:
            os.read(wake_r, 4096)
            _reap(children)
        if server in ready:
            conn, _ = server.accept()
            conn.settimeout(10)     # a caller that sends nothing
            try:
                request, fds = _read_request(conn)
                if request.get('kind') not in KINDS:
                    raise ValueError(f'kind must be one of {KINDS}')
            except (OSError, ValueError) as exc:
                try:
                    conn.sendall(json.dumps({'error': str(exc)}).encode()
                                 + b'\n')
                except OSError:
                    pass        # the caller left: nothing to tell
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                server.close()
                conn.close()
                os.close(lifeline)
                os.close(wake_r)
                os.close(wake_w)
                _child(request, fds, runners, zygote_pid)
            for fd in fds:
                os.close(fd)
            children[pid] = conn
            try:
                conn.sendall(json.dumps({'pid': pid}).encode() + b'\n')
            except OSError:
                pass            # the caller left; the child runs its course
            _reap(children)     # a child that ended before it was listed


# -- the caller's side --------------------------------------------------------

class ZygoteError(RuntimeError):
    pass


class Forked:
    """A child of the zygote, as much of a Popen as _Proc needs: pid,
    poll() and returncode (told by the zygote when the child ends; -1 if
    the zygote went away first)."""

    def __init__(self, pid, conn, buffered=b''):
        self.pid = pid
        self.returncode = None
        self._conn = conn
        # Non-blocking (a timeout would make recv wait for it first).
        conn.setblocking(False)
        self._buf = buffered

    def poll(self):
        if self.returncode is None:
            data = None
            if b'\n' not in self._buf:
                try:
                    data = self._conn.recv(4096)
                except BlockingIOError:
                    return None
                except OSError:
                    data = b''
                self._buf += data
            if b'\n' in self._buf:
                self.returncode = json.loads(
                    self._buf.split(b'\n', 1)[0])['exit']
            elif not data:
                self.returncode = -1
            else:
                return None
            self._conn.close()
        return self.returncode


class Zygote:
    def __init__(self, python, pythonpath=None, start_timeout=120.0):
        self.python = python
        self.pythonpath = pythonpath
        self.start_timeout = start_timeout
        self.proc = None
        self._dir = None
        self._lifeline = None

    @property
    def path(self):
        return os.path.join(self._dir, 'zygote.sock')

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        from tools.lab.localstack.octavia import _tail
        self._dir = tempfile.mkdtemp(prefix='octavia-zygote-')
        log_path = os.path.join(self._dir, 'zygote.log')
        life_r, self._lifeline = os.pipe()
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        env.pop('PYTHONPATH', None)
        if self.pythonpath:
            env['PYTHONPATH'] = self.pythonpath
        try:
            with open(log_path, 'ab') as log:
                self.proc = subprocess.Popen(
                    [self.python, os.path.abspath(__file__), self.path,
                     str(life_r)], stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, env=env, pass_fds=(life_r,),
                    start_new_session=True)
        finally:
            os.close(life_r)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise ZygoteError(
                    f'the Octavia zygote exited with {self.proc.returncode}'
                    f': {_tail(log_path)}')
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.settimeout(10)
                    probe.connect(self.path)
                    probe.sendall(b'{}\n')      # answered with an error
                    if probe.recv(4096):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ZygoteError(f'the Octavia zygote did not listen within '
                                  f'{self.start_timeout} s: '
                                  f'{_tail(log_path)}')
            time.sleep(0.05)   # polling while it imports

    def spawn(self, kind, argv, env, cwd, log_path, fds=()):
        """Fork the zygote into octavia-api ('api') or the driver agent
        ('driver_agent'); returns a Forked once the child exists."""
        request = json.dumps({'kind': kind, 'argv': list(argv),
                              'env': dict(env), 'cwd': str(cwd),
                              'log': str(log_path)}).encode() + b'\n'
        conn = socket.socket(socket.AF_UNIX)
        try:
            conn.settimeout(30)
            conn.connect(self.path)
            socket.send_fds(conn, [request], list(fds))
            answer = b''
            while b'\n' not in answer:
                data = conn.recv(4096)
                if not data:
                    raise ZygoteError(f'the Octavia zygote closed the '
                                      f'connection ({kind})')
                answer += data
            # A child that ended at once: its exit line may come with it.
            first, _, rest = answer.partition(b'\n')
            reply = json.loads(first)
            if 'pid' not in reply:
                raise ZygoteError(f'the Octavia zygote refused {kind}: '
                                  f'{reply}')
        except BaseException:
            conn.close()
            raise
        return Forked(reply['pid'], conn, rest)

    def stop(self):
        if self._lifeline is not None:
            os.close(self._lifeline)        # the zygote reads EOF, exits
            self._lifeline = None
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self._dir is not None:
            import shutil
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


_SHARED = {}
_SHARED_LOCK = threading.Lock()


def shared(python, pythonpath=None):
    """This process's zygote for an interpreter (and PYTHONPATH), started
    on first use and again if it died; it ends with this process (its
    lifeline), so no stack outlives it."""
    key = (python, pythonpath)
    with _SHARED_LOCK:
        zygote = _SHARED.get(key)
        if zygote is None or not zygote.running():
            if zygote is not None:
                zygote.stop()
            zygote = _SHARED[key] = Zygote(python, pythonpath)
            zygote.start()
        return zygote


if __name__ == '__main__':
    serve(sys.argv[1], int(sys.argv[2]))
