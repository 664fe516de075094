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
