"""Which tempest tests run, and how they are spread over the workers.

Two sets (docs/tempest.md says why each exclusion and selection is there):

* ``full``: octavia-tempest-plugin's API tests that apply to provider dsr,
  and the project's own DSR scenario;
* ``ci``: what the CI stage can afford (every test class costs ~100 s of
  set-up: dynamic credentials, networks, a load balancer): the full set
  without the tests bound to skip (protocols tier 1 refuses, listener tests
  that set member-side timeouts, classes that skip whole) and without
  twins that repeat the same calls with another option: the SOURCE_IP
  (``_SI_``) twins of the pool, member and health-monitor tests (one
  SOURCE_IP pool test stays, a pool on a listener, so the algorithm is
  still sent and served once), the listener
  tests' ``_no_allowed_cidrs`` twins, and health monitors other than TCP
  and UDP-CONNECT (PING and TLS-HELLO run in the full set and in the
  agent's own health-checker tests).

Balancing: tempest keeps a test class on one worker (its setUpClass builds
the load balancer its tests share), and without timing history stestr
deals classes round-robin: the first complete run put the two longest
classes on one worker (2289 s where the work was ~1500 s per worker).
So the gate lists the selected tests, estimates each class (or part of a
class) from measured times, deals them longest first to the least loaded
worker, and hands tempest a worker file naming every test.
"""

import re
import subprocess

INCLUDE = (r'^(octavia_tempest_plugin\.tests\.api\.v2\.|'
           r'dsr_provider\.tempest\.tests\.)')
EXCLUDE = [
    # Amphora admin API: the amphora provider's own objects.
    r'\.test_amphora\.',
    # Algorithms other than SOURCE_IP / SOURCE_IP_PORT: pools with them are
    # refused (Maglev hashing only), and the plugin expects these tests
    # to pass on a provider, so it fails them instead of skipping.
    r'_(LC|RR)_',
    r'_least_connections_|_round_robin_',
]
CI_EXCLUDE = [
    # SOURCE_IP twins, but one SOURCE_IP pool (on a listener).
    r'\.(test_pool|test_member|test_healthmonitor)\.\w+\.'
    r'(?!test_TCP_SI_pool_with_listener_create\b)\w*_SI_',
    # Tests of protocols tier 1 refuses (they skip with the refusal).
    r'\.test_(ipv[46]_)?(HTTP|HTTPS|PROXY|PROXYV2|TERMINATED_HTTPS|http|'
    r'https|prometheus|terminated_https)_',
    r'\.test_healthmonitor\.\w+\.test_\w+_(HTTP|HTTPS|PING|TLS)_',
    r'_no_allowed_cidrs',
    # They set member-side listener timeouts (refused).
    r'\.test_listener\.\w+\.test_(tcp|udp|sctp)_listener_'
    r'(create|show|update)(\[|$)',
    # Classes that skip whole: L7 (tier 2), availability zones and flavor
    # profiles with amphora metadata.
    r'\.(test_l7policy|test_l7rule|test_availability_zone|'
    r'test_availability_zone_profile|test_flavor_profile)\.',
]
# Tier 2 (gate --tier 2: octavia-api's default_tier 2, two L7 SEs): what
# the L7 SEs add, sized for ~10 minutes on the 2-core host under the load
# of other work (each class 150-450 s there; a _list test, which builds
# three objects, up to 160 s).  HTTP listeners and an HTTPS one (the
# _no_allowed_cidrs twins send the same calls), ROUND_ROBIN and
# LEAST_CONNECTIONS pools with HTTP_COOKIE and APP_COOKIE persistence,
# HTTP(S) monitors, members of an HTTP pool on another port than the
# listener's (the update tests create them), every L7 policy and rule test.
_T2 = r'octavia_tempest_plugin\.tests\.api\.v2\.'
TIER2_INCLUDE = '^' + _T2 + '(' + '|'.join([
    r'test_listener\.ListenerAPITest\.test_http_listener_'
    r'(create|show|update|delete|show_stats)(\[|$)',
    r'test_listener\.ListenerAPITest\.test_https_listener_create(\[|$)',
    r'test_pool\.PoolAPITest\.test_HTTP_RR_pool_'
    r'(with_listener_create|show|update|delete)(\[|$)',
    r'test_pool\.PoolAPITest\.test_HTTP_LC_pool_'
    r'(with_listener_create|update)(\[|$)',
    r'test_pool\.PoolAPITest\.test_HTTP_RR_(app|http)_cookie_pool_'
    r'with_listener_create(\[|$)',
    r'test_healthmonitor\.HealthMonitorAPITest\.test_RR_HTTP_'
    r'healthmonitor_(create|show|update|delete)(\[|$)',
    r'test_healthmonitor\.HealthMonitorAPITest\.test_LC_HTTPS_'
    r'healthmonitor_create(\[|$)',
    r'test_member\.MemberAPITest2\.test_HTTP_RR_member_'
    r'(update|batch_update|delete)(\[|$)',
    r'test_l7policy\.',
    r'test_l7rule\.',
]) + ')'
# By-design refusals of tier 2, each with its reason (docs/tempest.md).
TIER2_EXCLUDE = [
    # The amphora admin API: the amphora provider's own objects.
    r'\.test_amphora\.',
]
SETS = ('full', 'ci', 'tier2')
# The tier a set's tests need (tools/tempest/gate.py --tier).
SET_TIERS = {'full': 1, 'ci': 1, 'tier2': 2}

