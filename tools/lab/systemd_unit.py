"""Runs a shipped systemd service unit the way systemd does, on machines
whose PID 1 is not systemd (this lab's): ``systemctl start``, ``stop``,
``restart`` and ``reload`` of one service are played from the unit file's
own lines.

    unit = ServiceUnit('etc/systemd/dsr-agent.service', bindir=...,
                       paths={'/etc/octavia-dsr/dsr-agent.conf': conf},
                       runtime_root=..., state_root=...)
    unit.start(); unit.restart(); unit.reload(); unit.stop()

What is played, as systemd.service(5) and systemd.kill(5) describe it:

* start: RuntimeDirectory=/StateDirectory= created (owner User=, their
  *Mode=; $RUNTIME_DIRECTORY / $STATE_DIRECTORY set), ExecStartPre= in
  order, then ExecStart= as the main process (Type=simple: started at
  once), in a new session as systemd does;
* stop: the unit's job is "stop" (for restart: "restart") while ExecStop=
  runs ($MAINPID set, each bounded by TimeoutStopSec=); then KillSignal=
  (and SIGCONT) to the main process -- KillMode=process: to it alone;
  mixed / control-group: also to the rest of its "control group" --, a
  wait of TimeoutStopSec= for the main process, then SIGKILL along the same
  KillMode= rule; RuntimeDirectory= removed unless
  RuntimeDirectoryPreserve= keeps it (``restart``: kept for a restart);
* restart: stop with a "restart" job, then start;  reload: ExecReload=;
* sandboxing of the Exec lines without "+": PrivateTmp=, ProtectHome=,
  ProtectSystem= (not "strict") and UMask= in a mount namespace of their
  own (``_sandboxed`` says how, and where it deviates);
* Exec lines: ``@BINDIR@`` replaced (the install-time substitution
  docs/operations.md describes), specifiers %n %N %t %S %%, $VAR / ${VAR}
  from the unit's environment, prefixes "+" (full privileges) and "-"
  (failure ignored); User=/Group=, AmbientCapabilities=,
  CapabilityBoundingSet= and NoNewPrivileges= through setpriv, as
  agent_lab's run_as does.

Deviations, each forced by the lab and stated here: paths the unit names
(config file, pin directory, /run, /var/lib) are mapped into the lab
(``paths``, ``runtime_root``, ``state_root``); ``extra_caps`` adds
capabilities the lab needs (CAP_SYS_ADMIN: the lab's SEs are network
namespaces the agent enters); the "control group" is the main process's
session (no cgroups without systemd); ``systemctl list-jobs`` answers from
this emulator (a ``systemctl`` on the Exec lines' PATH that prints the
unit's current job), since no systemd is there to ask; ``env`` adds
variables the lab needs (e.g. PYTHONPATH: a checkout instead of an
installed package).
"""

import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time

from tools.lab import netns

# systemd's PATH for system services.
DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

_FAKE_SYSTEMCTL = '''#!/bin/sh
# The emulator's systemd: only "list-jobs" (read from the job file).
case "$1" in
  list-jobs) cat "{jobs}" ;;
  *) echo "systemctl $1: no systemd here (tools/lab/systemd_unit.py)" >&2
     exit 1 ;;
esac
'''


class UnitError(RuntimeError):
    pass


_YES = ('yes', 'true', '1', 'on')


def parse(text):
    """{section: {key: [values]}} of a unit file (repeated keys keep every
    value in order; an empty value resets the list, as in systemd)."""
    sections, current = {}, None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in '#;':
            continue
        if line.startswith('[') and line.endswith(']'):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition('=')
        values = current.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return sections


def seconds(value):
    """A systemd time span ("90", "90s", "1min 30s") in seconds."""
    total = 0.0
    for number, unit in re.findall(r'([\d.]+)\s*(ms|s|min|h)?', value):
        total += float(number) * {'ms': 0.001, 's': 1, None: 1, '': 1,
                                  'min': 60, 'h': 3600}[unit]
    return total


