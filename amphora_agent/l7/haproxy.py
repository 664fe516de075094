"""One HAProxy per load balancer, in master-worker mode.

    haproxy -W -S <lb dir>/master.sock,mode,600 -f <lb dir>/haproxy.cfg \\
            -p <lb dir>/haproxy.pid

The master stays in the foreground as a child of the engine (in a session
of its own, so an agent restart leaves it serving; the next engine adopts
it through the pid file).  A new configuration is checked with
``haproxy -c`` first; only a configuration HAProxy accepts replaces the
installed one, so a bad one is rejected alone and the running process keeps
the previous configuration.

Reload is the master CLI's ``reload``: the master re-executes itself with
the new configuration and hands the listening sockets of the running
worker to the new one over their internal socket pair (HAProxy 2.x passes
``-x sockpair@<fd>`` itself; an amphora's ``-x <stats socket>`` is the
pre-master-worker way to do the same), so no connection is refused; the
old worker finishes the connections it holds and exits.  Before a reload
the servers' health state is saved to the server-state file Octavia's
configuration loads (``load-server-state-from-file global``), so members
keep their UP/DOWN state across it, as on an amphora.
"""

import os
import re
import signal
import socket
import subprocess
import time

from oslo_log import log as logging

from amphora_agent import processes

LOG = logging.getLogger(__name__)
_VERSION_RE = re.compile(r'version (\d+)\.(\d+)(?:\.(\d+))?')


class HaproxyError(RuntimeError):
    pass


class ConfigRejected(HaproxyError):
    """HAProxy refused a configuration; the message holds its alerts."""


class ReloadFailed(HaproxyError):
    """The master could not load a reloaded configuration and goes on with
    the old worker; the message holds its alerts."""


def version(binary):
    """('2', '6', '12') from ``haproxy -v``."""
    out = subprocess.run([binary, '-v'], capture_output=True, text=True,
                         timeout=30).stdout
    m = _VERSION_RE.search(out)
    if not m:
        raise HaproxyError(f'{binary} -v: no version in {out!r}')
    return tuple(g for g in m.groups() if g is not None)