# Measured seconds of each class in a complete full run (tests, setUpClass
# and tearDownClass; load average 10-16 on the 2-core host, concurrency 3)
# and its number of tests then: a part of a class is estimated pro rata.
CLASS_SECONDS = {
    'HealthMonitorAPITest': (1295, 60),
    'MemberAPITest1': (792, 50),
    'MemberAPITest2': (776, 70),
    'PoolAPITest': (729, 56),
    'ListenerAPITest': (700, 81),
    'LoadBalancerAPITest': (273, 10),
    'L7RuleAPITest': (104, 1),
    'ProviderAPITest': (68, 1),
}
# The same at tier 2: a complete run of 50 tests (the tier2 set and the
# twins it leaves out; load average 21-32, 4 workers).  An HTTP class costs
# more per test (each change is applied by the L4 SE and by HAProxy on
# both L7 SEs).
TIER2_CLASS_SECONDS = dict(
    PoolAPITest=(697, 12), ListenerAPITest=(658, 12),
    HealthMonitorAPITest=(604, 7), L7PolicyAPITest=(542, 7),
    MemberAPITest1=(229, 3), L7RuleAPITest=(210, 5),
    MemberAPITest2=(159, 4))
SET_CLASS_SECONDS = {'full': CLASS_SECONDS, 'ci': CLASS_SECONDS,
                     'tier2': TIER2_CLASS_SECONDS}
DEFAULT_CLASS_SECONDS = 40
# Classes long enough to split over workers, by hash algorithm (each part
# builds its own load balancer).
SPLIT = {'HealthMonitorAPITest': re.compile(r'\.test_(SIP|SI)_')}


def regexes(test_set):
    """(include, exclude) regexes of a set."""
    if test_set not in SETS:
        raise ValueError(f'unknown test set {test_set!r} (sets: {SETS})')
    if test_set == 'tier2':
        return TIER2_INCLUDE, '|'.join(TIER2_EXCLUDE)
    exclude = EXCLUDE + (CI_EXCLUDE if test_set == 'ci' else [])
    return INCLUDE, '|'.join(exclude)


def list_tests(tempest, workspace, env, include, exclude):
    """The test ids `tempest run` would run (without attributes)."""
    argv = [tempest, 'run', '--list-tests', '--regex', include]
    if exclude:
        argv += ['--exclude-regex', exclude]
    out = subprocess.run(argv, cwd=workspace, env=env, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise RuntimeError(f'tempest run --list-tests failed (rc '
                           f'{out.returncode}): {out.stdout}{out.stderr}')
    ids = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if re.match(r'^[\w.]+\.test_\w+', line):
            ids.append(line.split('[', 1)[0])
    return ids


def _group(test_id):
    parts = test_id.split('.')
    cls = parts[-2]
    split = SPLIT.get(cls)
    m = split.search(test_id) if split else None
    return (cls, m.group(1) if m else '')


def partition(ids, workers, class_seconds=None):
    """ids dealt to `workers` lists, whole groups, longest first to the
    least loaded worker.  class_seconds: {class: (seconds, tests)} measured
    (default CLASS_SECONDS; SET_CLASS_SECONDS has each set's)."""
    class_seconds = CLASS_SECONDS if class_seconds is None else \
        class_seconds
    groups = {}
    for test_id in ids:
        groups.setdefault(_group(test_id), []).append(test_id)
    cost = {}
    for (cls, part), members in groups.items():
        seconds, count = class_seconds.get(cls, (DEFAULT_CLASS_SECONDS, 0))
        cost[(cls, part)] = seconds * len(members) / count if count \
            else seconds
    loads = [[0.0, []] for _ in range(max(1, workers))]
    for key in sorted(groups, key=lambda k: (-cost[k], k)):
        loads.sort(key=lambda item: item[0])
        loads[0][0] += cost[key]
        loads[0][1].extend(groups[key])
    return [sorted(tests) for _, tests in loads if tests], \
        [round(load) for load, tests in loads if tests]


def write_worker_file(path, partitions):
    """stestr's worker file: one worker per partition, each test by an
    anchored regex (an id may carry [attributes])."""
    lines = []
    for tests in partitions:
        lines.append('- worker:')
        for test_id in tests:
            lines.append(f"  - '^{re.escape(test_id)}(\\[|$)'")
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
