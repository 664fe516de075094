#!/usr/bin/env python3
"""What a process of the labs pays to start: the CPU of its imports, with
the bytecode `make deps` installs and from source only.

For each module below, in turn for ROUNDS rounds, a new process runs
``python -c "import M"`` twice: as installed (the venv's and the
project's ``__pycache__``, which `make deps` fills), and from source only
(PYTHONDONTWRITEBYTECODE=1 and an empty PYTHONPYCACHEPREFIX: Python looks
for bytecode there only, finds none and compiles every module -- what
every process did when the venv held no bytecode, docs/benchmarks.md,
"Session 21").  One more case is an ``openstack loadbalancer list`` in a
process that imported what the labs' CLI zygote imports
(tools/lab/localstack/cli_zygote.py): the CPU of the call alone, the way
a zygote's child pays it (no endpoint answers: the call fails after
loading its commands, which is most of its work).

CPU seconds are the child's rusage (user + system), figures the medians
over the rounds, and the ratio source ÷ compiled is taken round by round.

Then Octavia's imports (its templater, what the labs' Octavia zygote
imports) as installed, with and without amphora_agent/l7/class_sources.py
(inspect's class lookups with one parse per module, which the L7 engine
and the zygote use): the ratio cached ÷ standard, round by round.

    .venv/bin/python bench/import_bench.py      (~1 min; DSR_BENCH_ROUNDS)

Last line: one JSON object.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

ROUNDS = int(os.environ.get('DSR_BENCH_ROUNDS', '3'))
MODULES = (
    'amphora_agent.service',
    'dsr_provider.controller.service',
    'octavia.common.jinja.haproxy.combined_listeners.jinja_cfg',
    'octavia.api.app',
)
CLI_CALL = '''
import os, resource, sys
import octaviaclient.osc.v2.load_balancer, openstack.connection
from openstackclient import shell
os.environ.update(OS_AUTH_TYPE='none', OS_ENDPOINT='http://127.0.0.1:9/')
before = resource.getrusage(resource.RUSAGE_SELF)
sys.stdout = sys.stderr = open(os.devnull, 'w')
try:
    shell.main(['loadbalancer', 'list'])
except SystemExit:
    pass
after = resource.getrusage(resource.RUSAGE_SELF)
print(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
      file=sys.__stdout__)
'''


# Octavia's imports whose API types WSME orders by their source.
OCTAVIA_IMPORTS = {
    "Octavia's templater": 'from octavia.common.jinja.haproxy.'
                           'combined_listeners import jinja_cfg',
    "the Octavia zygote's imports": 'import octavia.api.app; '
                                    'from octavia.db import models',
}
CACHED = ('from amphora_agent.l7 import class_sources\n'
          'with class_sources.cached():\n'
          '    {}\n')


def child_cpu(code, env, own=False):
    """CPU seconds of a `python -c code` child (own: what it printed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, '-W', 'ignore', '-c', code],
                         env=env, capture_output=True, text=True,
                         check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if own:
        return float(out.split()[-1])
    return (after.ru_utime + after.ru_stime
            - before.ru_utime - before.ru_stime)


def main():
    compiled = dict(os.environ)
    compiled.pop('PYTHONPYCACHEPREFIX', None)
    cases = [(m, f'import {m}', False) for m in MODULES]
    cases.append(('openstack loadbalancer list (after the zygote imports)',
                  CLI_CALL, True))
    results = {}
    with tempfile.TemporaryDirectory() as empty:
        source = dict(compiled, PYTHONDONTWRITEBYTECODE='1',
                      PYTHONPYCACHEPREFIX=empty)
        for name, code, own in cases:
            rows = []
            for _ in range(ROUNDS):
                c = child_cpu(code, compiled, own)
                s = child_cpu(code, source, own)
                rows.append((c, s))
            results[name] = {
                'compiled_cpu_s': round(statistics.median(
                    c for c, _ in rows), 3),
                'source_cpu_s': round(statistics.median(
                    s for _, s in rows), 3),
                'source_vs_compiled': round(statistics.median(
                    s / c for c, s in rows), 2)}
            print(f'{name:62s} compiled {results[name]["compiled_cpu_s"]:6.2f}'
                  f' s  source {results[name]["source_cpu_s"]:6.2f} s  '
                  f'x {results[name]["source_vs_compiled"]}', flush=True)
    cached = {}
    for name, code in OCTAVIA_IMPORTS.items():
        rows = []
        for _ in range(ROUNDS):
            rows.append((child_cpu(code, compiled),
                         child_cpu(CACHED.format(code), compiled)))
        cached[name] = {
            'standard_cpu_s': round(statistics.median(p for p, _ in rows), 3),
            'cached_cpu_s': round(statistics.median(c for _, c in rows), 3),
            'cached_vs_standard': round(statistics.median(
                c / p for p, c in rows), 3)}
        print(f'{name:62s} standard {cached[name]["standard_cpu_s"]:6.2f}'
              f' s  class_sources {cached[name]["cached_cpu_s"]:6.2f} s  '
              f'x {cached[name]["cached_vs_standard"]}', flush=True)
    print(json.dumps({'bench': 'import', 'rounds': ROUNDS,
                      'results': results, 'class_sources': cached}))


if __name__ == '__main__':
    main()
