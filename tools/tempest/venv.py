"""Create or refresh the tempest stage's virtualenv (.tempest-venv).

It holds only third-party code (tools/tempest/requirements.txt, under
upper-constraints.txt): uv or pip (tools/pyinstall.py) installs it when the
content of those files differs from what the stamp records (content, not
mtime: every fresh checkout or worktree has new mtimes).  The project is NOT
installed into it: the gate puts the checkout it runs from on PYTHONPATH with
the plugin's entry point beside it (tools/tempest/plugin_dist.py), so one
venv serves every checkout (a worktree sharing the venv by symlink used to
reinstall the project editable from itself, pointing every other checkout's
runs at its tree -- and re-running pip under a run that was using the
venv).
A lock file serialises concurrent gates creating or refreshing it.
"""

import fcntl
import hashlib
from pathlib import Path
import subprocess
import sys
import tempfile

from tools import pyinstall

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / 'tools' / 'tempest' / 'requirements.txt'
# The versions it gets (tools/constraints.py), shared with .venv.
CONSTRAINTS = ROOT / 'upper-constraints.txt'
BUILD_CONSTRAINTS = ROOT / 'build-constraints.txt'
# The distribution an older version of this module installed editable.
PROJECT_DIST = 'octavia-dsr'


def _installed(python, dist):
    return subprocess.run(
        [str(python), '-I', '-c', 'import importlib.metadata as m; '
         f'm.distribution({dist!r})'], capture_output=True).returncode == 0


def ensure(venv=ROOT / '.tempest-venv', log=print):
    venv = Path(venv)
    python = venv / 'bin' / 'python'
    stamp = venv / '.deps-stamp'
    # Outside the checkout (nothing to ignore) and keyed by the venv's real
    # path (worktrees link one venv).
    lock_path = Path(tempfile.gettempdir()) / (
        'dsr-tempest-venv-' + hashlib.sha256(
            str(venv.resolve()).encode()).hexdigest()[:16] + '.lock')
    with open(lock_path, 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not python.exists():
            log(f'creating {venv}')
            subprocess.run([sys.executable, '-m', 'venv', '--clear',
                            str(venv)], check=True)
        pip = [str(python), '-m', 'pip', '-q', '--disable-pip-version-check']
        if _installed(python, PROJECT_DIST):
            log(f'removing the project ({PROJECT_DIST}) from {venv}')
            subprocess.run(pip + ['uninstall', '-y', PROJECT_DIST],
                           check=True)
        wanted = hashlib.sha256(REQUIREMENTS.read_bytes()
                                + CONSTRAINTS.read_bytes()
                                + BUILD_CONSTRAINTS.read_bytes()).hexdigest()
        if stamp.exists() and stamp.read_text().strip() == wanted:
            return python
        log(f'installing {REQUIREMENTS.relative_to(ROOT)} into {venv}')
        pyinstall.install(python, ['-c', str(CONSTRAINTS),
                                   '-r', str(REQUIREMENTS)], log=log,
                          build_constraints=BUILD_CONSTRAINTS)
        stamp.write_text(wanted + '\n')
    return python


if __name__ == '__main__':
    print(ensure())
