"""The SE's BGP speaker: one ExaBGP process that outlives the agent.

    speaker = BgpSpeaker(SpeakerConfig(local_asn=65001,
                                       router_id='198.18.1.2',
                                       peers=[Peer('198.18.1.1', 65000),
                                              Peer('2001:db8:1:1::1', 65000)],
                                       nexthop4='198.18.1.2',
                                       nexthop6='2001:db8:1:1::2'),
                         state_dir='/run/octavia-dsr/se1/bgp')
    speaker.start()                    # 'started' | 'adopted' | 'restarted'
    speaker.set_announced({'192.0.2.10/32', '2001:db8:f::10/128'})
    speaker.status()                       # {peer: PeerStatus(established=..)}
    speaker.drain(wait=2.0)                # withdraw all, wait, stop ExaBGP

Survives the agent
------------------
ExaBGP is started detached (double fork, own session, stdin /dev/null, output
to ``exabgp.log``), so it is not the agent's child: killing the agent (even
with SIGKILL) leaves ExaBGP, its BGP sessions and the announced routes alone.
Its PID, process start time and the digest of its configuration are kept in
``exabgp.pid``.  A new :class:`BgpSpeaker` on the same state dir *adopts* the
running process when the PID is alive with the same start time (no PID
reuse), the digest is unchanged and the API answers; otherwise (peers, ASN,
next hops... changed, or a wedged process) it restarts it gracefully:
withdraw everything, wait ``restart_drain_time``, stop, start the new one and
announce the desired set again.  A stray ExaBGP running our config file
without a valid PID record (state dir partly lost) is stopped first, never
doubled.

Route control: a process API, not the named-pipe CLI
----------------------------------------------------
ExaBGP runs our small helper (exabgp_api.py) as an API ``process``; the
helper listens on the unix socket ``api.sock`` in the state dir and relays one
command per connection, returning ExaBGP's answer (acked: ``done`` /
``error``).  The helper is ExaBGP's child, so it survives the agent too.  Why
not the named-pipe CLI (``exabgp.api.pipename`` + ``exabgp-cli``): its
``.in``/``.out`` FIFOs are one shared channel; an answer nobody read (agent
killed mid-command) is kept by ExaBGP's relay and delivered to the *next*
reader, the relay polls with a 1 s period, the pipes are searched in fixed
system folders (/run/exabgp, /run, ...) so several SEs on one host need
unique pipe names, and exabgp-cli is a fresh Python process per command.
The socket gives one private answer per command, in ~1.5 ms.

What is announced is read back from ExaBGP (``show adj-rib out``: per peer,
prefix -> next hop), so after an adopt the speaker knows exactly what the
routers were told.  The agent's intent is also persisted (``announced.json``):
when ExaBGP had to be (re)started its RIB is empty and the intent is
announced again.

stop() versus drain()
---------------------
``stop()`` ends ExaBGP (SIGTERM, SIGKILL after a deadline) WITHOUT sending a
withdrawal (ExaBGP sends none on SIGTERM).  Routers drop the SE's routes
because the TCP session closes (measured: ~10 ms here), but only if the SE's
kernel is alive to close it: a vanished host is noticed at hold-time expiry
(or by BFD).  The intent file is kept, so the next start() announces again.
``drain(wait)`` withdraws every route explicitly, waits ``wait`` seconds so
the routers (and whatever they propagate to) converge while this SE still
forwards the flows in flight, then stops ExaBGP; the intent becomes empty.
Use drain for a planned shutdown, stop for "leave it to the routers".

Both withdraw with ``clear adj-rib out`` (every route, to every peer the
running ExaBGP has: right also when a config change replaced the peers).

Routes: VIPs only (/32 and /128), each announced to the peers of its family
with next hop = the SE's own address of that family.  No graceful-restart
capability is negotiated (a dead SE's routes must go at once).

Deployment notes
----------------
- systemd: the agent unit needs ``KillMode=process`` (or run ExaBGP in its
  own unit/scope): the double fork escapes the agent's process tree, not
  its cgroup, and the default ``KillMode=control-group`` would kill ExaBGP
  on every agent restart.
- ExaBGP respawns a dead API helper, but gives up and EXITS after 5 deaths
  within ~64 s (its ``Too many death`` rule); the helper only exits when
  ExaBGP does, so this takes someone killing it.  start() heals either way.
- Supervision: the agent watches the running ExaBGP (supervisor.py: a
  pidfd of the recorded PID) and calls start() again, with back-off, when
  it dies; start() then announces the persisted intent.
- Operators can talk to a running speaker with
  ``python -S exabgp_api.py --send <state_dir>/api.sock show neighbor
  summary``.
"""

