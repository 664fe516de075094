"""pytest plugin: each test's wall time and CPU, to find what a suite's
CPU is spent on (docs/benchmarks.md, "CI wall time").

    CPU_PROFILE_DIR=/tmp/cpu make test PYTEST_ARGS="-p tools.pytest_cpu"

One tab-separated line per test (setup, call and teardown together) in
$CPU_PROFILE_DIR/<xdist worker>-<pid>.tsv: node id, wall seconds, CPU
seconds of the worker itself, CPU seconds of the children it reaped in
the meantime (a lab's daemons count when the lab stops them; a module
fixture's teardown counts with the module's last test; daemons that
detach to init are not seen).  Sum by file with
`python -m tools.pytest_cpu DIR`.
"""

import collections
import os
import resource
import sys
import time

import pytest

ENV_DIR = 'CPU_PROFILE_DIR'


def _cpu():
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


class _Recorder:
    def __init__(self, directory):
        os.makedirs(directory, exist_ok=True)
        name = '%s-%d.tsv' % (os.environ.get('PYTEST_XDIST_WORKER', 'main'),
                              os.getpid())
        self.out = open(os.path.join(directory, name), 'a', buffering=1)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        own0, kids0 = _cpu()
        t0 = time.monotonic()
        yield
        own1, kids1 = _cpu()
        self.out.write('%s\t%.3f\t%.3f\t%.3f\n' % (
            item.nodeid, time.monotonic() - t0, own1 - own0, kids1 - kids0))


def pytest_configure(config):
    directory = os.environ.get(ENV_DIR)
    if directory:
        config.pluginmanager.register(_Recorder(directory), 'cpu-recorder')


def by_file(directory):
    """{file: [wall, own CPU, children's CPU]} summed over every .tsv."""
    totals = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    for name in os.listdir(directory):
        if not name.endswith('.tsv'):
            continue
        with open(os.path.join(directory, name)) as f:
            for line in f:
                nodeid, *figures = line.rstrip('\n').split('\t')
                row = totals[nodeid.split('::')[0]]
                for i, value in enumerate(figures):
                    row[i] += float(value)
    return dict(totals)


def main(argv):
    rows = sorted(by_file(argv[1]).items(),
                  key=lambda kv: kv[1][1] + kv[1][2], reverse=True)
    print('%8s %8s %8s  %s' % ('wall s', 'own CPU', 'children', 'file'))
    for path, (wall, own, kids) in rows:
        print('%8.1f %8.1f %8.1f  %s' % (wall, own, kids, path))


if __name__ == '__main__':
    main(sys.argv)
