"""make test / make test-e2e run pytest-xdist with loadfile: a worker that
dies must fail the run at once and name its test.  xdist 3.8 replaces a
crashed worker and then, with loadfile, can wait forever (rehearsal 46 hung
at 99 % until the stage's timeout)."""

import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _make_variable(name):
    out = subprocess.run(
        ['make', '-s', '-C', REPO, f'--eval=print-var: ; @printf "%s" '
         f'"$({name})"', 'print-var'],
        capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.split()


@pytest.mark.parametrize('variable', ['PYTEST_PARALLEL', 'E2E_PARALLEL'])
def test_a_crashed_worker_fails_the_run_at_once(variable, tmp_path):
    args = _make_variable(variable)
    assert '--dist' in args
    (tmp_path / 'test_1_crash.py').write_text(
        'import os, signal\n'
        'def test_before():\n    pass\n'
        'def test_crash():\n    os.kill(os.getpid(), signal.SIGKILL)\n')
    for n in range(2, 6):
        (tmp_path / f'test_{n}.py').write_text('def test_ok():\n    pass\n')
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider',
         '-p', 'no:randomly', '--rootdir', str(tmp_path), '-c', os.devnull,
         *args, str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1, done.stdout[-3000:]
    assert "crashed while running 'test_1_crash.py::test_crash'" in \
        done.stdout, done.stdout[-3000:]
    assert time.monotonic() - started < 60
