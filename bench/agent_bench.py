"""Agent reconcile at scale: a snapshot of 1,000 listeners x 16 members
applied from scratch to a fresh dataplane, then one member changed.

Runs the agent's own path (snapshot.parse -> desired.plan ->
Dataplane.apply) in a private network namespace where the members' next
hop resolves, and reports seconds and the process's RSS.

    .venv/bin/python bench/agent_bench.py     (root; ~1 minute)

Targets: from scratch <= 30 s and RSS <= 200 MB; one change <= 100 ms.
Last line: one JSON object.
"""

import ipaddress
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _common import sh  # noqa: E402

LISTENERS = int(os.environ.get('DSR_BENCH_LISTENERS', 1000))
MEMBERS = int(os.environ.get('DSR_BENCH_MEMBERS', 16))


def rss_mb():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return 0.0


def snapshot_document(generation, members_of):
    lbs = []
    for i in range(LISTENERS):
        vip = str(ipaddress.ip_address('198.18.128.0') + i)
        lbs.append({
            'id': f'lb{i}', 'vips': [{'address': vip}],
            'listeners': [{
                'id': f'l{i}', 'protocol': 'TCP', 'port': 80,
                'pool': {'id': f'p{i}', 'algorithm': 'SOURCE_IP_PORT',
                         'members': members_of(i)}}]})
    return {'schema_version': 1, 'se_group': 'bench',
            'generation': generation, 'load_balancers': lbs}


def main():
    tag = secrets.token_hex(3)
    ns = f'dsrab{tag}'
    pin_dir = f'/sys/fs/bpf/octavia-dsr-bench-{tag}'
    sh('ip', 'netns', 'add', ns)
    try:
        # A veth with a permanent neighbour: every member resolves to it.
        sh('ip', 'link', 'add', f'ab{tag}', 'type', 'veth', 'peer', 'name',
           f'ac{tag}')
        sh('ip', 'link', 'set', f'ab{tag}', 'netns', ns)
        from pyroute2 import netns as pr_netns
        pr_netns.setns(ns, flags=0)
        sh('ip', 'link', 'set', 'lo', 'up')
        sh('ip', 'link', 'set', f'ab{tag}', 'up')
        sh('ip', 'addr', 'add', '198.19.0.2/16', 'dev', f'ab{tag}')
        sh('ip', 'neigh', 'add', '198.19.0.1', 'lladdr', '02:00:00:00:00:01',
           'dev', f'ab{tag}', 'nud', 'permanent')
        sh('ip', 'route', 'add', '198.19.128.0/17', 'via', '198.19.0.1')

        from amphora_agent.dataplane import dataplane as dp_mod
        from amphora_agent import desired
        from amphora_agent import snapshot

        def members_of(i, changed=False, changed2=False):
            ms = []
            for j in range(MEMBERS):
                addr = ipaddress.ip_address('198.19.128.0') + (
                    (i * MEMBERS + j) % 30000)
                weight = 2 if changed and i == 0 and j == 0 else 1
                weight = 3 if changed2 and i == 1 and j == 1 else weight
                ms.append({'id': f'm{i}-{j}', 'address': str(addr),
                           'protocol_port': 80, 'weight': weight})
            return ms

        rss_before = rss_mb()
        limits = dp_mod.Limits(max_listeners=LISTENERS,
                               max_reals=LISTENERS * MEMBERS + 1)
        t0 = time.perf_counter()
        dp = dp_mod.Dataplane.open(pin_dir, limits=limits)
        t_load = time.perf_counter() - t0
        src = ipaddress.ip_address('198.19.0.2')

        parser = snapshot.Parser()  # what the agent uses
        planner = desired.Planner()

        def apply(document):
            snap = parser.parse(document)
            plan = planner.plan(snap, lambda _: True, src, None)
            return dp.apply(plan.state)

        doc = snapshot_document(1, members_of)
        t0 = time.perf_counter()
        changes = apply(doc)
        t_scratch = time.perf_counter() - t0
        assert changes['listeners_added'] == LISTENERS, changes
        assert changes['members_added'] == LISTENERS * MEMBERS, changes

        doc2 = snapshot_document(2, lambda i: members_of(i, changed=True))
        t0 = time.perf_counter()
        changes2 = apply(doc2)
        t_change = time.perf_counter() - t0
        assert changes2['rings_written'] == 1, changes2

        # A second change, once the agent's caches are warm.
        doc3 = snapshot_document(3, lambda i: members_of(i, True, True))
        t0 = time.perf_counter()
        if os.environ.get('DSR_BENCH_PROFILE') == 'change':
            import cProfile
            import pstats
            profiler = cProfile.Profile()
            changes4 = profiler.runcall(apply, doc3)
            pstats.Stats(profiler).sort_stats('cumtime').print_stats(25)
        else:
            changes4 = apply(doc3)
        t_change2 = time.perf_counter() - t0
        assert changes4['rings_written'] == 1, changes4
        doc2 = doc3

        # Same snapshot again: nothing to do.
        t0 = time.perf_counter()
        if os.environ.get('DSR_BENCH_PROFILE'):
            import cProfile
            import pstats
            profiler = cProfile.Profile()
            changes3 = profiler.runcall(apply, doc2)
            pstats.Stats(profiler).sort_stats('tottime').print_stats(20)
        else:
            changes3 = apply(doc2)
        t_noop = time.perf_counter() - t0
        assert not any(changes3.values()), changes3
        rss = rss_mb()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        dp.destroy()
    finally:
        subprocess.run(['ip', 'netns', 'del', ns], capture_output=True)
        shutil.rmtree(pin_dir, ignore_errors=True)

    size = f' ({LISTENERS} x {MEMBERS})'  # the targets are set at 1,000
    targets = {
        f'from_scratch_s<=30{size}': t_scratch <= 30,
        f'rss_mb<=200{size}': peak <= 200,
        f'one_change_steady_ms<=100{size}': t_change2 * 1000 <= 100,
    }
    print(f'{LISTENERS} listeners x {MEMBERS} members: load program '
          f'{t_load:.2f} s, apply from scratch {t_scratch:.2f} s, one '
          f'member changed {t_change * 1000:.1f} ms (first, caches cold) / '
          f'{t_change2 * 1000:.1f} ms (steady state), unchanged snapshot '
          f'{t_noop * 1000:.1f} ms')
    print(f'RSS {rss:.0f} MB now, peak {peak:.0f} MB (before the dataplane '
          f'{rss_before:.0f} MB)')
    for name, met in targets.items():
        print(f'target {name}: {"met" if met else "MISSED"}')
    print(json.dumps({
        'bench': 'agent', 'listeners': LISTENERS, 'members': MEMBERS,
        'load_program_s': round(t_load, 3),
        'apply_from_scratch_s': round(t_scratch, 3),
        'one_member_change_first_ms': round(t_change * 1000, 1),
        'one_member_change_ms': round(t_change2 * 1000, 1),
        'unchanged_snapshot_ms': round(t_noop * 1000, 1),
        'rss_mb': round(rss, 1), 'peak_rss_mb': round(peak, 1),
        'targets': targets, 'all_targets_met': all(targets.values())}))


if __name__ == '__main__':
    main()
