"""Helpers shared by the end-to-end tests: a product lab that several tests
of one module share, the Octavia API read back (fast polling; the CLI's
`--wait` polls every 3 s), traffic and statistics.

Users' actions go through the real `openstack` CLI (lab.openstack); only
waiting for statuses reads the API directly.
"""

import ast
import contextlib
import json
import os
import re
import urllib.request

import pytest

from tools.lab import l7_ses
from tools.lab.localstack import octavia as octavia_stack
from tools.lab import netns
from tools.lab import oslo_logs
from tools.lab import product_lab as pl

# Octavia API collections read by objects() (members: per pool).
KINDS = ('loadbalancers', 'listeners', 'pools', 'healthmonitors',
         'l7policies')


# ------------------------------------------------------------------ labs

@contextlib.contextmanager
def product(n_se=2, n_members=2, octavia_config=None, **lab_args):
    """A started ProductLab (and its topology) for a `with` block.

    octavia_config: {section: {option: value}} added to octavia.conf;
    lab_args: ProductLab's keyword arguments.
    """
    topo = netns.Topology(n_se=n_se, n_members=n_members)
    topo.__enter__()
    lab = None
    try:
        lab = pl.ProductLab(topo, **lab_args)
        with _octavia_config(octavia_config):
            lab.start()
        yield lab
    finally:
        try:
            if lab is not None:
                lab.close()
        finally:
            topo.close()


@contextlib.contextmanager
def tier2_product(l7, servers, port, n_se=2):
    """A started product lab whose members `l7` run L7 SE agents
    (lab.l7, tools/lab/l7_ses.py) and whose members `servers` run plain
    HTTP servers on `port`."""
    with product(n_se=n_se, n_members=len(l7) + len(servers),
                 plain_members=tuple(l7) + tuple(servers)) as lab:
        ses = l7_ses.L7SEs(lab, l7)
        try:
            ses.start()
            for name in servers:
                l7_ses.start_plain_server(lab.topo, name, port)
            lab.l7 = ses
            yield lab
        finally:
            ses.close()


@contextlib.contextmanager
def _octavia_config(extra):
    """ProductLab builds octavia.conf itself: add sections while it does."""
    if not extra:
        yield
        return
    original = octavia_stack.OctaviaStack.config

    def config(stack):
        cfg = original(stack)
        for section, options in extra.items():
            cfg.setdefault(section, {}).update(
                {k: str(v) for k, v in options.items()})
        return cfg
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(octavia_stack.OctaviaStack, 'config', config)
        yield


# ------------------------------------------------------ the Octavia API

def api(lab, path):
    """GET /v2/lbaas/<path> from octavia-api; the decoded JSON."""
    req = urllib.request.Request(f'{lab.stack.api_url}/v2/lbaas/{path}',
                                 headers={'Accept': 'application/json'})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def objects(lab):
    """Every Octavia object: [(kind, name or id, provisioning, operating)]
    with members as kind 'members'."""
    found = []
    for kind in KINDS:
        for obj in api(lab, kind)[kind]:
            found.append((kind, obj.get('name') or obj['id'],
                          obj['provisioning_status'],
                          obj.get('operating_status')))
            if kind == 'pools':
                for m in api(lab, f'pools/{obj["id"]}/members')['members']:
                    found.append(('members', m.get('name') or m['id'],
                                  m['provisioning_status'],
                                  m['operating_status']))
    return found


def not_active(lab):
    return [o for o in objects(lab) if o[2] != 'ACTIVE']


def wait_all_active(lab, timeout=30, what='every object ACTIVE'):
    """Wait until every object is ACTIVE (nothing PENDING_*, no ERROR)."""
    last = []

    def ok():
        last[:] = not_active(lab)
        return not last
    try:
        netns.wait_for(ok, timeout, what, interval=0.1)
    except TimeoutError as exc:
        raise AssertionError(f'{exc}; not ACTIVE: {last}') from None


