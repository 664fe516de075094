"""The SE side's processes start without eventlet's green resolver
(amphora_agent/__init__.py): oslo.messaging still brings eventlet in, but
not dnspython, about 0.2 s of every start."""

import json
import os
import subprocess
import sys


def modules_after(code):
    """Module names a fresh interpreter holds after ``code``, started
    without EVENTLET_NO_GREENDNS in its environment."""
    env = {k: v for k, v in os.environ.items()
           if k != 'EVENTLET_NO_GREENDNS'}
    out = subprocess.run(
        [sys.executable, '-c', code + '\nimport json, os, sys\n'
         'print(json.dumps([sorted(sys.modules), '
         'os.environ.get("EVENTLET_NO_GREENDNS")]))'],
        capture_output=True, text=True, timeout=60, check=True, env=env)
    loaded, variable = json.loads(out.stdout.splitlines()[-1])
    return set(loaded), variable


def test_the_agent_starts_without_the_green_resolver():
    loaded, variable = modules_after('import amphora_agent.service')
    # eventlet is still imported (through oslo.messaging): what this test
    # guards is its resolver only.
    assert 'eventlet' in loaded
    assert 'eventlet.support.greendns' not in loaded
    assert 'dns' not in loaded
    assert variable == 'yes'


def test_an_operator_setting_wins():
    env = dict(os.environ, EVENTLET_NO_GREENDNS='no')
    out = subprocess.run(
        [sys.executable, '-c', 'import amphora_agent, os; '
         'print(os.environ["EVENTLET_NO_GREENDNS"])'],
        capture_output=True, text=True, timeout=60, check=True, env=env)
    assert out.stdout.strip() == 'no'