def check(binary, path):
    """Raise ConfigRejected unless ``haproxy -c -f path`` accepts it."""
    proc = subprocess.run([binary, '-c', '-f', path],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        alerts = [re.sub(r'^\[ALERT\]\s+\(\d+\) : ', '', line)
                  for line in (proc.stdout + proc.stderr).splitlines()
                  if 'ALERT' in line or line.startswith(' ')]
        raise ConfigRejected(
            f'HAProxy rejected the configuration {path}: '
            + ' '.join(' '.join(alerts).split()))


def query(path, command, timeout=5.0):
    """One command on an HAProxy CLI socket (stats or master); its output.
    "quit" after it: a re-executed master keeps the connection open
    otherwise."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode() + b';quit\n')
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b''.join(chunks).decode(errors='replace')


def _worker_pid(stats_socket):
    try:
        info = query(stats_socket, 'show info', timeout=1.0)
    except OSError:
        return None
    m = re.search(r'^Pid: (\d+)$', info, re.M)
    return int(m.group(1)) if m else None


def _alerts(log_path, offset, limit=3):
    """HAProxy's [ALERT] lines written to log_path after offset, without
    their prefix, joined ("; "); at most ``limit``."""
    try:
        with open(log_path, 'rb') as f:
            f.seek(offset)
            text = f.read(65536).decode(errors='replace')
    except OSError:
        return ''
    alerts = [re.sub(r'^\[ALERT\]\s*\(\d+\)\s*:\s*', '', line).strip()
              for line in text.splitlines() if line.startswith('[ALERT]')]
    return '; '.join(alerts[:limit])


# What the master logs when it takes a reload, and when it could not load
# the reloaded configuration (it then goes on with the old worker).
_RELOADING = b'Reloading HAProxy'
_LOADING_FAILURE = b'Loading failure!'
# Seconds without _RELOADING before a reload is sent again.
RELOAD_RESEND = 5.0
# haproxy.log is trimmed to its last LOG_KEEP bytes once over LOG_MAX.
LOG_MAX = 1 << 20
LOG_KEEP = 64 << 10


def _logged(log_path, offset, text):
    """Whether the master logged text after offset."""
    try:
        with open(log_path, 'rb') as f:
            f.seek(offset)
            return text in f.read(1 << 20)
    except OSError:
        return False


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise HaproxyError(f'timed out after {timeout} s waiting for '
                               f'{what}')
        time.sleep(0.02)


def _stopped(pid, started, timeout, what):
    """Wait for a signalled HAProxy process to exit; one that does not
    (hung, stopped) is killed: a removed load balancer reported gone must
    serve nothing (its VIP may go to another tenant)."""
    try:
        _wait(lambda: not processes.process_alive(pid, started), timeout,
              f'HAProxy {what} {pid} to exit')
        return
    except HaproxyError:
        LOG.warning('HAProxy %s %s did not exit within %s s: killed', what,
                    pid, timeout)
    if not processes.process_alive(pid, started):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _wait(lambda: not processes.process_alive(pid, started), timeout,
          f'HAProxy {what} {pid} to exit after SIGKILL')


class Process:
    """The HAProxy of one load balancer (files from render.Paths)."""

    def __init__(self, binary, paths, lb_id, timeout=10.0):
        self.binary, self.paths, self.lb_id = binary, paths, lb_id
        self.timeout = timeout
        self.config = paths.config(lb_id)
        self.stats_socket = paths.stats_socket(lb_id)
        self.master_socket = paths.master_socket(lb_id)
        self.pidfile = paths.pidfile(lb_id)
        self._child = None

    def master_pid(self):
        """The running master's pid (ours or adopted from the pid file)."""
        if self._child is not None:
            if self._child.poll() is None:
                return self._child.pid
            self._child = None
            return None
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if not processes.process_alive(pid):
            return None
        return pid if self.config in processes.process_cmdline(pid) else None

    def running(self):
        return self.master_pid() is not None

    def worker_pid(self):
        return _worker_pid(self.stats_socket)

    def start(self):
        """Start the master on the installed configuration; returns once a
        worker answers on the stats socket."""
        for path in (self.stats_socket, self.master_socket):
            if os.path.exists(path):
                os.unlink(path)
        log_path = self._trim_log()
        start = os.path.getsize(log_path) if os.path.exists(log_path) \
            else 0
        log = open(log_path, 'ab')
        try:
            self._child = subprocess.Popen(
                [self.binary, '-W', '-S', f'{self.master_socket},mode,600',
                 '-f', self.config, '-p', self.pidfile],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        finally:
            log.close()

        def up():
            if self._child.poll() is not None:
                # Its alerts say why (a port it may not bind, a uid it
                # cannot take): the reason Octavia's status carries.
                alerts = _alerts(log_path, start)
                raise HaproxyError(
                    f'HAProxy for {self.lb_id} exited with '
                    f'{self._child.returncode}'
                    f'{": " + alerts if alerts else ""} (see {log_path})')
            pid = self.worker_pid()
            # And the master's CLI knows it: a reload sent before the
            # master took its worker's start in was lost (no "Reloading
            # HAProxy", no new worker), about two in three sent at once.
            try:
                return pid if pid and pid in self.workers()['current'] \
                    else None
            except OSError:
                return None
        return _wait(up, self.timeout, f'HAProxy for {self.lb_id} to start')

    def save_server_state(self):
        state = os.path.join(self.paths.lb_dir(self.lb_id), 'servers-state')
        try:
            text = query(self.stats_socket, 'show servers state')
        except OSError:
            return False
        tmp = state + '.tmp'
        with open(tmp, 'w') as f:
            f.write(text.rstrip('\n') + '\n')
        os.replace(tmp, state)
        return True

    def _log_path(self):
        """The master's stderr (its notices and alerts)."""
        return os.path.join(self.paths.lb_dir(self.lb_id), 'haproxy.log')

    def _trim_log(self):
        """Keep the last LOG_KEEP bytes of the master's log once it is
        over LOG_MAX: every reload adds to it, for as long as the load
        balancer lives.  Returns its path."""
        path = self._log_path()
        try:
            if os.path.getsize(path) > LOG_MAX:
                with open(path, 'rb') as f:
                    f.seek(-LOG_KEEP, os.SEEK_END)
                    tail = f.read()
                # The master appends (O_APPEND): truncating is safe, and
                # a line it writes in between is the only loss.
                with open(path, 'r+b') as f:
                    f.truncate(0)
                    f.write(tail[tail.find(b'\n') + 1:])
        except OSError:
            pass
        return path

    def _send_reload(self):
        """Send `reload` to the master's CLI; (when, delivered).  Not
        delivered: nothing listened (the master not yet, or no longer,
        serving its CLI)."""
        try:
            query(self.master_socket, 'reload', timeout=RELOAD_RESEND)
        except (ConnectionRefusedError, FileNotFoundError):
            return time.monotonic(), False
        except OSError:
            # The master closes its CLI when it re-executes: expected.
            pass
        return time.monotonic(), True

    def _current_workers(self):
        """The master's current workers, or None when its CLI does not
        answer (re-executing)."""
        try:
            return self.workers()['current']
        except OSError:
            return None

    def reload(self):
        """Hitless reload on the installed configuration; returns the new
        worker's pid once it answers.  Judged by the master's own list of
        workers: a worker it did not list before the reload, answering on
        the stats socket."""
        def listed():       # a tuple: an empty list is an answer too
            current = self._current_workers()
            return None if current is None else (current,)
        before = set(_wait(listed, self.timeout,
                           f'the HAProxy master of {self.lb_id}')[0])
        self.save_server_state()
        log_path = self._trim_log()
        start = os.path.getsize(log_path) if os.path.exists(log_path) \
            else 0
        sent, delivered = self._send_reload()

        def new_worker():
            nonlocal sent, delivered
            current = self._current_workers()
            fresh = [] if current is None else \
                [pid for pid in current if pid not in before]
            if fresh:
                pid = self.worker_pid()
                return pid if pid in fresh else None
            if _logged(log_path, start, _LOADING_FAILURE):
                # The master goes on with the old worker (a port it cannot
                # bind): no new one will come, say why now rather than
                # after the timeout -- once the master lists the old one
                # again (its listeners resumed).
                try:
                    _wait(lambda: before & set(self._current_workers()
                                               or ()),
                          self.timeout, f'the HAProxy master of {self.lb_id}')
                except HaproxyError:
                    pass        # the reason below is the one to report
                raise ReloadFailed(
                    f'HAProxy for {self.lb_id} failed to load the new '
                    f'configuration: {_alerts(log_path, start)} '
                    f'(see {log_path})')
            if not delivered or (
                    not _logged(log_path, start, _RELOADING)
                    and time.monotonic() - sent > RELOAD_RESEND):
                # Not taken (the master says "Reloading HAProxy" at
                # once): a lost command must not cost the whole timeout.
                if delivered:
                    LOG.warning('HAProxy for %s: the master did not take '
                                'the reload in %s s; sent again',
                                self.lb_id, RELOAD_RESEND)
                sent, delivered = self._send_reload()
            return None
        try:
            return _wait(new_worker, self.timeout,
                         f'the new HAProxy worker of {self.lb_id}')
        except ReloadFailed:
            raise
        except HaproxyError as exc:
            # The master's alerts say why (a port another process holds):
            # the reason Octavia's status carries, as for a start.
            alerts = _alerts(log_path, start)
            if not alerts:
                raise
            raise HaproxyError(f'{exc}: {alerts} (see {log_path})') from None

    def workers(self):
        """{'current': [pids], 'old': [pids]} from the master's show proc."""
        out = query(self.master_socket, 'show proc')
        result, section = {'current': [], 'old': []}, None
        for line in out.splitlines():
            if line.startswith('# workers'):
                section = 'current'
            elif line.startswith('# old workers'):
                section = 'old'
            elif line.startswith('#'):
                section = None
            elif section and line.split():
                result[section].append(int(line.split()[0]))
        return result

    def stop(self, timeout=None):
        """Stop the master and its workers (SIGTERM: connections are cut;
        the load balancer is going away)."""
        pid = self.master_pid()
        if pid is None:
            return
        # The master can exit before its workers do, which still hold the
        # listening sockets: stopped means they are gone too.
        workers = [(w, processes.process_start_time(w))
                   for w in processes.process_children(pid)]
        # Its start time: a PID reused meanwhile is not ours to kill.
        started = processes.process_start_time(pid)
        os.kill(pid, signal.SIGTERM)
        if self._child is not None:
            try:
                self._child.wait(timeout or self.timeout)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
            self._child = None
        else:
            _stopped(pid, started, timeout or self.timeout, 'master')
        for worker, started in workers:
            _stopped(worker, started, timeout or self.timeout, 'worker')
