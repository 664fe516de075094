"""tools/tempest/plugin_dist.py: the plugin's entry point, found by
importlib.metadata (what stevedore / tempest use) from a directory on the
path, without the project installed."""

import subprocess
import sys

from tools.tempest import plugin_dist


def test_entry_points_come_from_setup_cfg(tmp_path):
    cfg = tmp_path / 'setup.cfg'
    cfg.write_text('[options.entry_points]\ntempest.test_plugins =\n'
                   '    x = pkg.mod:Plugin\n')
    assert plugin_dist.entry_points(cfg) == ['x = pkg.mod:Plugin']


def test_missing_entry_point_is_an_error(tmp_path):
    cfg = tmp_path / 'setup.cfg'
    cfg.write_text('[metadata]\nname = x\n')
    try:
        plugin_dist.entry_points(cfg)
    except ValueError as e:
        assert 'tempest.test_plugins' in str(e)
    else:
        raise AssertionError('no error for a setup.cfg without the plugin')


def test_written_dist_is_discovered_on_the_path(tmp_path):
    dest = plugin_dist.write(tmp_path / 'plugin')
    code = ('import importlib.metadata as m; '
            'print([(e.name, e.value) for e in m.entry_points('
            'group="tempest.test_plugins")])')
    out = subprocess.run([sys.executable, '-S', '-c', code], text=True,
                         capture_output=True, check=True,
                         env={'PYTHONPATH': str(dest)})
    assert ("('dsr', 'dsr_provider.tempest.plugin:DSRTempestPlugin')"
            in out.stdout)
