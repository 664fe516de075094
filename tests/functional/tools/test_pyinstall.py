"""tools/pyinstall.py against real pip and uv: uv is bootstrapped into a
fresh virtualenv and installs from where pip's configuration says packages
come from (a find-links folder uv would not know of by itself); with
DSR_INSTALLER=pip, pip does the same job; both leave the installed
modules compiled."""

import shutil
import subprocess
import sys
import zipfile

import pytest

from tools import pyinstall

DIST = 'dsr_pyinstall_probe'


def _wheel(folder, version='1.0', value=42):
    """A minimal pure-Python wheel of DIST `version` in `folder`."""
    info = f'{DIST}-{version}.dist-info'
    files = {
        f'{DIST}/__init__.py': f'VALUE = {value}\n',
        f'{info}/METADATA': f'Metadata-Version: 2.1\nName: {DIST}\n'
                            f'Version: {version}\n',
        f'{info}/WHEEL': 'Wheel-Version: 1.0\nGenerator: test\n'
                         'Root-Is-Purelib: true\nTag: py3-none-any\n',
    }
    record = ''.join(f'{name},,\n' for name in files) + f'{info}/RECORD,,\n'
    files[f'{info}/RECORD'] = record
    path = folder / f'{DIST}-{version}-py3-none-any.whl'
    with zipfile.ZipFile(path, 'w') as whl:
        for name, text in files.items():
            whl.writestr(name, text)
    return path


@pytest.fixture(scope='module')
def template_venv(tmp_path_factory):
    """A fresh virtualenv, made once: `python -m venv` (ensurepip) takes
    5-6 s of CPU on a slow host, nine times over."""
    path = tmp_path_factory.mktemp('pyinstall') / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(path)], check=True)
    return path


@pytest.fixture
def venv(template_venv, tmp_path, monkeypatch):
    """A fresh virtualenv's python (a copy of the template: the tools run
    it as `python -m pip`, which a moved venv serves); DIST is known only
    to pip's configuration (a find-links folder in its environment
    variable)."""
    links = tmp_path / 'links'
    links.mkdir()
    _wheel(links)
    _wheel(links, '2.0', 43)
    path = tmp_path / 'venv'
    shutil.copytree(template_venv, path, symlinks=True)
    monkeypatch.setenv('PIP_FIND_LINKS', str(links))
    monkeypatch.delenv('DSR_INSTALLER', raising=False)
    return path / 'bin' / 'python'


def _value(python):
    return subprocess.run(
        [str(python), '-c', f'import {DIST}; print({DIST}.VALUE)'],
        capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize('installer', ['uv', 'pip'])
def test_installs_from_pips_find_links(venv, monkeypatch, installer):
    monkeypatch.setenv('DSR_INSTALLER', installer)
    assert pyinstall.install(venv, [f'{DIST}==1.0']) == installer
    assert _value(venv) == '42'
    assert (venv.parent / 'uv').exists() == (installer == 'uv')
    # Installed as bytecode too, with either tool: where
    # PYTHONDONTWRITEBYTECODE is set no import would ever write it.
    site = next(venv.parent.parent.glob('lib/python3*/site-packages'))
    assert list((site / DIST / '__pycache__').glob('__init__.*.pyc'))


def test_without_uv_to_be_had_pip_installs(venv, monkeypatch):
    # A mirror without uv (here: no index at all, only find-links): the
    # bootstrap fails and pip does the job.
    monkeypatch.setenv('PIP_NO_INDEX', '1')
    said = []
    assert pyinstall.install(venv, [f'{DIST}==1.0'],
                             log=said.append) == 'pip'
    assert said and said[0].startswith('uv could not be installed')
    assert not (venv.parent / 'uv').exists()
    assert _value(venv) == '42'


def test_pip_takes_over_when_uv_fails(venv, monkeypatch):
    # A real uv that refuses to run (an invalid setting only uv reads).
    monkeypatch.setenv('UV_PYTHON_PREFERENCE', 'not-a-preference')
    said = []
    assert pyinstall.install(venv, [f'{DIST}==1.0'],
                             log=said.append) == 'pip'
    assert (venv.parent / 'uv').exists()
    assert said and said[0].startswith('uv failed')
    assert _value(venv) == '42'


@pytest.mark.parametrize('installer', ['uv', 'pip'])
def test_constraints_choose_the_version(venv, tmp_path, monkeypatch,
                                        installer):
    """make deps passes -c upper-constraints.txt: an unpinned requirement
    gets the constrained version, not the newest one."""
    monkeypatch.setenv('DSR_INSTALLER', installer)
    constraints = tmp_path / 'constraints.txt'
    constraints.write_text(f'{DIST}==1.0\n')
    assert pyinstall.install(venv, ['-c', str(constraints), DIST]) == \
        installer
    assert _value(venv) == '42'


def test_uv_is_bootstrapped_under_the_constraints(venv, tmp_path):
    """Not the newest uv of the day: the one the constraints pin (an
    older release here, so the newest cannot pass for it)."""
    constraints = tmp_path / 'constraints.txt'
    constraints.write_text('uv==0.13.8\n')
    assert pyinstall.install(venv, [f'--constraint={constraints}',
                                    DIST]) == 'uv'
    assert _value(venv) == '43'
    version = subprocess.run([str(venv.parent / 'uv'), '--version'],
                             capture_output=True, text=True,
                             check=True).stdout.split()[1]
    assert version == '0.13.8'


# An older setuptools than the newest of the day, so the newest cannot
# pass for it.
BUILD_PIN = '75.8.0'


def _source_project(folder):
    """A project built from source: setuptools in an isolated build
    environment, unpinned in its pyproject.toml."""
    folder.mkdir()
    (folder / 'pyproject.toml').write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\n'
        'build-backend = "setuptools.build_meta"\n'
        '[project]\nname = "dsr_build_probe"\nversion = "1.0"\n')
    (folder / 'dsr_build_probe.py').write_text('VALUE = 1\n')
    return folder


@pytest.mark.parametrize('installer', ['uv', 'pip'])
def test_build_constraints_choose_the_build_system(venv, tmp_path,
                                                   monkeypatch, installer):
    """make deps passes --build-constraints build-constraints.txt: the
    isolated build of what is built from source (the editable install)
    gets the pinned setuptools, which `-c` alone does not reach."""
    monkeypatch.setenv('DSR_INSTALLER', installer)
    build = tmp_path / 'build-constraints.txt'
    build.write_text(f'setuptools=={BUILD_PIN}\n')
    project = _source_project(tmp_path / 'probe')
    assert pyinstall.install(venv, [str(project)],
                             build_constraints=build) == installer
    wheel_files = list((venv.parent.parent / 'lib').glob(
        'python3*/site-packages/dsr_build_probe-1.0.dist-info/WHEEL'))
    assert len(wheel_files) == 1, wheel_files
    assert f'Generator: setuptools ({BUILD_PIN})' in \
        wheel_files[0].read_text()
