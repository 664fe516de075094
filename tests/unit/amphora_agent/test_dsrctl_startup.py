"""dsrctl's start-up stays small: --help loads nothing of the dataplane,
and the read path (dataplane module) loads neither pyroute2, oslo.config
nor OpenSSL (issue 15: a read-only call <= 0.3 s, --help <= 0.2 s; the
figures are bench/dsrctl_bench.py's)."""

import subprocess
import sys

from amphora_agent.cmd import dsrctl
from amphora_agent.dataplane import dataplane
from amphora_agent.dataplane import decap
from tests.unit import interpreter

HEAVY = ('pyroute2', 'oslo_config', '_hashlib')


def _modules_after(code):
    """Module names a fresh interpreter holds after ``code``."""
    return interpreter.after(code)[0]


def test_default_pin_dirs_match_the_dataplane():
    assert dsrctl.DEFAULT_PIN_DIR == dataplane.DEFAULT_PIN_DIR
    assert dsrctl.DEFAULT_DECAP_PIN_DIR == decap.DEFAULT_PIN_DIR


def test_help_imports_nothing_of_the_dataplane():
    loaded = _modules_after(
        'from amphora_agent.cmd import dsrctl\n'
        'try:\n    dsrctl.main(["--help"])\nexcept SystemExit:\n    pass')
    assert not {m for m in loaded
                if m.startswith('amphora_agent.dataplane')}, loaded
    assert not set(HEAVY) & loaded


def test_read_path_imports_no_heavy_module():
    loaded = _modules_after(
        'from amphora_agent.dataplane import dataplane, decap, model')
    assert not set(HEAVY) & loaded, set(HEAVY) & loaded


def test_a_missing_namespace_is_refused_without_creating_it(tmp_path):
    missing = str(tmp_path / 'no-such-netns')
    proc = subprocess.run(
        [sys.executable, '-m', 'amphora_agent.cmd.dsrctl', '--netns',
         missing, 'show'], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert repr(missing) in proc.stderr and 'Traceback' not in proc.stderr
    assert not (tmp_path / 'no-such-netns').exists()


def test_command_list_matches_the_parser():
    parser = dsrctl.build_parser()
    (sub,) = [a for a in parser._actions
              if a.__class__.__name__ == '_SubParsersAction']
    assert tuple(sub.choices) == dsrctl.COMMANDS


def test_only_the_command_run_is_built():
    assert dsrctl._command_of(['--netns', 'show', '--pin-dir', '/x',
                               'stats', '--json']) == 'stats'
    assert dsrctl._command_of(['--pin-dir=/x', 'lookup']) == 'lookup'
    for argv in (['--help'], ['--pin-d', '/x', 'show'], ['nosuch'], []):
        assert dsrctl._command_of(argv) is None, argv
    parser = dsrctl.build_parser(only='show')
    args = parser.parse_args(['--pin-dir', '/x', 'show', '--json'])
    assert args.func is dsrctl.cmd_show and args.json
