"""`make demo DEMO=tier2` runs (tools/demo.py --scenario tier2) and what
it prints is the tier-2 packet path: the client's packets reach an L4 SE,
leave it IPIP-encapsulated to an L7 SE, the L7 SE talks to the server
from its own address (SNAT), the replies leave the L7 SE from the VIP to
the client, and none crosses an L4 SE."""

import collections
import os
import re
import signal
import subprocess
import sys

import pytest

from tools.lab import netns

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
CLIENT = '203.0.113.2'
PORT = 45000
# The product stack, two L7 agents (each loads Octavia's templater) and
# about fifteen `openstack ... --wait` calls: 7.5 minutes at load 17-34.
TIMEOUT = 1200
TEARDOWN = 180


def run_demo():
    """tools/demo.py --scenario tier2; (returncode, stdout, stderr).  On a
    timeout (or any interruption) the demo gets SIGTERM, which tears its
    lab down, before SIGKILL."""
    proc = subprocess.Popen([sys.executable, 'tools/demo.py', '--scenario',
                             'tier2'], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except BaseException:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=TEARDOWN)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise
    return proc.returncode, out, err


def sections(out):
    """{capture label: [tcpdump lines]} from the demo's capture dump."""
    found, label = collections.defaultdict(list), None
    for line in out.splitlines():
        m = re.match(r'^   -- (.+): \d+ packets$', line)
        if m:
            label = m.group(1)
        elif label and line.startswith('      '):
            found[label].append(line.strip())
        else:
            label = None
    return found


@pytest.mark.timeout(TIMEOUT + TEARDOWN + 60)
def test_tier2_demo_shows_the_packet_path():
    netns.sweep_stale()
    rc, out, err = run_demo()
    assert rc == 0, out[-4000:] + err[-4000:]
    assert 'openstack loadbalancer flavor create --name tier2' in out
    assert re.search(r'openstack loadbalancer create .*--flavor tier2', out)
    # Round robin over both plain servers; /api to the policy's pool.
    assert re.search(r'GET /: \d+ answered by m3', out), out
    assert re.search(r'GET /: \d+ answered by m4', out), out
    assert out.count('GET /api/items: 404 answered by api') == 2, out

    caps = sections(out)
    vip = re.escape(netns.VIP4)
    # At an L4 SE's link: the client's packets to the VIP, and the same
    # packets leaving it IPIP to an L7 SE; nothing from the VIP.
    l4 = {k: v for k, v in caps.items() if k.startswith('L4 SE')}
    assert l4, caps
    to_vip = rf'^IP {CLIENT}\.{PORT} > {vip}\.80:'
    tunnelled = [re.match(rf'^IP (198\.18\.\d+\.2) > (198\.19\.[12]\.2): '
                          rf'IP {CLIENT}\.{PORT} > {vip}\.80:', ln)
                 for lines in l4.values() for ln in lines]
    tunnelled = [m for m in tunnelled if m]
    assert tunnelled, l4
    assert any(re.match(to_vip, ln) for lines in l4.values()
               for ln in lines), l4
    assert not any(re.search(rf'IP {vip}\.80 >', ln)
                   for lines in l4.values() for ln in lines), l4
    l7_addr = tunnelled[0].group(2)
    l7_name = f'm{l7_addr.split(".")[2]}'
    # At that L7 SE: the tunnel in, SNAT to a server, VIP -> client out.
    l7 = caps[f'L7 SE {l7_name} eth0']
    assert any(re.match(rf'^IP {re.escape(l7_addr)}\.\d+ > '
                        r'198\.19\.[34]\.2\.8080:', ln) for ln in l7), l7
    assert any(re.match(rf'^IP {vip}\.80 > {CLIENT}\.{PORT}:', ln)
               for ln in l7), l7
    # The servers never see the client's address.
    servers = [ln for k, v in caps.items() if k.startswith('server')
               for ln in v]
    assert servers and not any(CLIENT in ln for ln in servers), servers
    # The summary the demo prints from the same captures.
    m = re.search(rf'L7 SE {l7_name}: (\d+) packets to the server from '
                  rf'{re.escape(l7_addr)} \(SNAT\), (\d+) replies '
                  r'VIP->client', out)
    assert m and int(m.group(1)) > 0 and int(m.group(2)) > 0, out
    assert 'replies through the L4 SEs: 0' in out
    assert 'Torn down' in out
