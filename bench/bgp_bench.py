"""BGP convergence, measured by the BGP functional tests against a real
BIRD 2 router (ECMP into its kernel) and real ExaBGP speakers.

The measuring tests print `BGP-LATENCY {json}` lines; this script runs them
and collects the figures, so the numbers and the assertions come from one
place.

    .venv/bin/python bench/bgp_bench.py        (root; ~1 minute)

Figures: announce -> route installed at the router, withdraw -> removed
(v4, v6; 15 rounds each), 100 VIPs in one call, SE loss with BFD
(100 ms x 3) and without (hold time 3 s), agent restart (adopt, no flap).
Last line: one JSON object.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = [
    'test_announce_withdraw_latency',
    'test_bfd_routes_around_a_vanished_se',
    'test_without_bfd_a_vanished_se_waits_for_the_hold_timer',
    'test_agent_restart_adopts_exabgp_hitlessly',
]


def main():
    out = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-s', '-p', 'no:warnings',
         '-p', 'no:cacheprovider',
         'tests/functional/amphora_agent/bgp/test_bgp_speaker.py',
         '-k', ' or '.join(TESTS)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    figures = {}
    for line in out.stdout.splitlines():
        # pytest's progress dots may precede the marker on the line.
        if 'BGP-LATENCY ' in line:
            item = json.loads(line.split('BGP-LATENCY ', 1)[1])
            figures[item.pop('name')] = item
    for name, item in figures.items():
        print(f'{name}: {json.dumps(item)}')
    targets = {}
    bfd = figures.get('bfd_vanished_se_to_path_removed', {})
    if bfd:
        targets['bfd_se_loss_ms<=500'] = max(bfd['v4_ms'], bfd['v6_ms']) \
            <= 500
    ann = figures.get('announce_withdraw', {}).get('v4', {})
    if ann:
        targets['announce_median_ms<=100'] = \
            ann['announce_to_installed']['median_ms'] <= 100
    ok = out.returncode == 0
    if not ok:
        print(out.stdout[-3000:], out.stderr[-2000:])
    print(json.dumps({'bench': 'bgp', 'tests_passed': ok,
                      'figures': figures, 'targets': targets,
                      'all_targets_met': ok and all(targets.values())}))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