class ServiceUnit:
    def __init__(self, path, bindir, paths=None, runtime_root=None,
                 state_root=None, extra_caps=(), env=None, visible=()):
        self.path = path
        self.name = os.path.basename(path)
        with open(path) as f:
            self.text = f.read()
        self.unit = parse(self.text)
        self.service = self.unit.get('Service', {})
        self.bindir = bindir
        self.paths = dict(paths or {})
        self.work = tempfile.mkdtemp(prefix='unit-')
        self.runtime_root = runtime_root or os.path.join(self.work, 'run')
        self.state_root = state_root or os.path.join(self.work, 'lib')
        self.extra_caps = tuple(extra_caps)
        self.extra_env = dict(env or {})
        # Lab paths the sandbox keeps in view (a lab's files live in /tmp,
        # which PrivateTmp= hides; a checkout may live in /root or /home).
        self.visible = tuple(visible)
        self.main = None
        self.job_id = 0
        self.log = []           # (time, event) of what was played
        bindir_fake = os.path.join(self.work, 'bin')
        os.makedirs(bindir_fake)
        self._jobs = os.path.join(self.work, 'jobs')
        self._set_job(None)
        script = os.path.join(bindir_fake, 'systemctl')
        with open(script, 'w') as f:
            f.write(_FAKE_SYSTEMCTL.format(jobs=self._jobs))
        os.chmod(script, 0o755)
        os.chmod(self.work, 0o755)
        os.chmod(self._jobs, 0o644)
        self._fake_bin = bindir_fake

    # ----------------------------------------------------------- settings
    def get(self, key, default=None):
        values = self.service.get(key)
        return values[-1] if values else default

    def all(self, key):
        return list(self.service.get(key, []))

    @property
    def user(self):
        return self.get('User')

    @property
    def stop_timeout(self):
        return seconds(self.get('TimeoutStopSec', '90s'))

    @property
    def kill_mode(self):
        return self.get('KillMode', 'control-group')

    @property
    def kill_signal(self):
        return getattr(signal, self.get('KillSignal', 'SIGTERM'))

    def _directories(self, kind):
        root = self.runtime_root if kind == 'Runtime' else self.state_root
        names = ' '.join(self.all(f'{kind}Directory')).split()
        return [os.path.join(root, n) for n in names]

    # --------------------------------------------------------- expansion
    def _environment(self, mainpid=None):
        env = {'PATH': f'{self._fake_bin}:{DEFAULT_PATH}', 'LANG': 'C.UTF-8'}
        runtime = self._directories('Runtime')
        state = self._directories('State')
        if runtime:
            env['RUNTIME_DIRECTORY'] = ':'.join(runtime)
        if state:
            env['STATE_DIRECTORY'] = ':'.join(state)
        if self.user:
            env.update(USER=self.user, LOGNAME=self.user)
        if mainpid:
            env['MAINPID'] = str(mainpid)
        env.update(self.extra_env)
        return env

    def _expand(self, line, env):
        """(argv, privileged, ignore_failure) of an Exec line."""
        # Installing the unit replaced @BINDIR@ before systemd reads it.
        line = line.replace('@BINDIR@', self.bindir)
        privileged = ignore = False
        while line and line[0] in '+-@:!':
            privileged |= line[0] in '+!'
            ignore |= line[0] == '-'
            line = line[1:]
        specifiers = {'n': self.name, 'N': self.name.rsplit('.', 1)[0],
                      't': self.runtime_root, 'S': self.state_root,
                      '%': '%'}
        line = re.sub(r'%(.)', lambda m: specifiers[m.group(1)], line)
        argv = []
        for word in shlex.split(line):
            word = re.sub(r'\$\{(\w+)\}', lambda m: env.get(m.group(1), ''),
                          word)
            if word.startswith('$') and word[1:] in env:
                word = env[word[1:]]
            for shipped, lab in self.paths.items():
                word = word.replace(shipped, lab)
            argv.append(word)
        return argv, privileged, ignore

    def _as_user(self, argv):
        """User=, Group=, the capability sets and NoNewPrivileges=, as
        systemd applies them, through setpriv."""
        if not self.user:
            return argv
        caps = {c.lower().removeprefix('cap_') for c in ' '.join(
            self.all('AmbientCapabilities')).split()}
        caps |= set(self.extra_caps)
        capset = ','.join(['-all'] + [f'+{c}' for c in sorted(caps)])
        group = self.get('Group', self.user)
        wrapper = ['setpriv', f'--reuid={self.user}', f'--regid={group}',
                   '--init-groups', f'--inh-caps={capset}',
                   f'--ambient-caps={capset}', f'--bounding-set={capset}']
        if self.get('NoNewPrivileges', 'no') in ('yes', 'true', '1'):
            wrapper.append('--no-new-privs')
        return wrapper + ['--'] + argv

    def _command(self, line, mainpid=None):
        env = self._environment(mainpid)
        argv, privileged, ignore = self._expand(line, env)
        if not privileged:
            argv = self._sandboxed(self._as_user(argv))
        return argv, env, ignore

    def _in_view(self):
        """The lab's paths a sandboxed command must still see."""
        paths = [self.work, self.runtime_root, self.state_root,
                 self.bindir, *self.visible]
        paths += [v if os.path.isdir(v) else os.path.dirname(v)
                  for v in self.paths.values()]
        paths = sorted({os.path.realpath(p) for p in paths})
        # Outermost only: a bind mount of a folder brings what is in it.
        return [p for p in paths
                if not any(p.startswith(q + '/') for q in paths)]

    def _sandboxed(self, argv):
        """PrivateTmp=, ProtectHome=, ProtectSystem= and UMask= as systemd
        sets them up (systemd.exec(5)), in a mount namespace of the
        command's own (unshare, slave propagation as systemd's: mounts
        made later on the host, a new network namespace's, are seen):
        /tmp and /var/tmp a fresh tmpfs; /home, /root and /run/user an
        empty read-only one; /usr, /boot, /efi (and /etc for "full")
        read-only.  Deviations: each command gets its own /tmp (systemd
        shares one among a unit's commands); the lab's paths
        (_in_view) stay visible inside what is hidden; "strict" is not
        played."""
        hide = []
        if self.get('PrivateTmp', 'no') in _YES:
            hide += [('/tmp', '1777', False), ('/var/tmp', '1777', False)]
        if self.get('ProtectHome', 'no') in _YES:
            hide += [(d, '0755', True) for d in ('/home', '/root',
                                                 '/run/user')]
        system = self.get('ProtectSystem', 'no')
        if system == 'strict':
            raise UnitError(f'{self.name}: ProtectSystem=strict is not '
                            f'played by this emulator')
        readonly = []
        if system in _YES or system == 'full':
            readonly = ['/usr', '/boot', '/efi']
            if system == 'full':
                readonly.append('/etc')
        umask = self.get('UMask')
        if not (hide or readonly or umask):
            return argv
        keep = self._in_view()
        sh = ['set -e', 'mount -t tmpfs -o mode=0700 dsr-unit-stash /mnt']
        for n, (folder, mode, ro) in enumerate(hide):
            if not os.path.isdir(folder):
                continue
            stash = f'/mnt/{n}'
            sh += [f'mkdir {stash}', f'mount --rbind {folder} {stash}',
                   f'mount -t tmpfs -o mode={mode} dsr-unit {folder}']
            for path in keep:
                if path.startswith(folder + '/'):
                    rel = shlex.quote(path[len(folder) + 1:])
                    sh += [f'mkdir -p {folder}/{rel}',
                           f'mount --rbind {stash}/{rel} {folder}/{rel}']
            if ro:
                sh.append(f'mount -o remount,ro,bind {folder}')
        for folder in readonly:
            if os.path.isdir(folder):
                sh += [f'mount --bind {folder} {folder}',
                       f'mount -o remount,bind,ro {folder}']
        sh.append('umount -l /mnt')
        if umask:
            sh.append(f'umask {umask}')
        sh.append('exec "$@"')
        return ['unshare', '--mount', '--propagation', 'slave', '--',
                'sh', '-c', '\n'.join(sh), 'sh', *argv]

    def _run(self, key, line, timeout, mainpid=None):
        argv, env, ignore = self._command(line, mainpid)
        self._event(f'{key}: {shlex.join(argv)}')
        try:
            out = subprocess.run(argv, env=env, capture_output=True,
                                 text=True, timeout=timeout,
                                 start_new_session=True)
        except subprocess.TimeoutExpired:
            raise UnitError(f'{self.name}: {key} timed out') from None
        if out.returncode != 0 and not ignore:
            raise UnitError(f'{self.name}: {key} {shlex.join(argv)} exited '
                            f'{out.returncode}: {out.stderr[-2000:]}')
        return out

    def _event(self, what):
        self.log.append((time.monotonic(), what))

    def _set_job(self, kind):
        with open(self._jobs, 'w') as f:
            if kind:
                self.job_id += 1
                f.write(f'{self.job_id} {self.name} {kind} running\n')

    # ---------------------------------------------------------- lifecycle
    def start(self):
        self._set_job('start')
        try:
            self._make_directories()
            for line in self.all('ExecStartPre'):
                self._run('ExecStartPre', line, 90)
            argv, env, _ = self._command(self.get('ExecStart'))
            self._event(f'ExecStart: {shlex.join(argv)}')
            # netns.Proc: its own session (systemd setsid()s services),
            # output kept for wait_for_line.
            self.main = netns.Proc(argv, env=env)
        finally:
            self._set_job(None)
        return self.main

    def _make_directories(self):
        ids = None
        if self.user:
            entry = pwd.getpwnam(self.user)
            ids = (entry.pw_uid, entry.pw_gid)
        for kind in ('Runtime', 'State'):
            mode = int(self.get(f'{kind}DirectoryMode', '0755'), 8)
            for path in self._directories(kind):
                os.makedirs(path, exist_ok=True)
                os.chmod(path, mode)
                if ids:
                    os.chown(path, *ids)

    def stop(self, job='stop'):
        """The stop sequence under a ``job`` job; returns the main
        process's exit status (None: it had exited before)."""
        self._set_job(job)
        try:
            return self._stop()
        finally:
            self._set_job(None)
            preserve = self.get('RuntimeDirectoryPreserve', 'no')
            if preserve == 'no' or (preserve == 'restart' and
                                    job != 'restart'):
                for path in self._directories('Runtime'):
                    shutil.rmtree(path, ignore_errors=True)
                self._event('RuntimeDirectory removed')

    def _stop(self):
        main = self.main
        if main is None:
            return None
        alive = main.poll() is None
        for line in self.all('ExecStop'):
            try:
                self._run('ExecStop', line, self.stop_timeout,
                          mainpid=main.pid if alive else None)
            except UnitError as exc:
                # systemd goes on with the kill phase.
                self._event(f'ExecStop failed: {exc}')
                break
        main_only = self.kill_mode in ('process', 'mixed')
        if main.poll() is None:
            self._kill(self.kill_signal, main_only)
            self._kill(signal.SIGCONT, main_only)
            try:
                main.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._event('TimeoutStopSec expired')
                self._kill(signal.SIGKILL,
                           main_only=self.kill_mode == 'process')
                main.wait(30)
        if self.kill_mode != 'process':
            # What is left of the "control group" does not survive a stop.
            self._kill(signal.SIGKILL, main_only=False)
        self._event(f'main process exited {main.returncode}')
        main.wait()
        netns.kill_proc(main)    # drops it from the lab's tracking
        self.main = None
        return main.returncode

    def _kill(self, sig, main_only):
        pid = self.main.pid
        self._event(f'{signal.Signals(sig).name} to '
                    f'{"main process" if main_only else "control group"}')
        try:
            if main_only:
                os.kill(pid, sig)
            else:
                os.killpg(pid, sig)
        except ProcessLookupError:
            pass

    def restart(self):
        self.stop(job='restart')
        return self.start()

    def reload(self):
        self._set_job('reload')
        try:
            for line in self.all('ExecReload'):
                self._run('ExecReload', line, 90, mainpid=self.main.pid)
        finally:
            self._set_job(None)

    def close(self):
        """Stop whatever still runs (no stop sequence) and remove the
        emulator's files."""
        if self.main is not None:
            netns.kill_proc(self.main)
            self.main = None
        shutil.rmtree(self.work, ignore_errors=True)


def install_console_script(bindir, name, python, entry_point):
    """What pip installs for a console_scripts entry point
    (``module:function``), run by ``python``: the @BINDIR@ of a unit."""
    module, _, func = entry_point.partition(':')
    os.makedirs(bindir, exist_ok=True)
    path = os.path.join(bindir, name)
    with open(path, 'w') as f:
        f.write(f'#!{python}\nimport sys\nfrom {module} import {func}\n'
                f'sys.exit({func}())\n')
    os.chmod(path, 0o755)
    return path
