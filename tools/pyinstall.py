"""Install Python requirements into a virtualenv, with uv when it can.

`make deps` fills two virtualenvs (.venv and .tempest-venv) of about 150
distributions each.  pip took 60-90 s for each on a 2-core machine; uv
installs the same versions in about 6 s, cache cold (docs/benchmarks.md,
"Session 20").  This module is the one place that chooses:

* uv is bootstrapped with pip into the virtualenv it fills (one wheel,
  about 3 s) and used from there; `DSR_INSTALLER=pip` keeps plain pip, and
  pip is also the fallback when uv cannot be installed (a mirror without
  it).
* uv does not read pip's configuration, so the settings that say where
  packages come from (`pip config list`: index-url, extra-index-url,
  find-links, constraint, no-index, from pip.conf or PIP_* variables) are
  passed on,
  and every index is searched alike (`--index-strategy
  unsafe-best-match`), which is what pip does.
* A distribution already installed that satisfies the requirements is kept,
  with either tool (the venv's own pip and setuptools included).
* What is installed is compiled to bytecode with either tool (pip's
  default, uv's --compile-bytecode).

Standard library only: install-deps.sh runs it with the system python3
before any virtualenv exists.  What users install with stays pip (README,
the DevStack plugin, tests/functional/test_packaging.py).
"""

import argparse
import os
from pathlib import Path
import shlex
import subprocess
import sys

# pip configuration key -> uv option; pip's values may list several,
# separated by whitespace.
_PIP_TO_UV = {
    'index-url': '--index-url',
    'extra-index-url': '--extra-index-url',
    'find-links': '--find-links',
    'constraint': '--constraint',
}


def pip_sources(python):
    """uv options for where pip would take packages from, read from pip."""
    out = subprocess.run(
        [str(python), '-m', 'pip', 'config', 'list'],
        capture_output=True, text=True, check=True,
        env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK='1')).stdout
    return sources_from_config(out)


# The sections `pip install` reads, weakest first: [global] then [install]
# of the configuration files, then PIP_* variables (pip prints them as
# section ":env:"; it prints every key sorted, not in precedence order).
_SECTION_RANK = {'global': 0, 'install': 1, ':env:': 2}


def sources_from_config(text):
    """`pip config list` output -> uv options, with pip's precedence."""
    found = {}
    for line in text.splitlines():
        name, sep, value = line.partition('=')
        section, _, key = name.rpartition('.')
        if not sep or section not in _SECTION_RANK:
            continue
        if key in _PIP_TO_UV or key == 'no-index':
            # pip prints each value as a Python-quoted string.
            value = shlex.split(value)[0] if value.strip() else ''
            rank = _SECTION_RANK[section]
            if key not in found or found[key][0] <= rank:
                found[key] = (rank, value)
    found = {key: value for key, (_, value) in found.items()}
    args = []
    for key, option in _PIP_TO_UV.items():
        for item in found.get(key, '').split():
            args += [option, item]
    if found.get('no-index', '').lower() in ('1', 'true', 'yes', 'on'):
        args.append('--no-index')
    return args


def constraint_args(requirements):
    """The -c/--constraint options among pip install arguments."""
    found = []
    args = iter(requirements)
    for arg in args:
        if arg in ('-c', '--constraint'):
            found += [arg, next(args, '')]
        elif arg.startswith('--constraint=') or (
                arg.startswith('-c') and len(arg) > 2):
            found.append(arg)
    return found


def _uv(python, log, constraints=()):
    """The uv beside `python` (bootstrapped with pip, under `constraints`:
    pip install -c options), or None."""
    if os.environ.get('DSR_INSTALLER', 'uv') == 'pip':
        return None
    uv = Path(python).parent / 'uv'
    if uv.exists():
        return uv
    done = subprocess.run(
        [str(python), '-m', 'pip', 'install', '-q',
         '--disable-pip-version-check', *constraints, 'uv'],
        capture_output=True, text=True)
    if done.returncode != 0 or not uv.exists():
        log('uv could not be installed, using pip: '
            + (done.stderr.strip().splitlines() or ['?'])[-1])
        return None
    return uv


def _pip_install(python, requirements, build_constraints=None):
    pip = [str(python), '-m', 'pip']
    env = None
    if build_constraints:
        # pip's -c does not reach the isolated build environment; the
        # environment variable does (its build subprocess is a pip too) up
        # to pip 25.2, PIP_BUILD_CONSTRAINT from 25.3 (where PIP_CONSTRAINT
        # stops reaching builds once it is set).  With pip, PIP_CONSTRAINT
        # constrains the main install too: the two files agree on what
        # they share (tools/constraints.py).
        env = dict(os.environ, PIP_CONSTRAINT=str(build_constraints),
                   PIP_BUILD_CONSTRAINT=str(build_constraints))
    subprocess.run(pip + ['install', '-q', '--disable-pip-version-check',
                          *requirements], check=True, env=env)
    subprocess.run(pip + ['check', '-q', '--disable-pip-version-check'],
                   check=True)


def _uv_install(uv, python, requirements, build_constraints=None):
    base = [str(uv), 'pip']
    target = ['--python', str(python)]
    build = (['--build-constraints', str(build_constraints)]
             if build_constraints else [])
    subprocess.run(
        base + ['install', '--quiet', *target,
                # pip compiles what it installs; uv only when asked.  Where
                # PYTHONDONTWRITEBYTECODE is set (as on this project's
                # development machines) nothing else ever would, and every
                # process compiled what it imported: 2-3 x the CPU of an
                # import (docs/benchmarks.md, "Session 21").
                '--compile-bytecode',
                '--index-strategy', 'unsafe-best-match', *build,
                *pip_sources(python), *requirements],
        check=True)
    subprocess.run(base + ['check', '--quiet', *target], check=True)


def install(python, requirements, log=print, build_constraints=None):
    """Install `requirements` (pip install arguments) into `python`'s venv;
    return the tool that did it ('uv' or 'pip').  uv failing (a resolution
    or a source it cannot read that pip could) leaves the job to pip.
    `build_constraints`: a constraints file for the isolated build
    environments of everything built from source (the editable install,
    and any sdist among the requirements)."""
    python = Path(python)
    uv = _uv(python, log, constraint_args(requirements))
    if uv is not None:
        try:
            _uv_install(uv, python, requirements, build_constraints)
            return 'uv'
        except subprocess.CalledProcessError as exc:
            log(f'uv failed ({exc}); installing with pip')
    _pip_install(python, requirements, build_constraints)
    return 'pip'


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], allow_abbrev=False,
        usage='%(prog)s --python PY [pip install arguments: -r FILE, -e .]')
    parser.add_argument('--python', required=True,
                        help='the virtualenv python to install into')
    parser.add_argument('--build-constraints', metavar='FILE',
                        help='constraints for the isolated build '
                        'environments (the build system of what is built '
                        'from source)')
    args, requirements = parser.parse_known_args(argv)
    tool = install(args.python, requirements,
                   log=lambda m: print(m, file=sys.stderr),
                   build_constraints=args.build_constraints)
    print(tool)


if __name__ == '__main__':
    main()
