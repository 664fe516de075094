"""bench/decap_bench.py runs (its wrappers are verified against the real
decap before anything is timed: output frame, verdict, counters) and
reports every figure docs/benchmarks.md quotes.  No figure is judged
here: speed is a benchmark's business, not a test's."""

import json
import os
import subprocess
import sys

from tests.functional.amphora_agent.dataplane.decap_frames import NEEDS_BPF

pytestmark = NEEDS_BPF

BENCH = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'bench',
                     'decap_bench.py')


def test_the_decap_bench_verifies_and_reports():
    proc = subprocess.run(
        [sys.executable, BENCH], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, DSR_BENCH_ROUNDS='1', DSR_BENCH_REPEAT='1000'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    kinds = {'4in4', '6in6', 'gre4', 'gre6'}
    assert set(out['checks_ns']) == set(out['source_check_ns']) == kinds
    assert {'pass', 'plain', 'refused'} <= set(out['ns_per_packet'])
    assert out['all_targets_met'] is None
    assert not os.path.exists(out['pin_dir'])
