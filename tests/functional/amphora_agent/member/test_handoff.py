"""Two `dsr-member setup`s on one member (one state file each, in one
folder): a member behind two load balancers.  The second finds the VIP
on lo and the ARP sysctls already done by the first and records neither
(its tunnel address in the decap is counted in the maps); the first's
teardown, or the first run again without that VIP, hands them to the
second instead of undoing them, and the second's teardown, the last,
restores the host."""

from tests.functional.amphora_agent.dataplane.conftest import listener
from tests.functional.amphora_agent.dataplane.test_dsr_path import member_of
from tests.functional.amphora_agent.member import conftest
from tools.lab import netns

ARP = ('net.ipv4.conf.all.arp_ignore', 'net.ipv4.conf.all.arp_announce')


def _sysctls(topo):
    out = topo.run('m1', ['sysctl', '-n', *ARP]).stdout.split()
    return dict(zip(ARP, out))


def _on_lo(topo):
    return topo.run('m1', ['ip', '-o', 'addr', 'show', 'dev', 'lo']).stdout


def _serving(lab, port):
    lab.apply(listener(netns.VIP4, members=[lab.topo.members[0].ipv4]))
    return member_of(lab.topo.http_get(netns.VIP4, source_port=port))


def _second_setup(lab):
    out = lab.topo.run('m1', lab.other_argv('m1', 'setup', '--vip',
                                            netns.VIP4,
                                            *conftest.ENCAPS)).stdout
    # The VIP and the sysctls were done by the first: nothing recorded.
    assert '+ VIP' not in out and '+ sysctl' not in out, out
    return out


def test_the_first_teardown_hands_the_shared_vip_to_the_second(
        make_member_lab):
    lab = make_member_lab(n_se=1, n_members=1)
    topo = lab.topo
    lab.start_ses()
    before = _sysctls(topo)
    lab.setup_member('m1')
    _second_setup(lab)
    lab.start_server('m1')
    assert _serving(lab, 43200) == 'm1'

    out = lab.member('m1', 'teardown').stdout
    heir = lab.state_file('m1-other')
    assert f'= VIP {netns.VIP4} kept: the setup recorded in {heir}' in out
    assert f'- VIP {netns.VIP6} from lo' in out, out
    assert '= sysctl net.ipv4.conf.all.arp_ignore = 1 kept' in out, out
    assert f'= decap for {topo.members[0].ipv4}' in out, out   # counted
    assert netns.VIP4 in _on_lo(topo) and netns.VIP6 not in _on_lo(topo)
    assert _sysctls(topo) != before
    assert _serving(lab, 43201) == 'm1'
    assert 'no problems found' in topo.run('m1', lab.other_argv(
        'm1', 'check', '--port', str(conftest.PORT))).stdout

    out = topo.run('m1', lab.other_argv('m1', 'teardown')).stdout
    assert f'- VIP {netns.VIP4} from lo' in out, out
    assert '- decap pins removed' in out, out
    assert netns.VIP4 not in _on_lo(topo)
    assert _sysctls(topo) == before


def test_the_first_run_again_without_the_vip_hands_it_over(make_member_lab):
    lab = make_member_lab(n_se=1, n_members=1)
    topo = lab.topo
    lab.start_ses()
    lab.setup_member('m1')
    _second_setup(lab)
    lab.start_server('m1')

    out = lab.member('m1', 'setup', '--vip', netns.VIP6,
                     *conftest.ENCAPS).stdout
    assert f'= VIP {netns.VIP4} kept: the setup recorded in ' in out, out
    assert f'- VIP {netns.VIP4}' not in out, out
    assert netns.VIP4 in _on_lo(topo)
    assert _serving(lab, 43202) == 'm1'
    out = topo.run('m1', lab.other_argv('m1', 'teardown')).stdout
    assert f'- VIP {netns.VIP4} from lo' in out, out
