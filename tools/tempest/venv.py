"""Create or refresh the tempest stage's virtualenv (.tempest-venv).

pip runs only when tools/tempest/requirements.txt or setup.cfg is newer than
the stamp file; the project itself is installed editable without its
dependencies, for its tempest plugin's entry point (tempest.test_plugins).
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / 'tools' / 'tempest' / 'requirements.txt'


def ensure(venv=ROOT / '.tempest-venv', log=print):
    venv = Path(venv)
    python = venv / 'bin' / 'python'
    stamp = venv / '.deps-stamp'
    if not python.exists():
        log(f'creating {venv}')
        subprocess.run([sys.executable, '-m', 'venv', '--clear', str(venv)],
                       check=True)
    sources = (REQUIREMENTS, ROOT / 'setup.cfg')
    if stamp.exists() and all(s.stat().st_mtime <= stamp.stat().st_mtime
                              for s in sources):
        return python
    pip = [str(python), '-m', 'pip', '-q', '--disable-pip-version-check']
    log(f'installing {REQUIREMENTS.relative_to(ROOT)} into {venv}')
    subprocess.run(pip + ['install', '-r', str(REQUIREMENTS)], check=True)
    subprocess.run(pip + ['install', '--no-deps', '-e', str(ROOT)],
                   check=True)
    subprocess.run(pip + ['check'], check=True)
    stamp.touch()
    return python


if __name__ == '__main__':
    print(ensure())