import contextlib
import dataclasses
import errno
import fcntl
import ipaddress
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time

from oslo_log import log as logging

from amphora_agent.bgp import exabgp_api
from amphora_agent.bgp import exabgp_config
from amphora_agent.bgp.exabgp_config import ConfigError  # noqa: F401
from amphora_agent.bgp.exabgp_config import Peer  # noqa: F401
from amphora_agent.bgp.exabgp_config import SpeakerConfig  # noqa: F401
from amphora_agent import processes

LOG = logging.getLogger(__name__)

CONFIG_FILE = 'exabgp.conf'
ENV_FILE = 'exabgp.env'
PID_FILE = 'exabgp.pid'
INTENT_FILE = 'announced.json'
SOCKET_FILE = 'api.sock'
LOG_FILE = 'exabgp.log'
LOCK_FILE = 'speaker.lock'

API_HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          'exabgp_api.py')

# Runs (python -S -c) between the agent and ExaBGP: forks, the child starts
# a new session, points stdout/stderr at the log and execs ExaBGP; the
# parent prints the child's PID and exits at once, so ExaBGP is re-parented
# to init (or the nearest subreaper) and never becomes the agent's zombie.
_LAUNCHER = r'''
import os, sys
log, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.setsid()
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        nul = os.open(os.devnull, os.O_RDONLY)
        os.dup2(nul, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.closerange(3, 65536)
        os.execvp(argv[0], argv)
    except BaseException as exc:
        try:
            os.write(2, ('octavia-dsr: cannot exec %r: %s\n'
                         % (argv, exc)).encode())
        finally:
            os._exit(127)
sys.stdout.write('%d\n' % pid)
sys.stdout.flush()
'''


class BgpError(RuntimeError):
    """ExaBGP refused a command, or could not be started/stopped."""


class BgpNotRunning(BgpError):
    """ExaBGP (or its API helper) is not running."""


@dataclasses.dataclass(frozen=True)
class PeerStatus:
    address: str
    asn: int
    family: int
    established: bool
    state: str          # ExaBGP's FSM state, lower case; 'not-running'


def _write_atomic(path, text, mode=0o600):
    tmp = f'{path}.{os.getpid()}.{threading.get_ident()}.tmp'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def default_exabgp_argv():
    """ExaBGP of the agent's own Python: the ``exabgp`` script next to
    sys.executable (a venv's bin/), else ``python -m exabgp``."""
    script = os.path.join(os.path.dirname(sys.executable), 'exabgp')
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, '-m', 'exabgp']


def netns_path(netns):
    """A netns name ('dsr1a2b-se1') or path -> its /run/netns path."""
    if netns is None or os.sep in netns:
        return netns
    return os.path.join('/run/netns', netns)


# --------------------------------------------------------------------------


