"""Stop with drain or restart without (amphora_agent/stopmode.py): the
ExecStop= hook reads the unit's job from systemctl (here a stand-in
systemctl on PATH) and leaves the marker only for a restart."""

import os
import subprocess
import sys

import pytest

from amphora_agent import stopmode

UNIT = 'dsr-agent.service'


@pytest.fixture
def systemctl(tmp_path, monkeypatch):
    """A systemctl printing ``answer`` for list-jobs (exit status
    ``status``)."""
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    script = bindir / 'systemctl'
    monkeypatch.setenv('PATH', f'{bindir}:{os.environ["PATH"]}')

    def install(answer, status=0):
        script.write_text(f'#!/bin/sh\ncat <<"EOF"\n{answer}EOF\n'
                          f'exit {status}\n')
        script.chmod(0o755)
    return install


def test_list_jobs_output_is_read_for_the_unit_only():
    text = ('  91 other.service stop running\n'
            '  92 dsr-agent.service restart running\n')
    assert stopmode.parse_list_jobs(text, UNIT) == 'restart'
    assert stopmode.parse_list_jobs(text, 'x.service') is None
    assert stopmode.parse_list_jobs('', UNIT) is None


def test_a_restart_leaves_the_marker_once(systemctl, tmp_path):
    systemctl(f'7 {UNIT} restart running\n')
    state = tmp_path / 'run'
    assert stopmode.stop_hook(str(state), UNIT) == 'restart'
    assert stopmode.restart_pending(str(state))
    assert not stopmode.restart_pending(str(state)), 'taken twice'


@pytest.mark.parametrize('answer,status', [
    (f'8 {UNIT} stop running\n', 0),       # systemctl stop, shutdown
    ('', 0),                                # no job: agent died, cleanup
    (f'9 {UNIT} restart running\n', 1),    # systemd not answering
])
def test_anything_but_a_restart_drains(systemctl, tmp_path, answer, status):
    systemctl(answer, status)
    stopmode.stop_hook(str(tmp_path), UNIT)
    assert not stopmode.restart_pending(str(tmp_path))


def test_no_systemctl_at_all_drains(tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', str(tmp_path))
    assert stopmode.job_type(UNIT) is None
    stopmode.stop_hook(str(tmp_path), UNIT)
    assert not stopmode.restart_pending(str(tmp_path))


def test_a_stale_marker_is_cleared_at_start(systemctl, tmp_path):
    systemctl(f'7 {UNIT} restart running\n')
    stopmode.stop_hook(str(tmp_path), UNIT)
    stopmode.clear(str(tmp_path))
    assert not stopmode.restart_pending(str(tmp_path))


def test_the_hook_is_the_agent_command(systemctl, tmp_path):
    """dsr-agent --stop-hook UNIT, as the unit's ExecStop= runs it."""
    systemctl(f'7 {UNIT} restart running\n')
    conf = tmp_path / 'agent.conf'
    conf.write_text(f'[agent]\nse_id = se1\nstate_dir = {tmp_path}/run\n')
    out = subprocess.run(
        [sys.executable, '-m', 'amphora_agent.service', '--config-file',
         str(conf), '--stop-hook', UNIT], capture_output=True, text=True,
        timeout=120, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert stopmode.restart_pending(str(tmp_path / 'run'))
