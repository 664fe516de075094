"""pip install of the built wheel into a fresh venv gives working commands
and a working dataplane (issue 13).

1. Build: the source tree as git sees it (tracked and untracked files, not
   ignored ones: no obj/), committed into a throw-away repository so pbr can
   version it, then `pip wheel` with build isolation (pbr and setuptools from
   the index, at build-constraints.txt's versions, as `make wheel`);
   tools/build_native.py compiles the BPF objects and
   libmaglev.so into the wheel.
2. Install: a fresh venv (python -m venv: no system site packages, its own
   pip) and `pip install` of the wheel.  Its requirements come from the
   package index through a wheelhouse kept between runs (DSR_WHEELHOUSE,
   default ~/.cache/octavia-dsr/wheelhouse): pip can cache nothing from the
   index proxy here, so a first run downloads (about 2 minutes) and a run
   whose wheelhouse lacks a requirement fetches it again.
3. Smoke: every console script the wheel declares answers --help (exit 0,
   usage, no traceback); the installed package finds its BPF objects and
   libmaglev.so inside the venv; the venv's dsrctl loads and attaches the SE
   XDP program and the members' tc program in network namespaces this test
   creates, and HTTP to the VIP reaches a member.  Namespaces and pins go at
   teardown, also on failure.
"""

import configparser
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.functional.amphora_agent.dataplane.conftest import DsrSetup
from tests.functional.amphora_agent.dataplane.conftest import listener
from tools.lab import netns

ROOT = pathlib.Path(__file__).resolve().parents[2]
WHEELHOUSE = pathlib.Path(os.environ.get(
    'DSR_WHEELHOUSE',
    os.path.expanduser('~/.cache/octavia-dsr/wheelhouse')))
# At least these; the test runs every console script the wheel declares.
CONSOLE_SCRIPTS = {'dsr-controller', 'dsr-agent', 'dsrctl', 'dsr-manage',
                   'dsr-db-manage'}
NATIVE_PARTS = ('obj/se_xdp.o', 'obj/member_tc.o', 'obj/libmaglev.so')

# Cold: ~2 min to download the requirements; warm: well under 3 min.
pytestmark = pytest.mark.timeout(900)


def _run(argv, timeout=600, **kwargs):
    proc = subprocess.run([str(a) for a in argv], capture_output=True,
                          text=True, timeout=timeout, **kwargs)
    assert proc.returncode == 0, (
        f'{" ".join(map(str, argv))} exited {proc.returncode}:\n'
        f'{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}')
    return proc


def _clean_env():
    """The environment without anything that could reach the checkout."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('PYTHON', 'VIRTUAL_ENV', 'OCTAVIA_DSR'))}
    env['PATH'] = '/usr/sbin:/usr/bin:/sbin:/bin'
    return env


def _source_copy(dest):
    """The working tree's files git would see, in a fresh one-commit repo."""
    listed = _run(['git', '-C', ROOT, 'ls-files', '-z', '--cached',
                   '--others', '--exclude-standard']).stdout
    for rel in filter(None, listed.split('\0')):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the tree is skipped
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    git = ['git', '-C', dest, '-c', 'user.name=test',
           '-c', 'user.email=test@example.invalid']
    _run(git[:3] + ['init', '-q'])
    # pbr versions a repository of one commit 0.0.0: give it a root.
    _run(git + ['commit', '-q', '--allow-empty', '-m', 'root'])
    _run(git + ['add', '-A'])
    _run(git + ['commit', '-q', '-m', 'snapshot for test_packaging'])


