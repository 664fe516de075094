"""`dsr-member setup --se-source`: the member decapsulates only what its
SEs tunnel to it.  Anyone else who can reach its tunnel address -- here
the client, sending IPIP straight to the member with a forged client
inside -- is dropped and counted (``drop_source``), while clients through
the SE are served; check reports a missing source; teardown gives back
"any source"."""

import json
import os
import sys

from amphora_agent.dataplane import decap

from tests.functional.amphora_agent.dataplane.conftest import listener
from tests.functional.amphora_agent.dataplane.test_dsr_path import member_of
from tests.functional.amphora_agent.member import conftest
from tools.lab import netns

FORGED_CLIENT = '203.0.113.66'


def send_forged_syn(topo, target):
    """From the client: IPIP to the member's tunnel address, carrying a SYN
    to the VIP from a client address it chose."""
    code = (
        'from scapy.all import IP, TCP, send\n'
        f'send(IP(src="{topo.client.ipv4}", dst="{target}", proto=4)'
        f' / IP(src="{FORGED_CLIENT}", dst="{netns.VIP4}")'
        ' / TCP(sport=40404, dport=80, flags="S"), verbose=False)\n')
    topo.run('client', [sys.executable, '-c', code])


def test_only_the_ses_tunnel_packets_are_decapsulated(make_member_lab):
    lab = make_member_lab(n_se=1, n_members=1)
    topo = lab.topo
    se, m1 = topo.ses[0], topo.members[0]
    lab.start_ses()
    out = lab.setup_member('m1', '--se-source', se.ipv4,
                           '--se-source', se.ipv6).stdout
    assert f'+ decap SE sources {se.ipv4}, {se.ipv6}' in out, out
    lab.start_server('m1')
    lab.apply(listener(netns.VIP4, members=[m1.ipv4]))
    assert member_of(topo.http_get(netns.VIP4)) == 'm1'
    assert 'no problems found' in lab.member('m1', 'check').stdout

    before = lab.decap_stats('m1')
    send_forged_syn(topo, m1.ipv4)
    netns.wait_for(
        lambda: lab.decap_stats('m1')['drop_source'] > before['drop_source'],
        10, 'the forged tunnel packet to be dropped')
    after = lab.decap_stats('m1')
    assert after['ipip'] == before['ipip']
    # Through the SE, still served.
    assert member_of(topo.http_get(netns.VIP4, source_port=43100)) == 'm1'

    # Setup again: nothing to change.
    out = lab.setup_member('m1', '--se-source', se.ipv4,
                           '--se-source', se.ipv6).stdout
    assert 'setup done: 0 change(s)' in out, out
    out = lab.member('m1', 'check', '--se-source', se.ipv4,
                     '--se-source', '198.18.0.250', check=False)
    assert any('drops tunnel packets from SE source 198.18.0.250' in p
               for p in conftest.problems(out)), out.stdout

    out = lab.member('m1', 'teardown').stdout
    assert '- decap pins removed' in out, out

    # The control: set up without --se-source, the same forged packet is
    # decapsulated (and would reach the VIP's listener).
    lab.setup_member('m1')
    before = lab.decap_stats('m1')
    send_forged_syn(topo, m1.ipv4)
    netns.wait_for(lambda: lab.decap_stats('m1')['ipip'] > before['ipip'],
                   10, 'the forged tunnel packet to be decapsulated')
    assert lab.decap_stats('m1')['drop_source'] == 0


def test_kernel_decap_refuses_se_sources(make_member_lab):
    """A kernel tunnel device decapsulates from anyone: no silent promise."""
    lab = make_member_lab(n_se=1, n_members=1)
    se = lab.topo.ses[0]
    out = lab.member('m1', 'setup', '--vip', netns.VIP4, '--decap',
                     'kernel', '--se-source', se.ipv4, check=False)
    assert out.returncode != 0
    assert '--se-source needs eBPF decap' in out.stderr + out.stdout


def test_dsrctl_decap_attach_with_sources(make_member_lab):
    """The same through dsrctl (members prepared by hand): `decap show`
    lists the sources, a forged packet is dropped, and attaching again
    without --source accepts any source again."""
    lab = make_member_lab(n_se=1, n_members=1)
    topo = lab.topo
    se, m1 = topo.ses[0], topo.members[0]
    lab.dsrctl('m1', 'decap', 'attach', m1.ifname, '--address', m1.ipv4,
               '--source', se.ipv4, '--source', se.ipv6)
    assert _shown(lab) == {
        'addresses': [m1.ipv4], 'sources': [se.ipv4, se.ipv6]}
    send_forged_syn(topo, m1.ipv4)
    netns.wait_for(lambda: lab.decap_stats('m1')['drop_source'] == 1, 10,
                   'the forged tunnel packet to be dropped')
    lab.dsrctl('m1', 'decap', 'attach', m1.ifname, '--address', m1.ipv4)
    assert lab.dsrctl_json('m1', 'decap', 'show')['sources'] == []
    send_forged_syn(topo, m1.ipv4)
    netns.wait_for(lambda: lab.decap_stats('m1')['ipip'] == 1, 10,
                   'the forged tunnel packet to be decapsulated')


