"""dsrctl: bad input is refused with a message naming the bad value, and
changes nothing."""

import json

from tests.functional.amphora_agent.dataplane.conftest import listener
from tools.lab import netns

VIP = netns.VIP4
L = f'{VIP}:80/tcp'


BAD_COMMANDS = [
    (['listener', 'add', '198.51.100.300:80/tcp'], "'198.51.100.300'"),
    (['listener', 'add', f'{VIP}:70000/tcp'], "'70000'"),
    (['listener', 'add', f'{VIP}:80/icmp'], 'allowed: SCTP, TCP, UDP'),
    (['listener', 'add', f'{VIP}:81/tcp', '--algorithm', 'ROUND_ROBIN'],
     'allowed: SOURCE_IP_PORT, SOURCE_IP'),
    (['listener', 'add', f'{VIP}:81/tcp', '--encap', 'vxlan'],
     'allowed: ipip, gre'),
    (['listener', 'add', L], 'already exists'),
    (['listener', 'del', f'{VIP}:99/tcp'], 'does not exist'),
    (['member', 'add', L, '198.19.9.2', '--weight', '70000'], "'70000'"),
    (['member', 'add', L, '198.19.1.999'], "'198.19.1.999'"),
    (['member', 'add', f'{VIP}:99/tcp', '198.19.1.2'], 'does not exist'),
    (['member', 'del', L, '198.19.9.9'], 'is not in'),
    (['tunnel-source', 'set', '--ipv4', '2001:db8::1'], 'not an IPv4'),
    (['listener', 'set', L, '--connection-limit', '-2'],
     "'-2' is not -1 (no limit)"),
    (['listener', 'set', L, '--connection-limit', 'many'], "'many'"),
    (['listener', 'set', L, '--allowed-cidr', '10.0.0.0/33'],
     "'10.0.0.0/33' is not a CIDR"),
    (['listener', 'set', L, '--allowed-cidr', '10.0.0.0/8', '--any-source'],
     'not both'),
    (['attach', 'nosuchif0'], "'nosuchif0'"),
    (['attach', 'nosuchif0', '--flood-guard-rate', '-1'],
     'flood guard rate -1 is not an integer in 0..4294967295'),
    (['lookup', '--listener', L, '--src', '2001:db8:c::2:1000'],
     'different families'),
]

BAD_DOCUMENTS = [
    ({'listeners': [listener(VIP), listener(VIP)]}, 'listed twice'),
    ({'listeners': [dict(listener(VIP), colour='red')]}, "['colour']"),
    ({'listeners': [listener(VIP, members=['2001:db8:2:1::2'])],
      'tunnel_source': {'ipv4': '198.18.1.2'}}, 'IPv6 tunnel source'),
    ({'listeners': [listener(VIP, members=['198.19.1.2', '198.19.1.2'])]},
     'listed twice'),
]


def test_bad_input_is_refused_and_changes_nothing(dsr, tmp_path):
    # One topology for every case: each case must leave the state as is.
    dsr.apply(listener(VIP, members=dsr.member_addrs(4)))
    before = dsr.dsrctl_json('se1', 'show')
    for args, named in BAD_COMMANDS:
        proc = dsr.dsrctl('se1', *args, check=False)
        assert proc.returncode == 2, (args, proc.stdout + proc.stderr)
        assert named in proc.stderr, (args, proc.stderr)
        assert 'Traceback' not in proc.stderr, args
        assert dsr.dsrctl_json('se1', 'show') == before, args
    for document, named in BAD_DOCUMENTS:
        path = tmp_path / 'state.json'
        path.write_text(json.dumps(document))
        proc = dsr.dsrctl('se1', 'apply', str(path), check=False)
        assert proc.returncode == 2, (document, proc.stderr)
        assert named in proc.stderr, (document, proc.stderr)
        assert dsr.dsrctl_json('se1', 'show') == before, document


def test_unknown_network_namespace_is_refused_not_created(dsr):
    import subprocess
    import sys
    name = f'{dsr.topo.prefix}nosuch'
    proc = subprocess.run(
        [sys.executable, '-m', 'amphora_agent.cmd.dsrctl', '--netns', name,
         'show'], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and repr(name) in proc.stderr, proc.stderr
    assert name not in netns.list_namespaces(dsr.topo.prefix)


def test_commands_without_a_loaded_dataplane_say_so(dsr):
    proc = dsr.dsrctl('se1', '--pin-dir', '/sys/fs/bpf/nothing-here', 'show',
                      check=False)
    # The second --pin-dir wins (argparse), pointing at nothing.
    assert proc.returncode == 2 and 'no SE dataplane' in proc.stderr


def test_lookup_names_the_member_and_show_lists_members(dsr):
    dsr.apply(listener(VIP, members=dsr.member_addrs(4)))
    answer = dsr.dsrctl_json('se1', 'lookup', '--listener', L, '--src',
                             '203.0.113.2:40000')
    assert answer['member'] in dsr.member_addrs(4)
    assert answer['verdict'] in ('XDP_TX', 'XDP_REDIRECT')
    served = dsr.topo.http_get(VIP, source_port=40000)
    assert f"member={dsr.member_by_addr()[answer['member']]}" in served


def test_attach_sets_the_flood_guard_rate(dsr, tmp_path):
    se = dsr.topo.ses[0]
    # dsr.start attached without a rate: a new dataplane has none.
    assert dsr.dsrctl_json('se1', 'show')['flood_guard_rate'] == 0
    assert 'flood guard: off' in dsr.dsrctl('se1', 'show').stdout
    dsr.dsrctl('se1', 'attach', se.ifname, '--mode', 'generic',
               '--flood-guard-rate', '5000')
    assert dsr.dsrctl_json('se1', 'show')['flood_guard_rate'] == 5000
    assert 'flood guard: 5000 new flows/s per CPU' in \
        dsr.dsrctl('se1', 'show').stdout
    # From the agent's configuration file, as the agent would set it.
    conf = tmp_path / 'agent.conf'
    conf.write_text('[dataplane]\nflood_guard_rate = 777\nmax_listeners = 8\n')
    dsr.dsrctl('se1', '--config-file', str(conf), 'attach', se.ifname,
               '--mode', 'generic')
    assert dsr.dsrctl_json('se1', 'show')['flood_guard_rate'] == 777
    # Re-attached with neither: the live value stays.
    dsr.dsrctl('se1', 'attach', se.ifname, '--mode', 'generic')
    assert dsr.dsrctl_json('se1', 'show')['flood_guard_rate'] == 777