def _build_wheel(tmp):
    src = tmp / 'src'
    src.mkdir()
    _source_copy(src)
    assert not (src / 'amphora_agent/dataplane/obj').exists()
    out = tmp / 'dist'
    _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-w', out,
          src], cwd=tmp,
         env=dict(os.environ,
                  PIP_CONSTRAINT=str(ROOT / 'build-constraints.txt'),
                  PIP_BUILD_CONSTRAINT=str(ROOT / 'build-constraints.txt')))
    wheels = list(out.glob('octavia_dsr-*.whl'))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _install(venv, wheel):
    pip = [venv / 'bin' / 'python', '-m', 'pip', 'install', '-q',
           '--disable-pip-version-check']
    offline = subprocess.run(
        [str(a) for a in pip + ['--no-index', '--find-links', WHEELHOUSE,
                                wheel]],
        capture_output=True, text=True, timeout=600, env=_clean_env())
    if offline.returncode == 0:
        return
    # The wheelhouse lacks something: fetch the wheel's requirements from
    # the index (what a plain `pip install` resolves), then install offline.
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    _run(pip[:3] + ['download', '-q', '--disable-pip-version-check',
                    '-d', WHEELHOUSE, wheel], env=_clean_env())
    _run(pip + ['--no-index', '--find-links', WHEELHOUSE, wheel],
         env=_clean_env())


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(wheel path, venv path): the built wheel installed in a fresh venv."""
    tmp = tmp_path_factory.mktemp('packaging')
    wheel = _build_wheel(tmp)
    venv = tmp / 'venv'
    # The base interpreter, not this venv's: a venv made from a venv's
    # python is still rooted at the base one, but say it explicitly.
    base = getattr(sys, '_base_executable', sys.executable)
    _run([base, '-m', 'venv', venv], env=_clean_env())
    assert 'include-system-site-packages = false' in (
        venv / 'pyvenv.cfg').read_text()
    _install(venv, wheel)
    return wheel, venv


def test_wheel_carries_the_native_parts_and_requirements(installed):
    wheel, _ = installed
    # setup.cfg's version, a .devN of it (pbr: untagged), a platform tag.
    assert wheel.name.startswith('octavia_dsr-0.1.0.dev'), wheel.name
    assert wheel.name.endswith(f'-py3-none-linux_{os.uname().machine}.whl')
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names
                                if n.endswith('.dist-info/METADATA')))
    for part in NATIVE_PARTS:
        assert any(n.endswith('amphora_agent/dataplane/' + part)
                   for n in names), part
    # The product only (dsr_provider/tempest/tests is the tempest plugin's).
    assert not any(n.startswith(('tests/', 'tools/', 'bench/'))
                   for n in names)
    requires = {line.split(':', 1)[1].strip().split('>')[0].split('<')[0]
                for line in metadata.decode().splitlines()
                if line.startswith('Requires-Dist:')}
    assert {'tooz', 'oslo.messaging', 'exabgp', 'octavia-lib',
            'pyroute2'} <= requires


def _console_scripts(wheel):
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(next(n for n in zf.namelist()
                            if n.endswith('.dist-info/entry_points.txt')))
    entry_points = configparser.ConfigParser()
    entry_points.read_string(text.decode())
    return sorted(entry_points['console_scripts'])


def test_console_scripts_answer_help(installed, tmp_path):
    wheel, venv = installed
    scripts = _console_scripts(wheel)
    assert CONSOLE_SCRIPTS <= set(scripts), scripts
    for script in scripts:
        proc = subprocess.run([str(venv / 'bin' / script), '--help'],
                              capture_output=True, text=True, timeout=120,
                              cwd=tmp_path, env=_clean_env())
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f'{script} --help:\n{output[-3000:]}'
        assert 'Traceback' not in output, f'{script}:\n{output[-3000:]}'
        assert 'usage:' in proc.stdout, f'{script}:\n{output[-3000:]}'


def test_installed_package_finds_its_native_parts(installed, tmp_path):
    _, venv = installed
    # -I: no cwd, no PYTHON* variables, no user site: only the venv.
    code = ('import amphora_agent.dataplane.pins as pins, '
            'amphora_agent.dataplane.maglev as maglev; '
            'print(pins.object_dir()); print(maglev.library_path()); '
            'print(maglev.native_available())')
    proc = _run([venv / 'bin' / 'python', '-I', '-c', code], cwd=tmp_path,
                env=_clean_env())
    obj_dir, library, native = proc.stdout.split()
    # Not the pure-Python fallback: the wheel's libmaglev.so loaded.
    assert native == 'True', proc.stderr
    site = venv / 'lib'
    assert pathlib.Path(obj_dir).is_relative_to(site), obj_dir
    assert pathlib.Path(library).is_relative_to(site), library
    for part in NATIVE_PARTS:
        assert (pathlib.Path(obj_dir).parent / part).is_file(), part


def test_installed_dsrctl_runs_the_dataplane(installed, make_topology):
    _, venv = installed
    setup = DsrSetup(make_topology(n_se=1, n_members=2))
    try:
        setup.dsrctl_argv = [str(venv / 'bin' / 'dsrctl')]
        setup.start()
        setup.apply(listener(netns.VIP4,
                             members=setup.member_addrs(4)))
        shown = setup.dsrctl_json('se1', 'show')
        assert shown['listeners'], shown
        body = setup.topo.http_get(netns.VIP4)
        assert 'member=' in body, body
    finally:
        setup.close()
