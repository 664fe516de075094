"""A member under a blackhole or prohibit route (the kernel answers its
route lookup with EINVAL or EACCES) gets no cached next hop -- the
program falls back to bpf_fib_lookup for it, as for a member without a
route -- and never stops an apply or a next-hop refresh for the others:
on the real program and maps, in the SE's own network namespace, with the
routing snapshot and with per-address lookups (a policy rule turns the
snapshot off).
"""

import dataclasses
import ipaddress
import logging
import subprocess

from pyroute2 import IPRoute
import pytest

from amphora_agent.dataplane import model
from amphora_agent.dataplane import nexthop
from amphora_agent.dataplane import structs
from tests.functional.amphora_agent.dataplane import test_packet_corpus as pc

KEY = f'{pc.VIP4}:80/tcp'
CUT = '198.19.9.2'          # under a blackhole / prohibit route
OK = '198.19.8.2'           # routed via the SE's gateway
# A gateway without a neighbour entry: the snapshot cannot resolve a
# member routed through it and asks the kernel about the address.
SILENT_GW = '198.18.1.1'


def ip(se, *args):
    subprocess.run(('ip', '-n', se.ns) + args, check=True,
                   capture_output=True, timeout=10)


def cut_off(se, kind, address):
    """Route address's /24 via SILENT_GW, and address itself to `kind`."""
    net = ipaddress.ip_network(f'{address}/24', strict=False)
    ip(se, 'route', 'add', str(net), 'via', SILENT_GW)
    ip(se, 'route', 'add', kind, f'{address}/32')


def nexthop_of(se, address):
    """(ifindex, destination MAC) of the member's cached next hop, or None
    (index 0: the FIB)."""
    _, real = se.real_of(KEY, address)
    if not real.nh:
        return None
    nh = structs.Nexthop.from_bytes(se.dp.maps['nexthops'].lookup(
        real.nh.to_bytes(4, 'little')))
    return nh.ifindex, ':'.join(f'{b:02x}' for b in nh.dmac)


@pytest.mark.parametrize('lookup', ['snapshot', 'per-address'])
@pytest.mark.parametrize('kind', ['blackhole', 'prohibit'])
def test_a_member_the_kernel_refuses_a_route_to_stops_nobody(
        se, kind, lookup, caplog):
    ip(se, 'addr', 'add', '198.18.1.2/24', 'dev', 'se0')
    if lookup == 'per-address':
        ip(se, 'rule', 'add', 'pref', '1000', 'to', '203.0.113.0/24',
           'lookup', '100')
    with se.inside():
        resolver = se.dp._resolver_get()
        resolver.snapshot()
        assert (resolver._snapshot is None) == (lookup == 'per-address')
        resolver.forget()
    cut_off(se, kind, CUT)
    key = model.ListenerKey.parse(KEY)
    spec = se.state.listeners[key]
    members = dict(spec.members)
    for address in map(ipaddress.ip_address, (CUT, OK)):
        members[address] = model.Member(address)
    state = dataclasses.replace(se.state, listeners={
        **se.state.listeners,
        key: dataclasses.replace(spec, members=members)})
    gateway = (se.ifindex, pc.GW_MAC)

    with caplog.at_level(logging.WARNING):
        changes = se.apply(state)
    assert changes['members_added'] == 2
    assert nexthop_of(se, CUT) is None
    assert nexthop_of(se, OK) == gateway
    assert all(nexthop_of(se, m) == gateway for m in pc.M4)

    # A member already running is cut off: the refresh clears its next
    # hop and goes on with the others.
    cut_off(se, kind, pc.M4[1])
    with caplog.at_level(logging.WARNING), se.inside():
        se.dp.refresh_nexthops()
        se.dp.refresh_nexthops()
    assert nexthop_of(se, pc.M4[1]) is None
    assert nexthop_of(se, CUT) is None
    assert all(nexthop_of(se, m) == gateway
               for m in (OK, pc.M4[0], pc.M4[2]))
    # Logged once per address, not at every apply or refresh.
    for address in (CUT, pc.M4[1]):
        assert caplog.text.count(f'member {address} has no next hop') == 1
    # Applies go on: a change to the listener applies.
    state.listeners[key] = dataclasses.replace(state.listeners[key],
                                               conn_limit=100)
    assert se.apply(state)['listeners_updated'] == 1

    # The route is back: the member gets its next hop again.
    ip(se, 'route', 'del', kind, f'{pc.M4[1]}/32')
    ip(se, 'route', 'del', '198.19.2.0/24')
    with se.inside():
        se.dp.refresh_nexthops()
    assert nexthop_of(se, pc.M4[1]) == gateway


