"""kill -9 of the process that loaded the program, then a restart that
reloads the program and reconfigures: no probe is lost."""

import json
import os
import signal
import sys

from tests.functional.amphora_agent.dataplane.conftest import listener
from tools.lab import netns

HERE = os.path.dirname(os.path.abspath(__file__))


def _prog_id(topo, se):
    """Id of the XDP program on the SE's interface (queried in its netns)."""
    out = topo.run(se.name, ['ip', '-j', 'link', 'show', se.ifname]).stdout
    return json.loads(out)[0].get('xdp', {}).get('prog', {}).get('id')


def test_kill9_and_reload_lose_no_probe(dsr, tmp_path):
    topo = dsr.topo
    se = topo.ses[0]
    members = dsr.member_addrs(4)
    for m in topo.members:
        topo.start_udp_echo(m.name)

    def state(weights):
        path = tmp_path / f'state-{len(list(tmp_path.iterdir()))}.json'
        path.write_text(json.dumps({
            'tunnel_source': {'ipv4': se.ipv4, 'ipv6': se.ipv6},
            'listeners': [listener(netns.VIP4, port=5353, protocol='udp',
                                   members=members, weights=weights)]}))
        return str(path)

    def start_loader(state_file):
        return topo.spawn(se.name, [
            sys.executable, os.path.join(HERE, 'loader_process.py'),
            '--netns', se.ns, '--pin-dir', dsr.pin_dir(se.name),
            '--interface', se.ifname, '--state', state_file],
            ready=r'^READY')

    first = start_loader(state({}))
    prog_before = _prog_id(topo, se)
    prober = topo.start_udp_probe(netns.VIP4, 5353, duration=3.0)

    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    # Traffic keeps flowing with nobody holding the program or the maps.
    assert _prog_id(topo, se) == prog_before

    start_loader(state({members[0]: 3}))  # tracked by the topology
    prog_after = _prog_id(topo, se)
    assert prog_after and prog_after != prog_before, 'program not replaced'
    assert prober.poll() is None, 'the probe ended before the restart'

    summary = netns.probe_result(prober)
    assert summary['sent'] > 200
    assert summary['lost'] == 0, summary
    assert summary['switches'] == 0, summary
    # The restarted process changed the live configuration.
    shown = dsr.dsrctl_json('se1', 'show')
    weights = {m['address']: m['weight']
               for m in shown['listeners'][0]['members']}
    assert weights[members[0]] == 3
