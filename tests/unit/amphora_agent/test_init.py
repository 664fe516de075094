"""The SE side's processes start without eventlet's green resolver
(amphora_agent/__init__.py): oslo.messaging still brings eventlet in, but
not dnspython, about 0.2 s of every start."""

import os
import subprocess
import sys

from tests.unit import interpreter


def test_the_agent_starts_without_the_green_resolver():
    interpreter.assert_without_green_resolver('amphora_agent.service')


def test_an_operator_setting_wins():
    env = dict(os.environ, EVENTLET_NO_GREENDNS='no')
    out = subprocess.run(
        [sys.executable, '-c', 'import amphora_agent, os; '
         'print(os.environ["EVENTLET_NO_GREENDNS"])'],
        capture_output=True, text=True, timeout=60, check=True, env=env)
    assert out.stdout.strip() == 'no'
