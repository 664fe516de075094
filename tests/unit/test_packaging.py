"""What pip installs is what the product needs (issue 13).

* every third-party module the product imports comes from a distribution
  listed in requirements.txt (pbr's install_requires), with a lower bound;
* every entry point setup.cfg declares resolves to an importable object;
* the wheel's package data names what `make build` produces.

The wheel itself is built, installed into a fresh venv and smoke-tested by
tests/functional/test_packaging.py.
"""

import configparser
import importlib
import importlib.metadata
import re
import sys

import pytest

from tests.unit.test_layering import _imports
from tests.unit.test_layering import ROOT

PRODUCT = ('amphora_agent', 'dsr_provider', 'dsr_wire')

# Imported by the product but deliberately not a requirement, with why:
# {module: the only files that may import it}.
NOT_REQUIRED = {
    # dsr_provider/tempest is the tempest plugin: tempest loads it from its
    # own environment (entry point tempest.test_plugins), as every OpenStack
    # project's in-tree plugin; a deployment does not install tempest.
    'tempest': ('dsr_provider/tempest/',),
    # dsr_provider/status_relay.py runs octavia-driver-agent's own status
    # code warm: it runs inside octavia-driver-agent (a provider agent) or
    # beside it, in Octavia's environment, as the provider driver runs
    # inside octavia-api; the controller and the agents never import it.
    'octavia': ('dsr_provider/status_relay.py',),
}


# Packages that may import what an extra of setup.cfg provides:
# {package directory: extra}.
EXTRA_OF = {'amphora_agent/l7': 'l7'}


def _requirement_lines(lines):
    reqs = {}
    for line in lines:
        line = line.split('#', 1)[0].strip()
        if line:
            name = re.match(r'[A-Za-z0-9._-]+', line).group(0)
            reqs[_canonical(name)] = line
    return reqs


def _requirements():
    """{canonical distribution name: requirement line} of requirements.txt."""
    return _requirement_lines(
        (ROOT / 'requirements.txt').read_text().splitlines())


def _extras():
    """{extra: {canonical distribution name: line}} of setup.cfg."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / 'setup.cfg')
    if not parser.has_section('options.extras_require'):
        return {}
    return {extra: _requirement_lines(value.splitlines())
            for extra, value in parser['options.extras_require'].items()}


def _allowed_for(path, reqs, extras):
    rel = str(path.relative_to(ROOT)) if path.is_absolute() else str(path)
    allowed = set(reqs)
    for package, extra in EXTRA_OF.items():
        if rel.startswith(package + '/'):
            allowed |= set(extras.get(extra, {}))
    return allowed


def _canonical(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def _third_party_imports():
    """{top-level module: [files importing it]} outside the stdlib."""
    found = {}
    for package in PRODUCT:
        for path, name in _imports(package):
            if name and name not in sys.stdlib_module_names \
                    and name not in PRODUCT:
                found.setdefault(name, []).append(path)
    return found


def test_every_third_party_import_is_a_requirement():
    reqs, extras = _requirements(), _extras()
    dists = importlib.metadata.packages_distributions()
    missing = []
    for module, paths in sorted(_third_party_imports().items()):
        names = {_canonical(d) for d in dists.get(module, [])}
        for path in paths:
            if str(path).startswith(NOT_REQUIRED.get(module, ('\0',))):
                continue
            if not names:
                missing.append(f'{module} ({path}): no installed '
                               'distribution')
            elif not names & _allowed_for(path, reqs, extras):
                missing.append(f'{module} ({path}): {sorted(names)} not in '
                               'requirements.txt (nor an extra of its '
                               'package)')
    assert missing == []


def test_extras_are_only_for_their_packages():
    # octavia is the l7 extra's: the tier-1 agent and the provider must not
    # import it, or a plain install would break at run time.
    reqs, extras = _requirements(), _extras()
    assert set(extras) == set(EXTRA_OF.values())
    assert 'octavia' in extras['l7'] and 'octavia' not in reqs


def test_the_import_scan_sees_the_product():
    # Guards the test above against scanning nothing.
    assert {'oslo_messaging', 'tooz', 'pyroute2', 'sqlalchemy',
            'octavia_lib'} <= set(_third_party_imports())


def test_requirements_have_lower_bounds():
    unbounded = [line for line in _requirements().values()
                 if '>=' not in line]
    assert unbounded == []


def _setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / 'setup.cfg')
    return cfg


def _entry_points():
    section = _setup_cfg()['options.entry_points']
    for group, block in section.items():
        for line in block.strip().splitlines():
            name, target = (part.strip() for part in line.split('=', 1))
            yield group, name, target


def test_the_daemons_and_commands_are_console_scripts():
    scripts = {name for group, name, _ in _entry_points()
               if group == 'console_scripts'}
    assert {'dsrctl', 'dsr-agent', 'dsr-controller',
            'dsr-manage'} <= scripts


@pytest.mark.parametrize(
    'group,name,target',
    [ep for ep in _entry_points() if ep[0] != 'tempest.test_plugins'])
def test_entry_point_resolves(group, name, target):
    module, _, attr = target.partition(':')
    obj = importlib.import_module(module)
    for part in attr.split('.'):
        obj = getattr(obj, part)
    assert callable(obj), f'{group} {name} = {target}'


def test_tempest_plugin_entry_point_names_a_module():
    # Importing it needs tempest (see NOT_REQUIRED): check the file.
    targets = [t for g, _, t in _entry_points()
               if g == 'tempest.test_plugins']
    assert targets
    for target in targets:
        module = target.partition(':')[0]
        assert (ROOT / (module.replace('.', '/') + '.py')).is_file()


def test_package_data_names_what_make_build_produces():
    data = _setup_cfg()['options.package_data']['amphora_agent.dataplane']
    patterns = set(data.split())
    assert patterns == {'obj/*.o', 'obj/libmaglev.so'}
    makefile = (ROOT / 'Makefile').read_text()
    maglev_mk = (ROOT / 'mk' / 'maglev.mk').read_text()
    assert 'OBJ_DIR  := amphora_agent/dataplane/obj' in makefile
    assert ('MAGLEV_LIB := amphora_agent/dataplane/obj/libmaglev.so'
            in maglev_mk)


def test_python_requires_matches_the_interpreter_floor():
    # The code uses typing.Self (3.11); the metadata must not promise less.
    requires = _setup_cfg()['options']['python_requires'].strip()
    assert requires == '>=3.11'
