"""connection_limit and allowed_cidrs with real TCP: client -> router ->
SE (XDP, generic mode) -> members, programmed through dsrctl.

* connection_limit 3: three connections are established and keep working,
  a fourth gets no answer (its SYNs are dropped and counted as
  drop_conn_limit); closing one (client FIN) admits a new one at once.
* allowed_cidrs, both families: a source in the list is served, one outside
  is not (drop_not_allowed); `dsrctl listener set --allowed-cidr` changes
  the list, `--any-source` removes it.
"""

import contextlib
import os
import socket

from pyroute2 import netns as pr_netns
import pytest

from tests.functional.amphora_agent.dataplane.conftest import listener
from tools.lab import netns

pytestmark = pytest.mark.root

LIMIT = 3


@contextlib.contextmanager
def inside(ns):
    """This thread in namespace ns (sockets opened here stay in it)."""
    saved = os.open('/proc/self/ns/net', os.O_RDONLY)
    try:
        pr_netns.setns(ns, flags=0)
        try:
            yield
        finally:
            pr_netns.setns(saved)
    finally:
        os.close(saved)


def connect(ns, vip, port=80, timeout=1.5):
    """A TCP connection from the client, or None when it gets no answer."""
    family = socket.AF_INET6 if ':' in vip else socket.AF_INET
    with inside(ns):
        sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((vip, port))
    except (socket.timeout, OSError):
        sock.close()
        return None
    return sock


def get(sock):
    """GET / on an established connection; the body names the member."""
    sock.sendall(b'GET / HTTP/1.0\r\nHost: vip\r\n\r\n')
    data = b''
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data.decode()
        data += chunk


def listener_stats(dsr, key):
    (lst,) = [s for s in dsr.stats()['listeners'] if s['listener'] == key]
    return lst


def test_connection_limit_with_real_tcp(dsr):
    topo = dsr.topo
    client = topo.ns('client')
    dsr.apply(listener(netns.VIP4, members=dsr.member_addrs(4),
                       connection_limit=LIMIT))
    key = f'{netns.VIP4}:80/tcp'
    socks = []
    try:
        for _ in range(LIMIT):
            sock = connect(client, netns.VIP4)
            assert sock is not None, 'a connection under the limit failed'
            socks.append(sock)
        assert connect(client, netns.VIP4) is None, 'over the limit'
        stats = listener_stats(dsr, key)
        assert stats['drop_conn_limit'] >= 1
        assert stats['counted_flows'] == LIMIT
        assert dsr.stats()['se']['drop_conn_limit'] >= 1
        # The established ones keep working (the server answers and
        # closes; the client has not closed yet, so they still count).
        for sock in socks:
            assert 'member=' in get(sock)
        assert connect(client, netns.VIP4) is None, 'still at the limit'
        # Closing one (client FIN) frees its place at once.
        socks.pop().close()
        netns.wait_for(
            lambda: listener_stats(dsr, key)['counted_flows'] == LIMIT - 1,
            5, 'the closed connection to stop counting')
        sock = connect(client, netns.VIP4)
        assert sock is not None, 'not admitted after a close'
        socks.append(sock)
        assert 'member=' in get(sock)
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize('family', [4, 6])
def test_allowed_cidrs_with_real_tcp(dsr, family):
    topo = dsr.topo
    v4, v6 = topo.add_client_sources(2)
    inside_src, outside_src = (v4 if family == 4 else v6)
    vip = netns.VIP4 if family == 4 else netns.VIP6
    key = f'{vip}:80/tcp' if family == 4 else f'[{vip}]:80/tcp'
    bits = 32 if family == 4 else 128
    dsr.apply(listener(vip, members=dsr.member_addrs(family),
                       allowed_cidrs=[f'{inside_src}/{bits}']))
    assert 'member=' in topo.http_get(vip, source=inside_src, timeout=3)
    with pytest.raises(netns.CommandError):
        topo.http_get(vip, source=outside_src, timeout=1.5)
    assert listener_stats(dsr, key)['drop_not_allowed'] >= 1
    shown = dsr.dsrctl_json('se1', 'show')['listeners'][0]
    assert shown['allowed_cidrs'] == [f'{inside_src}/{bits}']
    # Change the list through dsrctl: now the other source only.
    dsr.dsrctl('se1', 'listener', 'set', key, '--allowed-cidr',
               f'{outside_src}/{bits}')
    assert 'member=' in topo.http_get(vip, source=outside_src, timeout=3)
    with pytest.raises(netns.CommandError):
        topo.http_get(vip, source=inside_src, timeout=1.5,
                      source_port=45000)
    dsr.dsrctl('se1', 'listener', 'set', key, '--any-source')
    assert 'member=' in topo.http_get(vip, source=inside_src, timeout=3,
                                      source_port=45001)
