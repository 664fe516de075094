"""`dsr-member check` finds each deliberately broken setting of a member
prepared by setup, with a fix that works; `--through` reports where probe
flows stopped."""

import pytest

from tests.functional.amphora_agent.dataplane.conftest import listener
from tests.functional.amphora_agent.member.conftest import fix_of
from tests.functional.amphora_agent.member.conftest import problems
from tools.lab import netns


def check(lab, *args):
    return lab.member('m1', 'check', *args, check=False)


def assert_clean(lab):
    proc = check(lab)
    assert proc.returncode == 0 and 'no problems found' in proc.stdout, \
        proc.stdout + proc.stderr


def test_prepared_member_is_clean(lab):
    assert_clean(lab)


def _break_vip4(lab):
    lab.topo.run('m1', ['ip', 'addr', 'del', f'{netns.VIP4}/32', 'dev',
                        'lo'])


def _break_vip6(lab):
    lab.topo.run('m1', ['ip', '-6', 'addr', 'del', f'{netns.VIP6}/128',
                        'dev', 'lo'])


def _break_arp_ignore(lab):
    lab.topo.sysctls('m1', {'net.ipv4.conf.all.arp_ignore': 0,
                            'net.ipv4.conf.eth0.arp_ignore': 0})


def _break_arp_announce(lab):
    lab.topo.sysctls('m1', {'net.ipv4.conf.all.arp_announce': 0,
                            'net.ipv4.conf.eth0.arp_announce': 0})


def _break_rp_filter(lab):
    lab.topo.sysctl('m1', 'net.ipv4.conf.eth0.rp_filter', 1)


def _break_decap(lab):
    lab.dsrctl('m1', 'decap', 'detach', 'eth0')


def _break_nd_proxy(lab):
    lab.topo.run('m1', ['ip', '-6', 'neigh', 'add', 'proxy', netns.VIP6,
                        'dev', 'eth0'])


def _break_mtu(lab):
    lab.topo.run('m1', ['ip', 'link', 'set', 'dev', 'eth0', 'mtu', '1500'])


BROKEN = [
    pytest.param(_break_vip4, f'VIP {netns.VIP4} is not on lo', id='vip4'),
    pytest.param(_break_vip6, f'VIP {netns.VIP6} is not on lo', id='vip6'),
    pytest.param(_break_arp_ignore, 'eth0 would answer ARP for the VIPs',
                 id='arp_ignore'),
    pytest.param(_break_arp_announce, 'could announce a VIP',
                 id='arp_announce'),
    pytest.param(_break_rp_filter, 'rp_filter is strict (1) on eth0',
                 id='rp_filter'),
    pytest.param(_break_decap, 'the decap program is not attached to eth0',
                 id='decap'),
    pytest.param(_break_nd_proxy, f'proxy-NDP entry for VIP {netns.VIP6}',
                 id='nd_proxy'),
    pytest.param(_break_mtu, 'eth0 MTU 1500 < 1544 needed', id='mtu'),
]


@pytest.mark.parametrize('breaker,expected', BROKEN)
def test_check_pinpoints_and_fixes(lab, breaker, expected):
    assert_clean(lab)
    breaker(lab)
    try:
        proc = check(lab)
        found = problems(proc)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert len(found) == 1 and expected in found[0], proc.stdout
        fix = fix_of(found[0])
        if breaker is _break_mtu:
            # What the member alone can do: advertise a smaller MSS.
            fix = fix.split(' or clamp the MSS: ')[1]
        lab.run_fix('m1', fix)
        assert_clean(lab)
    finally:
        # Whatever happened, leave m1 prepared for the next test.
        m1 = lab.topo.host('m1')
        lab.topo.run('m1', ['ip', 'link', 'set', 'dev', 'eth0', 'mtu',
                            str(lab.topo.mtu)])
        for family, gateway in (('-4', m1.gw4), ('-6', m1.gw6)):
            lab.topo.run('m1', ['ip', family, 'route', 'replace', 'default',
                                'via', gateway, 'dev', 'eth0'])
        lab.topo.run('m1', ['ip', '-6', 'neigh', 'del', 'proxy', netns.VIP6,
                            'dev', 'eth0'], check=False)
        lab.setup_member('m1')


def test_check_finds_nothing_listening(lab):
    lab.stop_server('m1')
    try:
        proc = check(lab)
        found = problems(proc)
        assert len(found) == 2, proc.stdout
        assert f'nothing listens on {netns.VIP4}:80/tcp' in found[0]
        assert f'nothing listens on [{netns.VIP6}]:80/tcp' in found[1]
        assert fix_of(found[0]).startswith(
            f'start the service bound to {netns.VIP4}:80 or 0.0.0.0:80')
    finally:
        lab.start_server('m1')
    assert_clean(lab)


def _probe(lab, *extra):
    se = lab.topo.host('se1')
    return check(lab, '--through', se.ipv4, '--probes', '16', *extra)


def _probe_lines(proc):
    return [line for line in proc.stdout.splitlines()
            if line.startswith('probe: ')]


def test_probe_through_the_se(lab):
    lab.apply(listener(netns.VIP4, members=lab.member_addrs(4)),
              listener(netns.VIP6, members=lab.member_addrs(6)))
    proc = _probe(lab)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    se = lab.topo.host('se1')
    # Each VIP: some flows came back to m1 in the tunnel and were
    # decapsulated, the others were answered by m2 from the VIP.
    assert out.count(f'came back to this member inside ipip from SE '
                     f'{se.ipv4}') == 1, out
    assert out.count(f'inside ipip from SE {se.ipv6}') == 1, out
    assert out.count('probe: decapsulated here') == 2, out
    assert out.count('answered from the VIP by other members (0 reset') \
        == 2, out
    assert out.count('probe: the path through the SE to this member works') \
        == 2


def test_probe_stops_at_decapsulation(lab):
    lab.apply(listener(netns.VIP4, members=lab.member_addrs(4)))
    lab.dsrctl('m1', 'decap', 'detach', 'eth0')
    try:
        proc = _probe(lab, '--vip', netns.VIP4)
        lines = _probe_lines(proc)
        assert proc.returncode == 1
        assert any('STOPPED at decapsulation' in line for line in lines), \
            proc.stdout
    finally:
        lab.setup_member('m1')


def test_probe_stops_at_the_se_when_not_a_member(lab):
    m2 = lab.topo.host('m2')
    lab.apply(listener(netns.VIP4, members=[m2.ipv4]))
    proc = _probe(lab, '--vip', netns.VIP4)
    assert proc.returncode == 1
    assert any('STOPPED at the SE: none of 16 flows was sent to this '
               'member' in line for line in _probe_lines(proc)), proc.stdout


def test_probe_stops_before_the_se_when_the_vip_is_not_served(lab):
    lab.apply()   # the SE serves no listener: it drops the VIP's flows
    proc = _probe(lab, '--vip', netns.VIP4)
    assert proc.returncode == 1
    assert any('STOPPED before reaching a member' in line
               for line in _probe_lines(proc)), proc.stdout
