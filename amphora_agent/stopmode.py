"""Stop with drain, or restart without: how the agent tells them apart.

``systemctl stop dsr-agent`` must drain (withdraw the VIPs, keep forwarding
for [agent] drain_wait, stop ExaBGP); ``systemctl restart dsr-agent`` must
not (the pinned dataplane keeps forwarding, ExaBGP keeps the routes and the
new agent adopts both).  systemd runs the same stop sequence in both cases
-- ExecStop=, then KillSignal= to the main process -- and tells the service
nothing about why.  What differs is the unit's job while that sequence
runs: a restart job keeps the type "restart" during its stop phase and is
turned into a "start" job only when the stop finished (systemd's
src/core/job.c, "Patch restart jobs so that they become normal start
jobs"); a stop, or a shutdown, is a "stop" job.

So the unit's ``ExecStop=dsr-agent --config-file ... --stop-hook %n`` asks
systemd for its own job (``systemctl list-jobs UNIT``, a read-only call any
user may make) and, only for a restart, leaves a marker file in [agent]
state_dir.  The agent then gets SIGTERM and drains unless the marker is
there (and removes it).  Anything the hook cannot establish -- systemd not
answering, no job (the agent died and systemd is cleaning up), a job type
other than restart -- leaves no marker, so the agent drains: the safe side
(a planned stop never leaves a stopped SE announced).  try-restart and
reload-or-restart are restart jobs too; Restart=on-failure involves no
SIGTERM (the agent is already dead) and kill -9 or a dead master never
drains (dsr_wire/daemon.py).
"""

import os
import subprocess
import time

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

MARKER = 'restart-pending'
SYSTEMCTL_TIMEOUT = 10.0


def job_type(unit, timeout=SYSTEMCTL_TIMEOUT):
    """The type of ``unit``'s pending systemd job ('restart', 'stop',
    ...), or None when it has none or systemd cannot be asked."""
    try:
        out = subprocess.run(
            ['systemctl', 'list-jobs', '--no-legend', '--no-pager', unit],
            capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        LOG.warning('cannot ask systemd for the job of %s: %s', unit, exc)
        return None
    if out.returncode != 0:
        LOG.warning('systemctl list-jobs %s: %s', unit,
                    (out.stderr or out.stdout).strip())
        return None
    return parse_list_jobs(out.stdout, unit)


def parse_list_jobs(text, unit):
    """The job type of ``unit`` in ``systemctl list-jobs --no-legend``
    output (columns JOB UNIT TYPE STATE)."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == unit:
            return fields[2]
    return None


def marker_path(state_dir):
    return os.path.join(state_dir, MARKER)


def mark_restart(state_dir, why):
    """Leave the marker: the agent's next stop will not drain."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    with open(marker_path(state_dir), 'w') as f:
        f.write(f'{why} {time.time():.3f}\n')


def stop_hook(state_dir, unit):
    """ExecStop=: leave the marker when this stop is the first half of a
    restart of ``unit``.  Returns the job type found."""
    kind = job_type(unit)
    if kind == 'restart':
        mark_restart(state_dir, f'{unit} restart')
        LOG.info('%s is restarting: the agent exits without draining', unit)
    else:
        LOG.info('%s job %s: the agent drains before it exits', unit, kind)
    return kind


def restart_pending(state_dir):
    """Take the marker: True (once) when the hook announced a restart."""
    try:
        os.unlink(marker_path(state_dir))
    except FileNotFoundError:
        return False
    return True


def clear(state_dir):
    """At start: a marker left by a hook whose agent was already dead must
    not spare a later stop its drain."""
    if restart_pending(state_dir):
        LOG.info('removed a stale %s marker', MARKER)
