"""Members prepared only by `dsr-member` (run inside their namespace), in
front of an SE programmed through dsrctl.

    def test_x(lab):            # client - router - se1 - m1, m2 (dual stack)
        lab.member('m1', 'check')

Each member's state file and decap pins live in per-run folders that
teardown removes, also when a test fails.
"""

import os
import shlex
import shutil
import sys

import pytest

from tests.functional.amphora_agent.dataplane.conftest import DsrSetup
from tests.functional.amphora_agent.dataplane.conftest import PIN_ROOT
from tools.lab import netns

ENCAPS = ('--encap', 'ipip', '--encap', 'gre')
PORT = 80


class MemberLab(DsrSetup):
    """DsrSetup's SEs; members prepared by dsr-member instead of dsrctl."""

    def __init__(self, topo):
        super().__init__(topo)
        self.state_dir = self.pin_root.replace(PIN_ROOT, '/tmp') + '-member'
        os.makedirs(self.state_dir, exist_ok=True)
        self.servers = {}

    def state_file(self, name):
        return os.path.join(self.state_dir, f'{name}.json')

    def member_argv(self, name, *args):
        """dsr-member argv for ``name``, with its own state and pins."""
        command = args[0]
        argv = [sys.executable, '-m', 'amphora_agent.member.cli', *args]
        if command in ('setup', 'teardown', 'check'):
            argv += ['--state-file', self.state_file(name)]
        if command in ('setup', 'check'):
            argv += ['--decap-pin-dir', self.pin_dir(name + '-decap')]
        return argv

    def other_argv(self, name, *args, state_dir=None):
        """member_argv of a second setup on member ``name``: its own state
        file (in ``state_dir``, default this lab's), the same pin folder."""
        argv = self.member_argv(name, *args)
        if '--state-file' in argv:
            folder = state_dir or self.state_dir
            argv[argv.index('--state-file') + 1] = os.path.join(
                folder, f'{name}-other.json')
        return argv

    def member(self, name, *args, check=True):
        """Run dsr-member inside the member's namespace."""
        return self.topo.run(name, self.member_argv(name, *args),
                             check=check)

    def setup_member(self, name, *extra):
        return self.member(name, 'setup', '--vip', netns.VIP4, '--vip',
                           netns.VIP6, *ENCAPS, '--port', str(PORT), *extra)

    def start_ses(self):
        for se in self.topo.ses:
            self.dsrctl(se.name, 'attach', se.ifname, '--mode', 'generic',
                        '--max-listeners', '8')
            self.dsrctl(se.name, 'tunnel-source', 'set', '--ipv4', se.ipv4,
                        '--ipv6', se.ipv6)
        for vip in (netns.VIP4, netns.VIP6):
            self.topo.route_vip(vip, via=[s.name for s in self.topo.ses])

    def start_server(self, name):
        self.servers[name] = self.topo.start_http_server(name)

    def stop_server(self, name):
        self.servers.pop(name).stop()

    def run_fix(self, name, fix):
        """Run a check's fix command in the member (dsr-member through this
        Python)."""
        if fix.startswith('dsr-member '):
            fix = shlex.join([sys.executable, '-m',
                              'amphora_agent.member.cli']) + fix[10:]
        return self.topo.run(name, ['sh', '-c', fix])

    def close(self):
        for member in self.topo.members:
            if os.path.exists(self.state_file(member.name)):
                self.member(member.name, 'teardown', check=False)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        super().close()


def problems(proc):
    return [line for line in proc.stdout.splitlines()
            if line.startswith('problem: ')]


def fix_of(line):
    return line.split('; fix: ', 1)[1]


@pytest.fixture(scope='module')
def lab():
    """1 SE, 2 members prepared by `dsr-member setup`, HTTP on the VIPs."""
    with netns.Topology(n_se=1, n_members=2) as topo:
        member_lab = MemberLab(topo)
        try:
            member_lab.start_ses()
            member_lab.setup_outputs = {}
            for member in topo.members:
                member_lab.setup_outputs[member.name] = \
                    member_lab.setup_member(member.name).stdout
                member_lab.start_server(member.name)
            yield member_lab
        finally:
            member_lab.close()


@pytest.fixture
def make_member_lab(make_topology):
    made = []

    def factory(**kwargs):
        member_lab = MemberLab(make_topology(**kwargs))
        made.append(member_lab)
        return member_lab
    yield factory
    for member_lab in made:
        member_lab.close()
