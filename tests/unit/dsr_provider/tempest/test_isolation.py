"""The tempest plugin ships inside dsr_provider/ (so a DevStack gate finds
it installed) but is test code: no product module may import it or tempest,
which is not a product requirement."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
PLUGIN = ROOT / 'dsr_provider' / 'tempest'


def _imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            # "from dsr_provider import tempest"
            yield from (f'{node.module}.{a.name}' for a in node.names)


def test_product_never_imports_the_tempest_plugin():
    offenders = []
    for package in ('dsr_provider', 'amphora_agent'):
        for path in (ROOT / package).rglob('*.py'):
            if PLUGIN in path.parents:
                continue
            for name in _imports(path):
                if (name == 'tempest' or name.startswith('tempest.')
                        or name.startswith('dsr_provider.tempest')):
                    offenders.append(f'{path.relative_to(ROOT)}: {name}')
    assert offenders == []


def test_plugin_entry_point_is_declared():
    setup_cfg = (ROOT / 'setup.cfg').read_text()
    assert ('tempest.test_plugins =\n'
            '    dsr = dsr_provider.tempest.plugin:DSRTempestPlugin'
            in setup_cfg)
