"""dsrctl and dsr-member end quietly on a closed pipe when run as programs
(SIGPIPE back to SIG_DFL), and leave a caller's SIGPIPE handling alone when
called with an argv: a pytest worker given SIG_DFL was killed by a later
test's write to a dead child's pipe (rehearsal 46)."""

import signal
import subprocess
import sys

import pytest

from amphora_agent.cmd import dsrctl
from amphora_agent.member import cli as member_cli

PROGRAMS = {'dsrctl': ('amphora_agent.cmd', 'dsrctl'),
            'dsr-member': ('amphora_agent.member', 'cli')}


def _sigpipe_after_main(package, module, words):
    code = (f'import signal, sys\n'
            f'from {package} import {module} as m\n'
            f'sys.argv = {[module] + words!r}\n'
            f'try:\n    m.main()\nexcept SystemExit:\n    pass\n'
            f'print(signal.getsignal(signal.SIGPIPE) is signal.SIG_DFL)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout.splitlines()[-1]


@pytest.mark.parametrize('program', sorted(PROGRAMS))
def test_as_a_program_a_closed_pipe_ends_it_quietly(program):
    package, module = PROGRAMS[program]
    assert _sigpipe_after_main(package, module, ['--help']) == 'True'


@pytest.mark.parametrize('main', [dsrctl.main, member_cli.main],
                         ids=['dsrctl', 'dsr-member'])
def test_called_with_argv_it_keeps_the_callers_sigpipe(main):
    before = signal.getsignal(signal.SIGPIPE)
    with pytest.raises(SystemExit):
        main(['--help'])
    assert signal.getsignal(signal.SIGPIPE) is before
