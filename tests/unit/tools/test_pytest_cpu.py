"""tools/pytest_cpu.py records each test's CPU, its own and its children's,
and sums it by file."""

import os
import subprocess
import sys

from tools import pytest_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

SUITE = '''
import subprocess, sys, time

def test_spins():
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass

def test_child_spins():
    subprocess.run([sys.executable, '-c',
                    'import time\\nend = time.process_time() + 0.3\\n'
                    'while time.process_time() < end: pass'], check=True)

def test_sleeps():
    time.sleep(0.2)
'''


def test_each_test_is_charged_its_own_cpu_and_its_childrens(tmp_path):
    (tmp_path / 'test_suite.py').write_text(SUITE)
    out = tmp_path / 'cpu'
    env = dict(os.environ, CPU_PROFILE_DIR=str(out),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH',
                                                             ''))
    subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p',
                    'tools.pytest_cpu', '-p', 'no:cacheprovider',
                    str(tmp_path / 'test_suite.py')], cwd=tmp_path, env=env,
                   check=True, capture_output=True)
    rows = {}
    for name in os.listdir(out):
        for line in open(out / name):
            nodeid, wall, own, kids = line.split('\t')
            rows[nodeid.split('::')[1]] = (float(wall), float(own),
                                           float(kids))
    assert rows['test_spins'][1] >= 0.3 and rows['test_spins'][2] < 0.1
    assert rows['test_child_spins'][2] >= 0.3
    assert rows['test_sleeps'][0] >= 0.2 and rows['test_sleeps'][1] < 0.1
    (wall, own, kids), = pytest_cpu.by_file(out).values()
    assert own >= 0.3 and kids >= 0.3 and wall >= 0.8