def test_an_se_replaced_is_no_longer_trusted(make_member_lab):
    """Setup run again with the new SE's source takes back the old one's:
    its address may one day be another host's."""
    lab = make_member_lab(n_se=1, n_members=1)
    topo = lab.topo
    se = topo.ses[0]
    old_se = '198.18.0.250'
    lab.setup_member('m1', '--se-source', old_se)
    out = lab.setup_member('m1', '--se-source', se.ipv4,
                           '--se-source', se.ipv6).stdout
    assert f'- decap SE sources {old_se}' in out, out
    assert lab.dsrctl_json('m1', 'decap', 'show')['sources'] == [
        se.ipv4, se.ipv6]
    out = lab.member('m1', 'check', check=False).stdout
    assert 'SE source' not in out and 'any source' not in out, out


def test_a_setup_without_sources_sharing_the_pins_stays_open(
        make_member_lab):
    """Two setups on one member share one pin folder: the one that gives
    no --se-source keeps its addresses open to any source (its SEs are
    not the other's); teardown of the restricted one leaves the other's
    decap as it was."""
    lab = make_member_lab(n_se=1, n_members=1)
    topo = lab.topo
    se, m1 = topo.ses[0], topo.members[0]
    lab.setup_member('m1', '--address', m1.ipv4)
    topo.run('m1', lab.other_argv('m1', 'setup', '--vip', netns.VIP6,
                                  '--address', m1.ipv6,
                                  '--se-source', se.ipv6))
    show = lab.dsrctl_json('m1', 'decap', 'show')
    assert _shown(lab) == {'addresses': [m1.ipv4, m1.ipv6],
                           'sources': [se.ipv6]}
    # Which setup asked for what, as dsrctl shows it to an operator.
    assert show['restricted'] == [m1.ipv6]
    assert show['address_setups'] == {m1.ipv4: {'setups': 1, 'open': 1},
                                      m1.ipv6: {'setups': 1, 'open': 0}}
    assert show['source_setups'] == {se.ipv6: 1}
    text = lab.dsrctl('m1', 'decap', 'show').stdout
    assert f'{m1.ipv4}: any source; 1 setup(s), 1 of them open' in text
    assert f'{m1.ipv6}: SE sources only; 1 setup(s), 0 of them open' in text
    send_forged_syn(topo, m1.ipv4)
    netns.wait_for(lambda: lab.decap_stats('m1')['ipip'] == 1, 10,
                   'the open address to decapsulate from any source')
    out = topo.run('m1', lab.other_argv('m1', 'teardown')).stdout
    assert f'- decap SE sources {se.ipv6}' in out, out
    assert _shown(lab) == {
        'addresses': [m1.ipv4], 'sources': []}


def test_teardown_after_an_upgrade_removes_the_earlier_pins(
        make_member_lab):
    """The pins an earlier release left (no source map, one counter
    fewer) are removed by the teardown of the setup that loaded them."""
    lab = make_member_lab(n_se=1, n_members=1)
    lab.setup_member('m1')
    pin_dir = lab.pin_dir('m1-decap')
    os.unlink(os.path.join(pin_dir, 'decap_sources'))
    assert 'earlier release' in ' '.join(
        conftest.problems(lab.member('m1', 'check', check=False)))
    out = lab.member('m1', 'teardown').stdout
    assert '- decap pins removed' in out, out
    assert not os.path.exists(pin_dir) or os.listdir(pin_dir) == []