def wait_all_online(lab, timeout=60):
    """Wait until every object is ACTIVE and ONLINE (members ONLINE by the
    health checks)."""
    last = []

    def ok():
        last[:] = [o for o in objects(lab) if o[2:] != ('ACTIVE', 'ONLINE')]
        return not last
    try:
        netns.wait_for(ok, timeout, 'every object ACTIVE/ONLINE',
                       interval=0.2)
    except TimeoutError as exc:
        raise AssertionError(f'{exc}; not ACTIVE/ONLINE: {last}') from None


def act(lab, *args, timeout=30):
    """Run an `openstack loadbalancer ...` change and wait (reading the API
    every 0.1 s, where `--wait` sleeps 3 s) until everything is ACTIVE."""
    lab.openstack('loadbalancer', *args)
    wait_all_active(lab, timeout, f'ACTIVE after `{" ".join(args[:2])}`')


def tier2_flavor(lab, name='tier2', **flavor_data):
    """A tier-2 flavor (profile and flavor, both `name`) through the CLI:
    flavor data {"tier": 2, **flavor_data}."""
    lab.openstack('loadbalancer', 'flavorprofile', 'create', '--name', name,
                  '--provider', 'dsr', '--flavor-data',
                  json.dumps({'tier': 2, **flavor_data}))
    lab.openstack('loadbalancer', 'flavor', 'create', '--name', name,
                  '--flavorprofile', name, '--enable')


def member_args(name, address, pool, port=80, subnet=pl.MEMBER_SUBNET):
    """`openstack loadbalancer` arguments that create one member."""
    return ('member', 'create', '--name', name, '--address', address,
            '--protocol-port', str(port), '--subnet-id', subnet, pool)


def http_pool(lab, pool, parent, port, members):
    """A tier-2 ROUND_ROBIN HTTP pool under ``parent`` (('--listener', name)
    or ('--loadbalancer', name)), an HTTP monitor of GET / every second
    (hm-<pool>) and members ({name: address} serving on ``port``)."""
    act(lab, 'pool', 'create', '--name', pool, *parent, '--protocol', 'HTTP',
        '--lb-algorithm', 'ROUND_ROBIN')
    act(lab, 'healthmonitor', 'create', '--name', f'hm-{pool}', '--type',
        'HTTP', '--delay', '1', '--timeout', '1', '--max-retries', '1',
        '--url-path', '/', pool)
    for name, address in members.items():
        act(lab, *member_args(name, address, pool, port))


def create_lb(lab, lb, listener, pool, vip, *lb_args,
              vip_subnet=pl.VIP_SUBNET, protocol='TCP', port=80,
              monitor=None, members=None, member_subnet=pl.MEMBER_SUBNET):
    """A load balancer, one listener, a SOURCE_IP_PORT pool, optionally a
    health monitor (monitor = (name, *its CLI options)) and members
    ({name: address}), each change waited for until ACTIVE."""
    act(lab, 'create', '--name', lb, '--provider', 'dsr', '--vip-subnet-id',
        vip_subnet, '--vip-address', vip, *lb_args)
    act(lab, 'listener', 'create', '--name', listener, '--protocol',
        protocol, '--protocol-port', str(port), lb)
    act(lab, 'pool', 'create', '--name', pool, '--listener', listener,
        '--protocol', protocol, '--lb-algorithm', 'SOURCE_IP_PORT')
    if monitor:
        name, *options = monitor
        act(lab, 'healthmonitor', 'create', '--name', name, *options, pool)
    for name, address in (members or {}).items():
        act(lab, *member_args(name, address, pool, port, member_subnet))