class BgpSpeaker:
    """One ExaBGP per SE, adopted across agent restarts.  Thread-safe;
    several instances (or processes) on one state dir serialise on a lock
    file.  The object holds no resources: dropping it leaves ExaBGP
    running (that is what an agent restart does)."""

    @classmethod
    def from_options(cls, opts, nexthop4=None, nexthop6=None,
                     state_dir=None, netns=None):
        """A speaker from the agent's ``[bgp]`` options (see
        exabgp_config.config_from_options for the config part; here also
        ``state_dir``, ``exabgp_command``, ``exabgp_log_level``,
        ``start_timeout``, ``command_timeout``, ``restart_drain_time``)."""
        config = exabgp_config.config_from_options(opts, nexthop4, nexthop6)
        command = getattr(opts, 'exabgp_command', None)
        kwargs = {}
        for name in ('start_timeout', 'command_timeout',
                     'restart_drain_time'):
            value = getattr(opts, name, None)
            if value is not None:
                kwargs[name] = value
        return cls(config, state_dir or opts.state_dir, netns=netns,
                   exabgp_argv=shlex.split(command) if command else None,
                   log_level=getattr(opts, 'exabgp_log_level', None) or
                   'INFO', **kwargs)

    def __init__(self, config, state_dir, netns=None, exabgp_argv=None,
                 log_level='INFO', start_timeout=15.0, command_timeout=10.0,
                 restart_drain_time=1.0, stop_timeout=5.0):
        """``config``: SpeakerConfig.  ``state_dir``: private directory
        (created 0700).  ``netns``: run ExaBGP in this network namespace
        (name under /run/netns or a path; tests) instead of the agent's.
        ``exabgp_argv``: how to run ExaBGP (default: default_exabgp_argv()).
        """
        if not isinstance(config, exabgp_config.SpeakerConfig):
            raise TypeError('config must be a SpeakerConfig')
        self.config = config
        self.state_dir = os.path.abspath(state_dir)
        if len(os.path.join(self.state_dir, SOCKET_FILE).encode()) > 107:
            raise exabgp_config.ConfigError(
                f'state dir {self.state_dir!r} too long for a unix socket '
                'path')
        self.netns = netns_path(netns)
        self.exabgp_argv = list(exabgp_argv or default_exabgp_argv())
        if str(log_level).upper() not in exabgp_config.LOG_LEVELS:
            raise exabgp_config.ConfigError(
                f'ExaBGP log level {log_level!r}: one of '
                f'{", ".join(exabgp_config.LOG_LEVELS)}')
        self.log_level = str(log_level).upper()
        self.start_timeout = start_timeout
        self.command_timeout = command_timeout
        self.restart_drain_time = restart_drain_time
        self.stop_timeout = stop_timeout
        self._tlock = threading.RLock()
        self._flock_depth = 0
        self._flock_fd = None

    # -- paths ---------------------------------------------------------

    def _path(self, name):
        return os.path.join(self.state_dir, name)

    @property
    def config_path(self):
        return self._path(CONFIG_FILE)

    @property
    def socket_path(self):
        return self._path(SOCKET_FILE)

    @property
    def log_path(self):
        return self._path(LOG_FILE)

    # -- locking -------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self):
        with self._tlock:
            if self._flock_depth == 0:
                os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
                fd = os.open(self._path(LOCK_FILE),
                             os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._flock_fd = fd
            self._flock_depth += 1
            try:
                yield
            finally:
                self._flock_depth -= 1
                if self._flock_depth == 0:
                    fd, self._flock_fd = self._flock_fd, None
                    os.close(fd)   # releases the flock

    # -- rendering -----------------------------------------------------

    def _api_argv(self):
        return [sys.executable, '-S', API_HELPER, self.socket_path]

    def _launch_argv(self):
        argv = self.exabgp_argv + [self.config_path]
        if self.netns:
            argv = ['nsenter', f'--net={self.netns}', '--'] + argv
        return argv

    def _render(self):
        conf = exabgp_config.render_config(self.config, self._api_argv())
        env = exabgp_config.render_env(self.log_level)
        argv = self._launch_argv()
        return conf, env, argv, exabgp_config.digest(conf, env, argv)

    # -- pid record ----------------------------------------------------

    def _read_record(self):
        try:
            with open(self._path(PID_FILE)) as f:
                rec = json.load(f)
            return {'pid': int(rec['pid']),
                    'start_time': int(rec['start_time']),
                    'digest': str(rec.get('digest', ''))}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_record(self, pid, start_time, digest):
        _write_atomic(self._path(PID_FILE), json.dumps(
            {'pid': pid, 'start_time': start_time, 'digest': digest,
             'config': self.config_path, 'started': time.time()}) + '\n',
            mode=0o644)

    def _remove_record(self):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(PID_FILE))

    def _live_record(self):
        rec = self._read_record()
        if rec and processes.process_alive(rec['pid'], rec['start_time']):
            return rec
        return None

    def process(self):
        """(pid, start time) of the running ExaBGP, or None."""
        rec = self._live_record()
        return (rec['pid'], rec['start_time']) if rec else None

    @property
    def pid(self):
        """PID of the running ExaBGP, or None."""
        rec = self._live_record()
        return rec['pid'] if rec else None

    def running(self):
        return self._live_record() is not None

    # -- intent --------------------------------------------------------

    def _load_intent(self):
        try:
            with open(self._path(INTENT_FILE)) as f:
                data = json.load(f)
            return frozenset(str(exabgp_config.host_prefix(p))
                             for p in data['prefixes'])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            LOG.warning('BGP: ignoring unreadable %s: %s', INTENT_FILE, exc)
            return None

    def _save_intent(self, prefixes):
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        _write_atomic(self._path(INTENT_FILE), json.dumps(
            {'prefixes': sorted(prefixes)}) + '\n', mode=0o644)

    def desired(self):
        """The prefixes the agent last asked to announce (persisted)."""
        intent = self._load_intent()
        return frozenset() if intent is None else intent

    # -- API -----------------------------------------------------------

    def command(self, line, timeout=None):
        """Send one command to ExaBGP's API; return its answer lines
        (without the final 'done').  Raises BgpNotRunning when the API is
        unreachable, BgpError when ExaBGP answers 'error'."""
        timeout = self.command_timeout if timeout is None else timeout
        try:
            lines = exabgp_api.send(self.socket_path, line, timeout)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise BgpNotRunning(f'ExaBGP API {self.socket_path}: '
                                f'{exc.strerror}') from None
        except socket.timeout:
            raise BgpError(f'ExaBGP API: no answer to {line!r} within '
                           f'{timeout}s') from None
        except OSError as exc:
            if exc.errno in (errno.ECONNRESET, errno.EPIPE):
                raise BgpNotRunning(f'ExaBGP API: {exc}') from None
            raise
        if not lines:
            raise BgpNotRunning(f'ExaBGP API closed without answering '
                                f'{line!r}')
        if lines[-1] != 'done':
            raise BgpError(f'ExaBGP answered {lines[-1]!r} to {line!r}: '
                           f'{lines[:-1]}')
        return lines[:-1]

    def _api_ok(self, timeout=None):
        try:
            self.command('show neighbor json', timeout=timeout)
            return True
        except (BgpError, OSError):
            return False

    # -- lifecycle -----------------------------------------------------

    def start(self):
        """Make sure ExaBGP runs with this speaker's configuration.
        Idempotent (call it periodically to heal a crashed ExaBGP).

        Returns 'adopted' (a running ExaBGP with an identical config was
        kept: no session or route disturbed), 'started' (none was running;
        the persisted intent is announced) or 'restarted' (the config
        changed: the old one was drained and stopped first)."""
        with self._locked():
            conf, env, argv, digest = self._render()
            rec = self._live_record()
            outcome = 'started'
            if rec is not None:
                api_ok = self._api_ok()
                if rec['digest'] == digest and api_ok:
                    self._adopt()
                    return 'adopted'
                LOG.info('BGP: restarting ExaBGP pid %d (%s)', rec['pid'],
                         'configuration changed' if rec['digest'] != digest
                         else 'API not answering')
                self._stop_locked(rec, drain=(self.restart_drain_time
                                              if api_ok else None))
                outcome = 'restarted'
            self._stop_strays()
            self._launch(conf, env, argv, digest)
            intent = self._load_intent()
            if intent:
                self._sync(intent)
            return outcome

    def _adopt(self):
        intent = self._load_intent()
        rib = self.rib()
        if intent is None:
            # No intent on disk (first run of this code): what ExaBGP
            # announces is the intent.
            have = set()
            for routes in rib.values():
                have |= set(routes)
            self._save_intent(have)
            LOG.info('BGP: adopted ExaBGP pid %s announcing %d prefixes',
                     self.pid, len(have))
            return
        sent = self._sync(intent, rib)
        LOG.info('BGP: adopted ExaBGP pid %s (%d prefixes, %d changes)',
                 self.pid, len(intent), len(sent[0]) + len(sent[1]))

    def _stop_strays(self):
        """Stop any ExaBGP running our config file that we have no valid
        record of (a lost pid file must not lead to two speakers)."""
        me = os.getpid()
        for d in os.listdir('/proc'):
            if not d.isdigit() or int(d) == me:
                continue
            argv = processes.process_cmdline(int(d))
            if self.config_path in argv and any('exabgp' in a
                                                for a in argv):
                pid = int(d)
                start_time = processes.process_start_time(pid)
                if start_time is None:
                    continue            # gone meanwhile
                LOG.warning('BGP: stopping stray ExaBGP pid %d', pid)
                self._terminate_tree(pid, start_time)

    def _launch(self, conf, env, argv, digest):
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        _write_atomic(self.config_path, conf)
        _write_atomic(self._path(ENV_FILE), env)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        if os.path.exists(self.log_path):
            os.replace(self.log_path, self.log_path + '.1')
        child_env = {k: v for k, v in os.environ.items()
                     if not k.lower().startswith('exabgp')}
        child_env['EXABGP_ENVFILE'] = self._path(ENV_FILE)
        child_env['PYTHONUNBUFFERED'] = '1'
        launcher = subprocess.run(
            [sys.executable, '-S', '-c', _LAUNCHER, self.log_path] + argv,
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            env=child_env, cwd=self.state_dir, timeout=30)
        try:
            pid = int(launcher.stdout.strip())
        except ValueError:
            raise BgpError(f'could not launch ExaBGP: {launcher.stderr}'
                           ) from None
        start_time = processes.process_start_time(pid)
        if start_time is None:
            raise BgpError(f'ExaBGP exited at once:\n{self.log_tail()}')
        self._write_record(pid, start_time, digest)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not processes.process_alive(pid, start_time):
                self._remove_record()
                raise BgpError(f'ExaBGP exited while starting:\n'
                               f'{self.log_tail()}')
            if os.path.exists(self.socket_path) and self._api_ok(
                    timeout=max(0.5, deadline - time.monotonic())):
                break
            if time.monotonic() >= deadline:
                self._terminate_tree(pid, start_time)
                self._remove_record()
                raise BgpError(f'ExaBGP API not up within '
                               f'{self.start_timeout}s:\n{self.log_tail()}')
            time.sleep(0.01)
        LOG.info('BGP: started ExaBGP pid %d', pid)

    def _terminate_tree(self, pid, start_time):
        """Stop ExaBGP and reap-by-kill its helpers (the API helper is in
        its own process group and would otherwise linger if it hung)."""
        kids = [(k, processes.process_start_time(k))
                for k in processes.process_children(pid)]
        ok = processes.terminate_process(pid, start_time, self.stop_timeout)
        # ExaBGP terminates its helpers itself; they also leave on EOF of
        # their stdin.  Give them the same deadline, then force them.
        for k, st in kids:
            if st is not None:
                processes.terminate_process(k, st, self.stop_timeout)
        if not ok:
            raise BgpError(f'ExaBGP pid {pid} did not stop')

    def _stop_locked(self, rec, drain=None):
        if drain is not None:
            try:
                # Withdraws everything ExaBGP announced, to every peer it
                # has: right even when the running ExaBGP has another peer
                # list than self.config (a restart for a config change).
                self.command('clear adj-rib out')
                self._wait_rib_empty(min(drain, 5.0) + 1.0)
                if drain > 0:
                    time.sleep(drain)   # let the routers converge
            except BgpError as exc:
                LOG.warning('BGP: could not withdraw before stopping: %s',
                            exc)
        self._terminate_tree(rec['pid'], rec['start_time'])
        self._remove_record()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    def _wait_rib_empty(self, timeout):
        deadline = time.monotonic() + timeout
        while exabgp_config.parse_adj_rib_out(
                self.command('show adj-rib out')):
            if time.monotonic() >= deadline:
                raise BgpError('routes still in adj-rib-out')
            time.sleep(0.01)

    def stop(self):
        """Stop ExaBGP WITHOUT withdrawing (see the module doc): the
        sessions close, so the routers drop this SE's routes as soon as
        they see the TCP close.  The intent stays on disk: the next start()
        announces it again."""
        with self._locked():
            rec = self._live_record()
            if rec is not None:
                self._stop_locked(rec)
            else:
                self._remove_record()
                self._stop_strays()

    def drain(self, wait=2.0):
        """Withdraw every route, wait ``wait`` seconds (the routers
        converge while this SE still forwards in-flight flows), then stop
        ExaBGP.  The intent becomes empty."""
        with self._locked():
            self._save_intent(frozenset())
            rec = self._live_record()
            if rec is None:
                self._remove_record()
                return
            self._stop_locked(rec, drain=wait)

    # -- routes --------------------------------------------------------

    def rib(self):
        """What ExaBGP announces: {peer address: {prefix: next hop}}
        (every configured peer present, possibly empty)."""
        lines = self.command('show adj-rib out')
        rib = exabgp_config.parse_adj_rib_out(lines)
        return {p.address: rib.get(p.address, {}) for p in
                self.config.peers}

    def announced(self):
        """Prefixes ExaBGP currently announces (to at least one peer)."""
        have = set()
        for routes in self.rib().values():
            have |= set(routes)
        return frozenset(have)

    def _sync(self, desired, rib=None, persist=True):
        """Send what makes ExaBGP announce exactly ``desired``; returns
        (announced, withdrawn) prefix sets of what was sent."""
        desired = frozenset(str(exabgp_config.host_prefix(p))
                            for p in desired)
        if persist:
            self._save_intent(desired)
        if rib is None:
            rib = self.rib()
        announce, withdraw, unroutable = exabgp_config.plan_changes(
            self.config, desired, rib)
        for p in sorted(unroutable):
            LOG.warning('BGP: no IPv%d peer to announce %s to',
                        ipaddress.ip_network(p).version, p)
        # Withdraw first: a next hop change is an announce, not a
        # withdraw, so nothing announced here is taken away below.
        for peer, prefix in withdraw:
            self.command(exabgp_config.route_command('withdraw', peer,
                                                     prefix))
        for peer, prefix, nh in announce:
            self.command(exabgp_config.route_command('announce', peer,
                                                     prefix, nh))
        return ({p for _, p, _ in announce}, {p for _, p in withdraw})

    def set_announced(self, prefixes):
        """Idempotent: announce the missing VIPs, withdraw the extra ones,
        so that every peer carries exactly ``prefixes`` (host routes of its
        family).  Returns (announced, withdrawn) sets of prefixes changed.
        The set is persisted first: if ExaBGP is down (BgpNotRunning), the
        next start() announces it."""
        with self._locked():
            return self._sync(prefixes)

    def announce(self, prefix):
        """Announce one VIP ('192.0.2.10', '192.0.2.10/32', v6 /128) to the
        peers of its family, next hop = the SE's address of that family."""
        net = str(exabgp_config.host_prefix(prefix))
        with self._locked():
            intent = set(self.desired())
            intent.add(net)
            self._save_intent(intent)
            peers = self.config.peers_of(ipaddress.ip_network(net).version)
            if not peers:
                LOG.warning('BGP: no peer of the family of %s', net)
            for peer in peers:
                self.command(exabgp_config.route_command(
                    'announce', peer, net,
                    self.config.nexthop(peer.family)))

    def withdraw(self, prefix):
        """Withdraw one VIP from every peer (no-op if not announced)."""
        net = str(exabgp_config.host_prefix(prefix))
        with self._locked():
            intent = set(self.desired())
            intent.discard(net)
            self._save_intent(intent)
            for peer in self.config.peers_of(
                    ipaddress.ip_network(net).version):
                self.command(exabgp_config.route_command('withdraw', peer,
                                                         net))

    # -- status --------------------------------------------------------

    def status(self):
        """{peer address: PeerStatus}; established=False for every peer
        when ExaBGP is not running."""
        states = {}
        try:
            lines = self.command('show neighbor json')
            for entry in json.loads('\n'.join(lines) or '[]'):
                addr = (entry.get('peer') or {}).get('address')
                if addr:
                    states[str(ipaddress.ip_address(addr))] = str(
                        entry.get('fsm') or entry.get('state') or
                        'unknown').lower()
        except BgpNotRunning:
            states = None
        except (BgpError, ValueError) as exc:
            LOG.warning('BGP: cannot read neighbor state: %s', exc)
            states = {}
        result = {}
        for p in self.config.peers:
            state = 'not-running' if states is None else states.get(
                p.address, 'unknown')
            result[p.address] = PeerStatus(p.address, p.asn, p.family,
                                           state == 'established', state)
        return result

    def log_tail(self, n=30):
        try:
            with open(self.log_path, errors='replace') as f:
                return ''.join(f.readlines()[-n:])
        except OSError:
            return ''

    def remove_state(self):
        """Stop ExaBGP (no withdraw) and delete the state directory."""
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)
