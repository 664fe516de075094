"""The member unit tests' environment: a fake IPRoute, /proc/sys and
/sys/module (every tunnel module present)."""

import pytest

from amphora_agent.member import host
from amphora_agent.member import spec as spec_mod
from amphora_agent.member import state
from amphora_agent.member import sysctl as sysctl_mod
from tests.unit.amphora_agent.member import fakes

V4, V6 = '192.0.2.10', '2001:db8:f::10'
A4, A6 = '198.51.100.2', '2001:db8:2::2'
ALL_KINDS = ('ipip', 'sit', 'ip6_tunnel', 'ip_gre', 'ip6_gre')


@pytest.fixture
def env(tmp_path):
    proc = str(tmp_path / 'proc_sys')
    fakes.fake_proc_sys(proc, ('lo', 'eth0'), {
        # A strict host: rp_filter must be relaxed on the tunnel devices.
        'net/ipv4/conf/all/rp_filter': 1,
        'net/ipv4/conf/default/rp_filter': 1})
    sys_root = tmp_path / 'sys'
    for module in ALL_KINDS:
        (sys_root / 'module' / module).mkdir(parents=True)

    class Env:
        ipr = fakes.FakeIPRoute(
            links={'lo': 65536, 'eth0': 1600},
            addresses=[('eth0', A4, 24), ('eth0', A6, 64)],
            default4=('eth0', '198.51.100.1'),
            default6=('eth0', '2001:db8:2::1'), proc_sys=proc)
        sysctl = sysctl_mod.Sysctl(proc)
        journal = state.Journal(str(tmp_path / 'state.json'))
        roots = {'sys_root': str(sys_root),
                 'modules_root': str(tmp_path / 'none'), 'release': 'x'}

        def setup(self, mode='kernel', encaps=('ipip', 'gre'),
                  vips=(V4, V6)):
            spec = spec_mod.MemberSpec(vips=list(vips), encaps=encaps)
            return host.setup(spec, mode, self.ipr, self.sysctl,
                              self.journal, module_roots=self.roots)
    return Env()