def agents_converged(lab):
    """True when every SE of the lab reported applying the SE group's
    latest generation (read from the controller's database)."""
    out = pl.mysql(
        f'SELECT g.generation, a.se_id, a.applied_generation '
        f'FROM {lab.controller_db}.se_groups g JOIN {lab.controller_db}.'
        f'agent_states a ON a.se_group = g.name '
        f"WHERE g.name = '{lab.agents.se_group}'")
    assert out.returncode == 0, out.stderr
    rows = [line.split('\t') for line in out.stdout.splitlines()[1:]]
    applied = {se_id: int(gen) for want, se_id, gen in rows
               if gen != 'NULL' and int(gen) >= int(want)}
    return set(applied) >= {f'{se}-{lab.tag}' for se in se_names(lab)}


def wait_agents_converged(lab, timeout=20):
    netns.wait_for(lambda: agents_converged(lab), timeout,
                   'every SE applying the latest generation', interval=0.1)


def find(lab, kind, name):
    """The API object of a kind ('loadbalancers', ...) named `name`."""
    matches = [o for o in api(lab, kind)[kind] if o.get('name') == name]
    assert len(matches) == 1, f'{kind} named {name}: {matches}'
    return matches[0]


def members(lab, pool):
    """{member name: (provisioning, operating)} of a pool, from the API."""
    pool_id = find(lab, 'pools', pool)['id']
    return {m['name']: (m['provisioning_status'], m['operating_status'])
            for m in api(lab, f'pools/{pool_id}/members')['members']}


def cli_members(lab, pool):
    """{member name: operating_status} from `openstack loadbalancer member
    list`."""
    return {m['name']: m['operating_status'] for m in lab.openstack_json(
        'loadbalancer', 'member', 'list', pool)}


def wait_members(lab, pool, expected, timeout=30):
    """Wait until the pool's members are exactly {name: operating_status}
    (all ACTIVE), then check what the CLI shows."""
    last = {}

    def ok():
        last.clear()
        last.update(members(lab, pool))
        return last == {n: ('ACTIVE', st) for n, st in expected.items()}
    try:
        netns.wait_for(ok, timeout, f'members of {pool}: {expected}',
                       interval=0.1)
    except TimeoutError as exc:
        raise AssertionError(f'{exc}; last: {last}') from None
    assert cli_members(lab, pool) == expected


def refused(lab, *args):
    """Run a CLI command that must fail; return its error output."""
    out = lab.openstack(*args, check=False)
    assert out.returncode != 0, (
        f'`openstack {" ".join(args)}` succeeded:\n{out.stdout}')
    return ' '.join((out.stderr + out.stdout).split())


# --------------------------------------------------------------- traffic

def member_of(body):
    return re.search(r'member=(\S+)', body).group(1)


def http_served(topo, vip, ports):
    """{member name: requests} for one GET per client source port."""
    served = {}
    for port in ports:
        m = member_of(topo.http_get(vip, source_port=port))
        served[m] = served.get(m, 0) + 1
    return served


def udp_flows_served(topo, vip, port, source_ports, duration=1.0):
    """One UDP flow per client source port, probed for `duration` s at
    once: every probe answered, each flow by one member throughout.
    Returns {member name: replies} summed over the flows."""
    probers = [topo.start_udp_probe(vip, port, duration=duration,
                                    source_port=sport)
               for sport in source_ports]
    results = [netns.probe_result(p) for p in probers]
    served = {}
    for summary in results:
        assert summary['lost'] == 0, summary
        assert summary['switches'] == 0, summary
        for member, replies in summary['members'].items():
            served[member] = served.get(member, 0) + replies
    return served


def decap_stats(lab, member):
    """The member's decapsulation counters (ipip, ip6ip, gre, drops)."""
    return json.loads(lab.agents.dsrctl(member, 'decap', 'stats',
                                        '--json').stdout)


def tunnelled(lab, member):
    """Packets the member received through any tunnel so far."""
    s = decap_stats(lab, member)
    return s['ipip'] + s['ip6ip'] + s['gre']


def se_names(lab):
    return [s.name for s in lab.topo.ses]


# ------------------------------------------------------- L4 ring changes

