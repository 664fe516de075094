"""An SE in front of members, programmed through the real dsrctl CLI.

    def test_x(dsr):            # client - router - se1 - m1, m2 (dual stack)
        dsr.apply(listener(VIP4, members=dsr.member_addrs(4)))
        dsr.topo.http_get(VIP4)

Every SE and member gets its own pin directory under a per-run bpffs folder
that teardown removes, also when the test fails.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tools.lab import netns

PIN_ROOT = '/sys/fs/bpf'


def listener(vip, port=80, protocol='tcp', members=(), encap='ipip',
             algorithm='SOURCE_IP_PORT', weights=None, connection_limit=None,
             allowed_cidrs=None, pool_members=None):
    doc = {'vip': str(vip), 'port': port, 'protocol': protocol,
           'encap': encap, 'algorithm': algorithm,
           'members': [{'address': str(a),
                        'weight': (weights or {}).get(str(a), 1)}
                       for a in members]}
    if connection_limit is not None:
        doc['connection_limit'] = connection_limit
    if allowed_cidrs is not None:
        doc['allowed_cidrs'] = list(allowed_cidrs)
    if pool_members is not None:
        doc['pool_members'] = pool_members
    return doc


class DsrSetup:
    """Topology + SE program(s) + member decap, driven through dsrctl."""

    def __init__(self, topo):
        self.topo = topo
        self.pin_root = os.path.join(PIN_ROOT,
                                     f'octavia-dsr-test-{topo.prefix}')
        os.makedirs(self.pin_root, exist_ok=True)
        # How to run dsrctl (test_packaging: the wheel's installed script).
        self.dsrctl_argv = [sys.executable, '-m', 'amphora_agent.cmd.dsrctl']

    def pin_dir(self, host):
        return os.path.join(self.pin_root, host)

    def dsrctl(self, host, *args, check=True):
        """Run dsrctl for `host` (entering its netns); CompletedProcess."""
        cmd = self.dsrctl_argv + [
            '--netns', self.topo.ns(host),
            '--pin-dir', self.pin_dir(host),
            '--decap-pin-dir', self.pin_dir(host + '-decap')] + list(args)
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(
                f'dsrctl {" ".join(args)} failed ({proc.returncode}):\n'
                f'{proc.stdout}{proc.stderr}')
        return proc

    def dsrctl_json(self, host, *args):
        return json.loads(self.dsrctl(host, *args, '--json').stdout)

    def start(self, xdp_mode='generic', max_listeners=8):
        for se in self.topo.ses:
            self.dsrctl(se.name, 'attach', se.ifname, '--mode', xdp_mode,
                        '--max-listeners', str(max_listeners))
            self.dsrctl(se.name, 'tunnel-source', 'set', '--ipv4', se.ipv4,
                        '--ipv6', se.ipv6)
        for member in self.topo.members:
            self.topo.setup_member(member.name)
            self.dsrctl(member.name, 'decap', 'attach', member.ifname,
                        '--address', member.ipv4, '--address', member.ipv6)
            self.topo.start_http_server(member.name)
        self.topo.route_vip(netns.VIP4, via=[s.name for s in self.topo.ses])
        self.topo.route_vip(netns.VIP6, via=[s.name for s in self.topo.ses])

    def member_addrs(self, family):
        return [m.addr(family) for m in self.topo.members]

    def member_by_addr(self):
        return {m.addr(f): m.name for m in self.topo.members for f in (4, 6)}

    def apply(self, *listeners, ses=None):
        """Make every SE implement exactly these listeners."""
        for se in ses or self.topo.ses:
            state = {'tunnel_source': {'ipv4': se.ipv4, 'ipv6': se.ipv6},
                     'listeners': list(listeners)}
            path = os.path.join(self.pin_root.replace(PIN_ROOT, '/tmp'),
                                f'{se.name}.json')
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'w') as f:
                json.dump(state, f)
            self.dsrctl(se.name, 'apply', path)

    def stats(self, se='se1'):
        return self.dsrctl_json(se, 'stats')

    def decap_stats(self, member):
        return self.dsrctl_json(member, 'decap', 'stats')

    def close(self):
        for host in list(self.topo.ses) + list(self.topo.members):
            # The namespaces go with the topology; programs attached in them
            # go too.  Only the pins outlive them.
            pass
        shutil.rmtree(self.pin_root, ignore_errors=True)
        shutil.rmtree(self.pin_root.replace(PIN_ROOT, '/tmp'),
                      ignore_errors=True)


@pytest.fixture
def make_dsr(make_topology):
    made = []

    def factory(n_se=1, n_members=2, xdp_mode='generic', **kwargs):
        setup = DsrSetup(make_topology(n_se=n_se, n_members=n_members,
                                       **kwargs))
        made.append(setup)
        setup.start(xdp_mode=xdp_mode)
        return setup

    yield factory
    for setup in made:
        setup.close()


@pytest.fixture
def dsr(make_dsr):
    return make_dsr()


@pytest.fixture
def se():
    """An SE program on a configured dataplane in a namespace of its own
    (test_packet_corpus.SeHarness); test files may define their own."""
    from tests.functional.amphora_agent.dataplane import test_packet_corpus
    harness = test_packet_corpus.SeHarness()
    try:
        harness.setup()
        yield harness
    finally:
        harness.teardown()
