"""The layering the layout promises (README "Layout"):

* nothing outside tests/ imports tests/;
* the agent and the provider/controller share only the wire contract
  (dsr_wire): amphora_agent never imports dsr_provider and vice versa;
* dsr_wire imports neither side;
* the product never imports the lab kit or other tooling (tools, bench).
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _imports(package):
    """(file, imported top-level name) for every import under package/."""
    for path in sorted((ROOT / package).rglob('*.py')):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or '']
            else:
                continue
            for name in names:
                yield path.relative_to(ROOT), name.split('.')[0]


FORBIDDEN = {
    'amphora_agent': {'tests', 'tools', 'bench', 'dsr_provider'},
    'dsr_provider': {'tests', 'tools', 'bench', 'amphora_agent'},
    'dsr_wire': {'tests', 'tools', 'bench', 'amphora_agent', 'dsr_provider'},
    'tools': {'tests', 'bench'},
    'bench': {'tests'},
}


@pytest.mark.parametrize('package', sorted(FORBIDDEN))
def test_package_imports_respect_the_layering(package):
    offending = [f'{path}: imports {name}'
                 for path, name in _imports(package)
                 if name in FORBIDDEN[package]]
    assert offending == []


def test_the_check_sees_imports():
    # Guards the test above against walking nothing.
    names = {name for _, name in _imports('dsr_provider')}
    assert {'dsr_wire', 'oslo_messaging'} <= names
