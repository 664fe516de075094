#!/usr/bin/env python3
"""dsrctl start-up: wall time of whole read-only calls, as scripts see it.

A private namespace holds an SE dataplane (pinned, attached in generic mode
to a veth) with one listener and four members whose next hop resolves.
Then, in turn for ROUNDS rounds, each command runs as a new process:

    python -c pass                      (the interpreter alone, yardstick)
    dsrctl --help
    dsrctl --netns NS --pin-dir P show
    dsrctl --netns NS --pin-dir P stats
    dsrctl --netns NS --pin-dir P lookup --listener L --src IP:PORT

Wall seconds are a monotonic clock around subprocess.run (start to reap),
CPU seconds the children's rusage.  The children may write and read
compiled bytecode (in a private PYTHONPYCACHEPREFIX), as an installed
package ships it: a checkout run with PYTHONDONTWRITEBYTECODE=1 compiles
every module on every call (about +0.3 s).  Figures are medians over the
rounds; the ratio to ``python -c pass`` is taken round by round (pairing
keeps it meaningful when the machine's speed drifts) and its median
reported.

    .venv/bin/python bench/dsrctl_bench.py       (root; ~20 s)

Targets (issue 15): a read-only call <= 0.3 s wall, --help <= 0.2 s.
Last line: one JSON object.
"""

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import _common as C

ROUNDS = int(os.environ.get('DSR_BENCH_ROUNDS', 15))
TARGETS = {'help': 0.2, 'show': 0.3, 'stats': 0.3, 'lookup': 0.3}
VIP = '198.51.100.10'
LISTENER = f'{VIP}:80/tcp'
MEMBERS = [f'198.19.1.{i}' for i in range(1, 5)]


def dsrctl_argv():
    """dsrctl as the labs and tests run it (the console script adds a few
    milliseconds of its own and may be absent in a checkout)."""
    return [sys.executable, '-m', 'amphora_agent.cmd.dsrctl']


def child_env(pycache):
    env = dict(os.environ, PYTHONPYCACHEPREFIX=pycache)
    env.pop('PYTHONDONTWRITEBYTECODE', None)
    return env


def timed(argv, env=None):
    """(wall s, cpu s) of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, cwd=C.ROOT,
                          env=env)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f'{argv} failed ({proc.returncode}): '
                           f'{proc.stderr.strip()}')
    cpu = (after.ru_utime - before.ru_utime) + \
        (after.ru_stime - before.ru_stime)
    return wall, cpu


def set_up(sb, dsrctl):
    se = sb.ns('se')
    peer = sb.ns('rt')
    C.veth('dsrbse0', se, 'dsrbrt0', peer)
    C.sh('ip', '-n', se, 'addr', 'add', '198.19.0.2/24', 'dev', 'dsrbse0')
    C.sh('ip', '-n', se, 'neigh', 'add', '198.19.0.1', 'lladdr',
         '02:00:00:00:00:01', 'dev', 'dsrbse0', 'nud', 'permanent')
    C.sh('ip', '-n', se, 'route', 'add', '198.19.1.0/24', 'via',
         '198.19.0.1')
    base = dsrctl + ['--netns', se, '--pin-dir', sb.pin_dir]
    for args in (['attach', 'dsrbse0', '--mode', 'generic',
                  '--max-listeners', '8'],
                 ['tunnel-source', 'set', '--ipv4', '198.19.0.2'],
                 ['listener', 'add', LISTENER]):
        C.sh(*base, *args)
    for address in MEMBERS:
        C.sh(*base, 'member', 'add', LISTENER, address)
    return base


def main():
    C.exit_on_sigterm()
    t_start = time.monotonic()
    out = {'bench': 'dsrctl', 'rounds': ROUNDS,
           'targets': {f'{name}_le_{bound}s': False
                       for name, bound in TARGETS.items()}}
    exc = None
    sb = C.Sandbox()
    pycache = tempfile.mkdtemp(prefix='dsrctl-bench-pyc-')
    try:
        with sb:
            env = child_env(pycache)
            dsrctl = dsrctl_argv()
            base = set_up(sb, dsrctl)
            commands = {
                'python_pass': [sys.executable, '-c', 'pass'],
                'help': dsrctl + ['--help'],
                'show': base + ['show'],
                'stats': base + ['stats'],
                'lookup': base + ['lookup', '--listener', LISTENER,
                                  '--src', '203.0.113.2:40000'],
            }
            for argv in commands.values():   # warm-up: page cache, pycs
                timed(argv, env)
            runs = {name: [] for name in commands}
            for _ in range(ROUNDS):
                for name, argv in commands.items():
                    runs[name].append(timed(argv, env))
            floor = [w for w, _ in runs['python_pass']]
            for name, samples in runs.items():
                walls = [w for w, _ in samples]
                entry = {'wall_s': round(C.median(walls), 4),
                         'wall_min_s': round(min(walls), 4),
                         'wall_max_s': round(max(walls), 4),
                         'cpu_s': round(C.median([c for _, c in samples]),
                                        4)}
                if name != 'python_pass':
                    entry['x_python_pass'] = round(C.median(
                        [w / f for w, f in zip(walls, floor)]), 2)
                out[name] = entry
                C.log(f'{name:12} wall {entry["wall_s"]:.3f} s '
                      f'(min {entry["wall_min_s"]:.3f}, max '
                      f'{entry["wall_max_s"]:.3f}), cpu {entry["cpu_s"]:.3f}'
                      f' s' + (f', {entry["x_python_pass"]} x python -c '
                               'pass' if 'x_python_pass' in entry else ''))
            for name, bound in TARGETS.items():
                out['targets'][f'{name}_le_{bound}s'] = \
                    out[name]['wall_s'] <= bound
            out['load_avg_1m'] = round(os.getloadavg()[0], 2)
    except BaseException as e:  # noqa: BLE001 -- reported in the JSON line
        exc = e
    finally:
        shutil.rmtree(pycache, ignore_errors=True)
    return C.finish(out, t_start, exc)


if __name__ == '__main__':
    if shutil.which('ip') is None:
        sys.exit('dsrctl_bench: needs iproute2')
    sys.exit(main())
