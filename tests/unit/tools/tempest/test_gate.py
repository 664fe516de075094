"""The gate's command line: a set runs at its own tier."""

import pytest

from tools.tempest import gate


@pytest.mark.parametrize('argv', [['--tier', '1', '--set', 'tier2'],
                                  ['--tier', '2', '--set', 'ci'],
                                  ['--tier', '3']])
def test_a_set_at_the_wrong_tier_is_refused(argv, capsys):
    with pytest.raises(SystemExit) as info:
        gate.main(argv)
    assert info.value.code == 2
    assert '--tier' in capsys.readouterr().err


def test_logs_go_to_the_folder_given(tmp_path):
    """Two gates at once (.ci/run stages 3 and 4) keep their logs apart."""
    workspace = tmp_path / 'ws'
    (workspace / 'etc').mkdir(parents=True)
    (workspace / 'tempest.log').write_text('run\n')
    (workspace / 'etc' / 'tempest.conf').write_text('[auth]\n')
    (workspace / 'skip.bin').write_text('')
    logs = tmp_path / 'logs' / 'tier1'
    gate.keep_logs(None, str(workspace), str(logs))
    assert sorted(p.name for p in logs.iterdir()) == [
        'etc_tempest.conf', 'tempest.log']
    assert not (tmp_path / 'logs' / 'tier2').exists()
