""".ci/run's layout with a stand-in make: the build first, then stage 1,
the scaling test and the rest of stage 2 in turn, the two tempest stages
beside them in the low-weight cgroup (after them where .ci/low-cpu says
no), every stage run even when one failed, and the run's result the
failure."""

import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# Records each call (its arguments, and for the tempest stages the cgroup
# it runs in) and fails the target named in FAKE_MAKE_FAIL.
FAKE_MAKE = """#!/usr/bin/env bash
target=${@: -1}
case "$*" in *test-tempest*) target=test-tempest ;; esac
where=$(grep -m1 -E '^[0-9]+:cpu(,[a-z]+)?:|^0::' /proc/self/cgroup |
        cut -d: -f3)
echo "$* | $where" >> "$FAKE_MAKE_LOG"
[ "$target" != "${FAKE_MAKE_FAIL:-}" ]
"""


def _run_ci(tmp_path, **env):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    make = bin_dir / 'make'
    make.write_text(FAKE_MAKE)
    make.chmod(0o755)
    log = tmp_path / 'make.log'
    env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}',
               FAKE_MAKE_LOG=str(log), **env)
    proc = subprocess.run([os.path.join(REPO, '.ci', 'run')],
                          capture_output=True, text=True, timeout=120,
                          env=env)
    calls = [line.split(' | ') for line in log.read_text().splitlines()]
    return proc, calls


def _cgroup_possible():
    return subprocess.run([os.path.join(REPO, '.ci', 'low-cpu'),
                           '--check']).returncode == 0


def test_the_tempest_stages_run_beside_the_others_in_the_cgroup(tmp_path):
    if not _cgroup_possible():
        # A host that gives root no cpu cgroup gets the sequential layout.
        _check_sequential(tmp_path)
        return
    proc, calls = _run_ci(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    args = [a for a, _ in calls]
    assert args[0] == 'deps build'
    others = [a for a in args[1:] if 'test-tempest' not in a]
    assert others == ['-o deps -o build test',
                      '-o deps -o build test-e2e-alone',
                      '-o deps -o build test-e2e-shared']
    tempest = [(a, where) for a, where in calls if 'test-tempest' in a]
    assert len(tempest) == 2
    assert any('--set ci ' in a for a, _ in tempest)
    assert any('--tier 2 --set tier2 ' in a for a, _ in tempest)
    for _, where in tempest:
        assert where.startswith('/dsr-ci-tempest-'), where
    name = tempest[0][1].lstrip('/')
    # The group's CPU is logged wherever it is accounted: cgroup v2's
    # cpu.stat, v1's cpuacct (.ci/low-cpu --remove).
    v1 = os.path.isfile('/sys/fs/cgroup/cpu/cpu.shares')
    if not v1 or os.path.isdir('/sys/fs/cgroup/cpuacct'):
        assert f'low-cpu: {name} used' in proc.stderr, proc.stderr
    assert not os.path.isdir(f'/sys/fs/cgroup/cpu/{name}')
    assert not os.path.isdir(f'/sys/fs/cgroup/{name}')


def test_without_the_cgroup_the_tempest_stages_come_last(tmp_path):
    _check_sequential(tmp_path, DSR_CI_LOW_CPU='0')


def _check_sequential(tmp_path, **env):
    proc, calls = _run_ci(tmp_path, **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    args = [a for a, _ in calls]
    assert args[:4] == ['deps build', '-o deps -o build test',
                        '-o deps -o build test-e2e-alone',
                        '-o deps -o build test-e2e-shared']
    assert sorted('--tier 2' in a for a in args[4:]) == [False, True]
    for _, where in calls:
        assert not where.startswith('/dsr-ci-tempest-'), where
    assert 'tempest beside them: 0' in proc.stdout


@pytest.mark.parametrize('failing', ['test', 'test-e2e-alone',
                                     'test-tempest'])
def test_a_failed_stage_fails_the_run_after_every_stage_ran(tmp_path,
                                                            failing):
    proc, calls = _run_ci(tmp_path, FAKE_MAKE_FAIL=failing)
    assert proc.returncode != 0
    args = [a for a, _ in calls]
    assert len(args) == 6, args
    assert '-o deps -o build test-e2e-shared' in args