@pytest.mark.parametrize('kind', ['blackhole', 'prohibit', 'unreachable'])
def test_the_routing_snapshot_knows_reject_routes(se, kind):
    """The snapshot does not route a member under a reject route by the
    prefix that holds it."""
    ip(se, 'addr', 'add', '198.18.1.2/24', 'dev', 'se0')
    cut_off(se, kind, CUT)
    with se.inside(), IPRoute() as ipr:
        snapshot = nexthop._RoutingSnapshot(ipr)
    hit = snapshot.route(ipaddress.ip_address(CUT))
    assert hit[4] == kind and hit[:2] == (None, None)
    # Its neighbours are still routed by the /24.
    assert snapshot.route(ipaddress.ip_address('198.19.9.3'))[:2] == (
        SILENT_GW, se.ifindex)


def test_a_next_hop_that_never_answers_is_waited_for_once(
        se, monkeypatch, caplog):
    """A member behind a gateway nobody answers ARP for: the first apply
    waits resolve_timeout for it, later refreshes and applies only probe
    it (no wait; the worker serves every tenant), and it keeps the FIB
    fallback; the others keep their cached next hops."""
    ip(se, 'addr', 'add', '198.18.1.2/24', 'dev', 'se0')
    ip(se, 'route', 'add', '198.19.9.0/24', 'via', SILENT_GW)
    with se.inside():
        resolver = se.dp._resolver_get()
    polls = []
    real_poll = resolver._neighbour_mac

    def counted(gateway, ifindex):
        polls.append(gateway)
        return real_poll(gateway, ifindex)
    monkeypatch.setattr(resolver, '_neighbour_mac', counted)
    key = model.ListenerKey.parse(KEY)
    spec = se.state.listeners[key]
    members = {**spec.members,
               ipaddress.ip_address(CUT): model.Member(
                   ipaddress.ip_address(CUT))}
    state = dataclasses.replace(se.state, listeners={
        **se.state.listeners,
        key: dataclasses.replace(spec, members=members)})
    with caplog.at_level(logging.WARNING):
        assert se.apply(state)['members_added'] == 1
    waited = polls.count(SILENT_GW)
    assert waited > 10, polls      # polled for resolve_timeout
    assert nexthop_of(se, CUT) is None
    gateway = (se.ifindex, pc.GW_MAC)
    assert all(nexthop_of(se, m) == gateway for m in pc.M4)

    polls.clear()
    with caplog.at_level(logging.WARNING), se.inside():
        se.dp.refresh_nexthops()
        se.dp.refresh_nexthops()
    assert polls.count(SILENT_GW) == 2, polls   # one look each, no wait
    assert nexthop_of(se, CUT) is None
    assert all(nexthop_of(se, m) == gateway for m in pc.M4)
    assert caplog.text.count(f'member {CUT} has no next hop') == 1
    assert f'next hop {SILENT_GW} did not answer' in caplog.text

    # Removed: the next refresh forgets what it noted of the member.
    assert ipaddress.ip_address(CUT) in resolver._unanswered
    se.apply(dataclasses.replace(se.state, listeners={
        **se.state.listeners, key: spec}))
    with se.inside():
        se.dp.refresh_nexthops()
    assert ipaddress.ip_address(CUT) not in resolver._unanswered
    assert ipaddress.ip_address(CUT) not in resolver._unresolvable
