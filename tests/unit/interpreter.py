"""What a fresh interpreter holds after some code ran: the start-up tests
(dsrctl's imports, the daemons' green resolver)."""

import json
import os
import subprocess
import sys


def after(code, unset=()):
    """(module names, os.environ) of a fresh interpreter once ``code``
    ran, started without the environment variables ``unset``."""
    env = {k: v for k, v in os.environ.items() if k not in unset}
    out = subprocess.run(
        [sys.executable, '-c', code + '\nimport json, os, sys\n'
         'print(json.dumps([sorted(sys.modules), dict(os.environ)]))'],
        capture_output=True, text=True, timeout=60, check=True, env=env)
    modules, environ = json.loads(out.stdout.splitlines()[-1])
    return set(modules), environ


def assert_without_green_resolver(module):
    """Importing ``module`` (a daemon's) brings eventlet in through
    oslo.messaging but not its green resolver (dnspython), whatever the
    caller's environment held."""
    modules, environ = after(f'import {module}',
                             unset=('EVENTLET_NO_GREENDNS',))
    # eventlet is still imported: what is guarded is its resolver only.
    assert 'eventlet' in modules
    assert 'eventlet.support.greendns' not in modules
    assert 'dns' not in modules
    assert environ.get('EVENTLET_NO_GREENDNS') == 'yes'
