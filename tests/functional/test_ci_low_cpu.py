""".ci/low-cpu: the cgroup .ci/run runs the tempest stages in, beside
stages 1 and 2.  Its command and everything that command starts, in new
sessions too, run at an eighth of the default CPU weight; the weight drops
to the least there is and back; the cgroup goes once it is empty, and says
what CPU its processes used."""

import os
import re
import subprocess
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
LOW_CPU = os.path.join(REPO, '.ci', 'low-cpu')
V1 = '/sys/fs/cgroup/cpu'
V2 = '/sys/fs/cgroup'
V1_ACCT = '/sys/fs/cgroup/cpuacct'


def _run(*args, **kwargs):
    return subprocess.run([LOW_CPU, *args], capture_output=True, text=True,
                          timeout=30, **kwargs)


def _hierarchy():
    """(directory, weight file, low, lowest) of the cgroup version this
    host offers root, as .ci/low-cpu picks it; None where neither."""
    if os.path.isfile(os.path.join(V1, 'cpu.shares')):
        return V1, 'cpu.shares', '128', '2'
    control = os.path.join(V2, 'cgroup.subtree_control')
    if os.path.isfile(control) and 'cpu' in open(control).read().split():
        return V2, 'cpu.weight', '12', '1'
    return None


@pytest.fixture
def group():
    name = f'dsr-test-low-cpu-{os.getpid()}'
    yield name
    found = _hierarchy()
    if found and os.path.isdir(os.path.join(found[0], name)):
        with open(os.path.join(found[0], name, 'cgroup.procs')) as f:
            for pid in f.read().split():
                subprocess.run(['kill', '-9', pid], capture_output=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.rmdir(os.path.join(found[0], name))
                break
            except OSError:
                time.sleep(0.05)
    try:
        os.rmdir(os.path.join(V1_ACCT, name))
    except OSError:
        pass


def test_without_a_cgroup_the_check_says_so():
    """.ci/run falls back to the sequential layout on --check's answer."""
    assert (_run('--check').returncode == 0) == (_hierarchy() is not None)


def test_a_command_and_its_new_sessions_run_at_the_low_weight(group):
    found = _hierarchy()
    if found is None:
        # This host cannot give the cgroup: .ci/low-cpu must refuse clearly.
        out = _run(group, 'true')
        assert out.returncode == 1 and 'no writable cpu cgroup' in out.stderr
        return
    root, weight_file, low, lowest = found
    where = os.path.join(root, group)
    # The command starts a new session, as the labs' daemons do: it stays
    # in the cgroup (nice would not follow it past autogroup scheduling).
    proc = subprocess.Popen(
        [LOW_CPU, group, 'setsid', 'sh', '-c',
         'cat /proc/self/cgroup; echo END; exec sleep 60'],
        stdout=subprocess.PIPE, text=True)
    try:
        cgroups = ''
        for line in proc.stdout:
            if line == 'END\n':
                break
            cgroups += line
        assert f'/{group}\n' in cgroups, cgroups
        weight = os.path.join(where, weight_file)
        assert open(weight).read().strip() == low
        assert _run('--weight', group, 'lowest').returncode == 0
        assert open(weight).read().strip() == lowest
        bad = _run('--weight', group, 'none')
        assert bad.returncode == 2 and "not 'none'" in bad.stderr
        assert open(weight).read().strip() == lowest
        assert _run('--weight', group, 'low').returncode == 0
        assert open(weight).read().strip() == low

        # Not removed while a process is in it: waited for, then named.
        kept = _run('--remove', group,
                    env=dict(os.environ, LOW_CPU_REMOVE_WAIT='1'))
        assert os.path.isdir(where)
        assert 'still holds' in kept.stderr, kept.stderr
    finally:
        proc.kill()
        proc.wait()
    # A process that ends during the wait (as rabbitmqctl delete_vhost
    # after a lab's close) is waited for.
    quick = 'sleep 1 >/dev/null 2>&1 & exit 0'
    assert _run(group, 'sh', '-c', quick).returncode == 0
    assert open(os.path.join(where, 'cgroup.procs')).read().strip()
    started = time.monotonic()
    removed = _run('--remove', group)
    assert removed.returncode == 0
    assert time.monotonic() - started > 0.5
    if root == V2 or os.path.isdir(V1_ACCT):
        # The run's log says what the group's processes used.
        assert re.search(rf'{group} used \d+\.\d CPU-s', removed.stderr), \
            removed.stderr
    assert not os.path.isdir(where)
    # Removing what is not there (a run that never made it) is no error.
    assert _run('--remove', group).returncode == 0