def test_two_setups_share_the_pins_until_the_last_is_torn_down(
        make_member_lab, tmp_path):
    """Setup A loads the pins and gives SE source S4 for tunnel address T4;
    setup B, with its state in another folder (no handoff between them:
    the maps count), gives T4 too, T6, S4 and S6.  A's teardown (the
    loader's) leaves B's decap working: the pins, the attachment, T4 and
    S4 (B still gives them) stay.  B's teardown, the last, removes them."""
    lab = make_member_lab(n_se=1, n_members=1)
    topo = lab.topo
    se, m1 = topo.ses[0], topo.members[0]
    lab.start_ses()
    lab.member('m1', 'setup', '--vip', netns.VIP4, *conftest.ENCAPS,
               '--address', m1.ipv4, '--se-source', se.ipv4)
    out = topo.run('m1', lab.other_argv(
        'm1', 'setup', '--vip', netns.VIP4, '--vip', netns.VIP6,
        *conftest.ENCAPS, '--address', m1.ipv4, '--address', m1.ipv6,
        '--se-source', se.ipv4, '--se-source', se.ipv6,
        state_dir=str(tmp_path))).stdout
    assert f'+ decap SE sources {se.ipv4}, {se.ipv6}' in out, out
    lab.start_server('m1')
    lab.apply(listener(netns.VIP4, members=[m1.ipv4]))
    assert member_of(topo.http_get(netns.VIP4)) == 'm1'

    show = lab.dsrctl_json('m1', 'decap', 'show')
    assert show['address_setups'] == {m1.ipv4: {'setups': 2, 'open': 0},
                                      m1.ipv6: {'setups': 1, 'open': 0}}
    assert show['source_setups'] == {se.ipv4: 2, se.ipv6: 1}
    out = lab.member('m1', 'teardown').stdout
    assert f'= decap for {m1.ipv4} kept: another setup gives it' in out, out
    show = lab.dsrctl_json('m1', 'decap', 'show')
    assert show['address_setups'] == {m1.ipv4: {'setups': 1, 'open': 0},
                                      m1.ipv6: {'setups': 1, 'open': 0}}
    assert show['source_setups'] == {se.ipv4: 1, se.ipv6: 1}
    assert f'= decap kept under {lab.pin_dir("m1-decap")}' in out, out
    assert '- decap pins removed' not in out, out
    assert _shown(lab) == {
        'addresses': [m1.ipv4, m1.ipv6], 'sources': [se.ipv4, se.ipv6]}
    # A's VIP4 went from lo with A (B's state is in another folder: no
    # handoff); B's VIP6 is served, through B's tunnel addresses.
    lab.apply(listener(netns.VIP6, members=[m1.ipv6]))
    assert member_of(topo.http_get(netns.VIP6, source_port=43101)) == 'm1'

    out = topo.run('m1', lab.other_argv('m1', 'teardown',
                                        state_dir=str(tmp_path))).stdout
    assert '- decap pins removed' in out, out
    assert f'- decap detached from {m1.ifname}' in out, out
    pin_dir = lab.pin_dir('m1-decap')
    assert not os.path.exists(pin_dir) or os.listdir(pin_dir) == []


def test_a_shared_address_is_open_while_a_setup_asks_for_any_source(
        make_member_lab, tmp_path):
    """Setups giving one tunnel address, one with SE sources and one
    without: the address takes any source (never drop a setup's packets
    for another's list) until the open one is gone."""
    lab = make_member_lab(n_se=1, n_members=1)
    topo = lab.topo
    se, m1 = topo.ses[0], topo.members[0]
    lab.member('m1', 'setup', '--vip', netns.VIP4, *conftest.ENCAPS,
               '--address', m1.ipv4, '--se-source', se.ipv4)
    assert lab.dsrctl_json('m1', 'decap', 'show')['addresses'] == [m1.ipv4]
    open_setup = lab.other_argv('m1', 'setup', '--vip', netns.VIP4,
                                *conftest.ENCAPS, '--address', m1.ipv4,
                                state_dir=str(tmp_path))
    topo.run('m1', open_setup)
    send_forged_syn(topo, m1.ipv4)
    netns.wait_for(lambda: lab.decap_stats('m1')['ipip'] == 1, 10,
                   'the shared open address to decapsulate from any source')
    assert any('another setup, or dsrctl, gives it without SE sources' in p
               for p in conftest.problems(lab.member(
                   'm1', 'check', '--se-source', se.ipv4, check=False)))
    topo.run('m1', lab.other_argv('m1', 'teardown',
                                  state_dir=str(tmp_path)))
    send_forged_syn(topo, m1.ipv4)
    netns.wait_for(lambda: lab.decap_stats('m1')['drop_source'] == 1, 10,
                   'the address restricted again once the open setup left')
    assert 'no problems found' in lab.member(
        'm1', 'check', '--se-source', se.ipv4, check=False).stdout


def _shown(lab):
    """The addresses and sources `dsrctl decap show` lists."""
    show = lab.dsrctl_json('m1', 'decap', 'show')
    return {'addresses': show['addresses'], 'sources': show['sources']}