class RingTimeline:
    """An L7 SE joining, draining or leaving the L4 rings as the product
    logged it (oslo.log's local times, to the millisecond): the
    controller's tier-2 watcher seeing the new set of L7 SEs of the lab's
    L7 group, then each L4 SE applying a generation that carries it.  An
    agent logs an apply after its maps are written and a test reads the
    maps after they are written: both are late bounds of the moment, so
    the earlier one is taken -- a reading alone is late by the test's own
    wait for a CPU on a loaded host, which the product did not cause.

    Made before the change: an apply counts only for a generation newer
    than the last each L4 SE had logged by then."""

    WATCHER = re.compile(r"L7 group (?P<group>\S+): ready L7 SEs now "
                         r"(?P<ready>none|\[[^]]*\]) \(draining: "
                         r"(?P<draining>none|\[[^]]*\])\)")
    APPLIED = re.compile(r"generation (?P<gen>\d+) applied: (?P<changes>.*)")
    PUBLISHING = re.compile(r"publishing ready (?P<ready>True|False), "
                            r"draining (?P<draining>True|False) to ")

    def __init__(self, lab):
        self.group = lab.l7.group
        self.l7_root = lab.l7.root
        self.ctl = os.path.join(lab.agents.root, 'ctl1.log')
        self.ses = {se: os.path.join(lab.agents.root, f'{se}.log')
                    for se in se_names(lab)}
        self.floor = {se: max((int(m['gen']) for _at, m in
                               oslo_logs.events(path, self.APPLIED)),
                              default=-1)
                      for se, path in self.ses.items()}

    @staticmethod
    def _ids(listed):
        return set() if listed == 'none' else set(ast.literal_eval(listed))

    def detected(self, since, wanted):
        """When the watcher first logged, at since or later, the lab's L7
        group with L7 SE ids (ready, draining) for which wanted(ready,
        draining) is true; None if it did not."""
        for at, m in oslo_logs.events(self.ctl, self.WATCHER, since):
            if m['group'] == self.group and wanted(
                    self._ids(m['ready']), self._ids(m['draining'])):
                return at
        return None

    def publishing_ready(self, name, since):
        """When L7 SE `name`'s agent logged, at since or later, that it
        publishes ready (just before its tooz write: an early bound of
        the moment); None if it did not."""
        path = os.path.join(self.l7_root, f'{name}.log')
        for at, m in oslo_logs.events(path, self.PUBLISHING, since):
            if m['ready'] == 'True':
                return at
        return None

    def applied(self, since, change):
        """{L4 SE: when it first logged, at since or later, a generation
        newer than its floor applied with change ('members_added',
        'rings_written', ...)}."""
        found = {}
        for se, path in self.ses.items():
            for at, m in oslo_logs.events(path, self.APPLIED, since):
                if int(m['gen']) > self.floor[se] and \
                        f"'{change}'" in m['changes']:
                    found[se] = at
                    break
        return found

    def change(self, since, seen, wanted, change, start=None,
               detection_follows=False):
        """(start, seconds until every L4 SE ran the change, the timeline
        as text).  since: the earliest moment searched (wall); seen: {L4
        SE: wall time of the reading that showed the change}; wanted and
        change as for detected() and applied(); start: when the change
        began (default since); detection_follows: the watcher saw it
        after it began (an L7 SE publishing ready), so it began at the
        latest when the watcher logged it (a start the test observed late
        is bounded so, short of the watcher's own poll: up to 0.25 s)."""
        detected = self.detected(since, wanted)
        start = since if start is None else start
        if detection_follows and detected is not None:
            start = min(start, detected)
        logged = self.applied(detected or start, change)
        took = max(min(at, logged.get(se, at))
                   for se, at in seen.items()) - start

        def rel(at):
            return '-' if at is None else f'{at - start:+.2f} s'
        text = f'watcher {rel(detected)}; ' + ', '.join(
            f'{se} applied {rel(logged.get(se))} (read {rel(at)})'
            for se, at in seen.items())
        return start, took, text
