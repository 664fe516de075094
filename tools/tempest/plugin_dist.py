"""The project's tempest plugin, visible to a tempest that does not have the
project installed.

tempest finds plugins by the `tempest.test_plugins` entry point
(stevedore, importlib.metadata on sys.path).  write(dest) creates in dest a
minimal .dist-info carrying that entry point, read from setup.cfg so the
two cannot drift; run tempest with PYTHONPATH=<checkout>:<dest>.  In a
DevStack gate the installed package carries the entry point instead.
"""

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GROUP = 'tempest.test_plugins'
NAME = 'octavia_dsr_tempest_plugin'


def entry_points(setup_cfg=ROOT / 'setup.cfg'):
    """The `name = module:attr` lines of setup.cfg's tempest.test_plugins."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(setup_cfg)
    raw = cfg.get('options.entry_points', GROUP, fallback='')
    lines = [line.strip() for line in raw.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f'{setup_cfg}: no [options.entry_points] {GROUP}')
    return lines


def write(dest, setup_cfg=ROOT / 'setup.cfg'):
    """Write <dest>/<NAME>-0.dist-info; returns dest."""
    info = Path(dest) / f'{NAME}-0.dist-info'
    info.mkdir(parents=True, exist_ok=True)
    (info / 'METADATA').write_text(
        f'Metadata-Version: 2.1\nName: {NAME}\nVersion: 0\n')
    (info / 'entry_points.txt').write_text(
        f'[{GROUP}]\n' + '\n'.join(entry_points(setup_cfg)) + '\n')
    return Path(dest)