def _restricted(lab):
    with decap.Decap.open(lab.pin_dir('m1-decap')) as d:
        return d.restricted()


def test_a_setup_run_again_repairs_what_dsrctl_overrode_and_switches(
        make_member_lab, tmp_path):
    """dsrctl sets exactly what it is told: a setup run again gives back
    its address and restriction.  Two setups restrict one address; one of
    them run without --se-source opens it, run with it again restricts
    it: the counts follow each switch exactly once."""
    lab = make_member_lab(n_se=1, n_members=1)
    topo = lab.topo
    se, m1 = topo.ses[0], topo.members[0]
    setup = ('setup', '--vip', netns.VIP4, *conftest.ENCAPS,
             '--address', m1.ipv4)
    lab.member('m1', *setup, '--se-source', se.ipv4)
    lab.dsrctl('m1', 'decap', 'attach', m1.ifname, '--address', m1.ipv6)
    assert _shown(lab) == {
        'addresses': [m1.ipv6], 'sources': []}
    lab.member('m1', *setup, '--se-source', se.ipv4)
    assert _shown(lab) == {
        'addresses': [m1.ipv4, m1.ipv6], 'sources': [se.ipv4]}
    assert _restricted(lab) == [m1.ipv4]

    other = ('setup', '--vip', netns.VIP4, *conftest.ENCAPS, '--address',
             m1.ipv4)
    topo.run('m1', lab.other_argv('m1', *other, '--se-source', se.ipv4,
                                  state_dir=str(tmp_path)))
    assert _restricted(lab) == [m1.ipv4]
    for _ in range(2):   # run twice: nothing counted twice
        topo.run('m1', lab.other_argv('m1', *other, state_dir=str(tmp_path)))
    assert _restricted(lab) == []
    for _ in range(2):
        topo.run('m1', lab.other_argv('m1', *other, '--se-source',
                                      se.ipv4, state_dir=str(tmp_path)))
    assert _restricted(lab) == [m1.ipv4]
    topo.run('m1', lab.other_argv('m1', 'teardown', state_dir=str(tmp_path)))
    assert _restricted(lab) == [m1.ipv4]
    out = lab.member('m1', 'teardown').stdout
    assert f'- decap for {m1.ipv4}' in out, out


_IN_MEMBER = '''
import json, sys
from amphora_agent.dataplane import decap, pins
from amphora_agent.member import ebpf
pin_dir, action, names = sys.argv[1], sys.argv[2], sys.argv[3:]
if action == "attach":
    with decap.Decap.open(pin_dir, create=False) as d:
        for name in names:
            d.attach(name)
with pins.open_program(pin_dir, decap.PROGRAM) as prog:
    pinned = prog.id
print(json.dumps({"pinned": pinned,
                  "attached": [ebpf._attached_id(n) for n in names]}))
'''


def _decap_programs(lab, member, action, *names):
    """In the member's namespace: attach the pinned decap to names (action
    'attach') or not ('show'); {'pinned': id, 'attached': [id per name]}."""
    out = lab.topo.run(member, [
        sys.executable, '-c', _IN_MEMBER, lab.pin_dir(member + '-decap'),
        action, *names]).stdout
    return json.loads(out)


def test_a_setup_run_again_swaps_in_the_installed_program_wherever_it_ran(
        make_member_lab):
    """Pins that outlive an upgrade (no reboot) hold the program they were
    loaded with: a setup run again loads the installed one beside the
    pinned maps and swaps it in on every interface that runs the pinned
    one (the setup's uplink and, attached by hand, lo), so the last
    teardown still finds them all; the decap keeps its addresses and
    keeps decapsulating."""
    lab = make_member_lab(n_se=1, n_members=1)
    topo = lab.topo
    m1 = topo.members[0]
    lab.setup_member('m1', '--address', m1.ipv4)
    before = _decap_programs(lab, 'm1', 'attach', m1.ifname, 'lo')
    assert before['attached'] == [before['pinned']] * 2
    lab.setup_member('m1', '--address', m1.ipv4)
    after = _decap_programs(lab, 'm1', 'show', m1.ifname, 'lo')
    assert after['pinned'] != before['pinned']
    assert after['attached'] == [after['pinned']] * 2
    assert _shown(lab) == {'addresses': [m1.ipv4], 'sources': []}
    send_forged_syn(topo, m1.ipv4)
    netns.wait_for(lambda: lab.decap_stats('m1')['ipip'] >= 1, 10,
                   'the reloaded decap to decapsulate')
    out = lab.member('m1', 'teardown').stdout
    assert f'- decap detached from {m1.ifname}' in out, out
    assert '- decap detached from lo' in out, out
